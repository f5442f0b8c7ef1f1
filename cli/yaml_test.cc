#include "cli/yaml.h"

#include "gtest/gtest.h"

namespace ferry::cli {
namespace {

TEST(YamlScalar, PlainWhenSafe) {
  EXPECT_EQ(YamlScalar("hello"), "hello");
  EXPECT_EQ(YamlScalar("node-a"), "node-a");
  EXPECT_EQ(YamlScalar("a:b"), "a:b");
  EXPECT_EQ(YamlScalar("v0.3.0"), "v0.3.0");
  EXPECT_EQ(YamlScalar("MIGRATION_PHASE_SUCCEEDED"), "MIGRATION_PHASE_SUCCEEDED");
}

TEST(YamlScalar, QuotesWhatWouldReadBackDifferently) {
  EXPECT_EQ(YamlScalar(""), "\"\"");
  EXPECT_EQ(YamlScalar("true"), "\"true\"");
  EXPECT_EQ(YamlScalar("No"), "\"No\"");
  EXPECT_EQ(YamlScalar("null"), "\"null\"");
  EXPECT_EQ(YamlScalar("~"), "\"~\"");
  EXPECT_EQ(YamlScalar("1073741824"), "\"1073741824\"");  // uint64 in JSON.
  EXPECT_EQ(YamlScalar("1.5"), "\"1.5\"");
  EXPECT_EQ(YamlScalar("2026-12-04T10:00:00Z"), "\"2026-12-04T10:00:00Z\"");
  EXPECT_EQ(YamlScalar("0.300s"), "\"0.300s\"");
  EXPECT_EQ(YamlScalar("10.0.0.1:7401"), "\"10.0.0.1:7401\"");
  EXPECT_EQ(YamlScalar("0x1F"), "\"0x1F\"");
  EXPECT_EQ(YamlScalar("12:30"), "\"12:30\"");
  EXPECT_EQ(YamlScalar("a: b"), "\"a: b\"");
  EXPECT_EQ(YamlScalar("x #comment"), "\"x #comment\"");
  EXPECT_EQ(YamlScalar("- item"), "\"- item\"");
  EXPECT_EQ(YamlScalar("*alias"), "\"*alias\"");
  EXPECT_EQ(YamlScalar(" lead"), "\" lead\"");
  EXPECT_EQ(YamlScalar("trail:"), "\"trail:\"");
  EXPECT_EQ(YamlScalar("say \"hi\"\n\tback\\slash"),
            "\"say \\\"hi\\\"\\n\\tback\\\\slash\"");
  EXPECT_EQ(YamlScalar(std::string("bell\x07", 5)), "\"bell\\x07\"");
}

TEST(FormatNumber, ShortestRoundTrip) {
  EXPECT_EQ(FormatNumber(3), "3");
  EXPECT_EQ(FormatNumber(-42), "-42");
  EXPECT_EQ(FormatNumber(0.5), "0.5");
  EXPECT_EQ(FormatNumber(0.1), "0.1");
  EXPECT_EQ(FormatNumber(1.0 / 3), "0.3333333333333333");
  EXPECT_EQ(FormatNumber(1e300), "1e+300");
}

TEST(JsonToYaml, NestedMapsListsAndEmpties) {
  auto y = JsonToYaml(R"({
    "name": "web-1",
    "labels": {"tier": "web", "on": "yes"},
    "count": 2,
    "ratio": 0.25,
    "ok": true,
    "nothing": null,
    "empty": {},
    "none": [],
    "items": [{"a": "1", "b": {"c": [1, 2]}}, "plain", [3, 4]]
  })");
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(*y,
            "count: 2\n"
            "empty: {}\n"
            "items:\n"
            "- a: \"1\"\n"
            "  b:\n"
            "    c:\n"
            "    - 1\n"
            "    - 2\n"
            "- plain\n"
            "- - 3\n"
            "  - 4\n"
            "labels:\n"
            "  \"on\": \"yes\"\n"
            "  tier: web\n"
            "name: web-1\n"
            "none: []\n"
            "nothing: null\n"
            "ok: true\n"
            "ratio: 0.25\n");
}

TEST(JsonToYaml, TopLevelScalarAndBadJson) {
  EXPECT_EQ(*JsonToYaml("\"true\""), "\"true\"\n");
  EXPECT_FALSE(JsonToYaml("{not json").ok());
}

}  // namespace
}  // namespace ferry::cli
