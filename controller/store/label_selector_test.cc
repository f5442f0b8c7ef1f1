#include "controller/store/label_selector.h"

#include "gtest/gtest.h"

namespace ferry::controller {
namespace {

LabelSelector::Labels L(std::initializer_list<std::pair<std::string, std::string>> kv) {
  LabelSelector::Labels labels;
  for (const auto& [k, v] : kv) labels[k] = v;
  return labels;
}

TEST(LabelSelectorTest, Table) {
  const auto labels = L({{"zone", "a"}, {"tier", "web"}, {"gpu", ""}});
  struct Case {
    const char* selector;
    bool want;
  } cases[] = {
      {"", true},
      {"zone=a", true},
      {"zone==a", true},
      {"zone=b", false},
      {"zone!=b", true},
      {"rack!=r1", true},  // absent key satisfies !=
      {"zone in (a,b)", true},
      {"zone in (b, c)", false},
      {"zone notin (b,c)", true},
      {"zone notin (a)", false},
      {"gpu", true},
      {"!gpu", false},
      {"!rack", true},
      {"zone=a,tier=web", true},
      {"zone=a, tier=db", false},
      {"zone in (a,b),tier notin (db),!rack", true},
  };
  for (const Case& c : cases) {
    auto sel = LabelSelector::Parse(c.selector);
    ASSERT_TRUE(sel.ok()) << c.selector << ": " << sel.status();
    EXPECT_EQ(sel->Matches(labels), c.want) << c.selector;
  }
}

TEST(LabelSelectorTest, BadSyntaxNamesTheTerm) {
  for (const char* bad : {"zone in (a", "zone within (a)", "=a", "zone=a,,x",
                          "zo ne=a", "k in (a,)"}) {
    auto sel = LabelSelector::Parse(bad);
    EXPECT_EQ(sel.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace ferry::controller
