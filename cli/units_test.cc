#include "cli/units.h"

#include "gtest/gtest.h"

namespace ferry::cli {
namespace {

TEST(ParseBytes, AcceptsIecSiAndBareNumbers) {
  EXPECT_EQ(*ParseBytes("4096"), 4096u);
  EXPECT_EQ(*ParseBytes("1GiB"), 1ull << 30);
  EXPECT_EQ(*ParseBytes("1Gi"), 1ull << 30);
  EXPECT_EQ(*ParseBytes("512MiB"), 512ull << 20);
  EXPECT_EQ(*ParseBytes("1.5KiB"), 1536u);
  EXPECT_EQ(*ParseBytes("2GB"), 2000000000u);
  EXPECT_EQ(*ParseBytes("100M"), 100000000u);
  EXPECT_EQ(*ParseBytes("3kB"), 3000u);
  EXPECT_EQ(*ParseBytes(" 7B "), 7u);
  EXPECT_EQ(*ParseBytes("0"), 0u);
}

TEST(ParseBytes, RejectsGarbageWithAClearMessage) {
  for (const char* bad : {"", "GiB", "-1GiB", "1 GiB x", "1XB", "1gib",
                          "1.2.3", "abc", "1e3", "99999999999TiB"}) {
    auto r = ParseBytes(bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("size"), std::string::npos) << bad;
  }
  auto bits = ParseBytes("100Mb");
  ASSERT_FALSE(bits.ok());
  EXPECT_NE(bits.status().message().find("bits"), std::string::npos);
  EXPECT_NE(bits.status().message().find("100MB"), std::string::npos);
  auto unit = ParseBytes("1XB");
  EXPECT_NE(unit.status().message().find("unknown unit \"XB\""),
            std::string::npos);
}

TEST(ParseRate, TakesSlashSOrNothing) {
  EXPECT_EQ(*ParseRate("100MB/s"), 100000000u);
  EXPECT_EQ(*ParseRate("1GiB/s"), 1ull << 30);
  EXPECT_EQ(*ParseRate("1GiB"), 1ull << 30);
  EXPECT_EQ(*ParseRate("0"), 0u);
  EXPECT_FALSE(ParseRate("/s").ok());
  EXPECT_FALSE(ParseRate("fast").ok());
  EXPECT_FALSE(ParseRate("100Mb/s").ok());
  EXPECT_FALSE(ParseRate("1GiB/h").ok());
}

TEST(ParseDurationArg, NeedsUnitAndNonNegative) {
  EXPECT_EQ(*ParseDurationArg("50ms"), absl::Milliseconds(50));
  EXPECT_EQ(*ParseDurationArg("1m30s"), absl::Seconds(90));
  EXPECT_EQ(*ParseDurationArg("0"), absl::ZeroDuration());
  EXPECT_FALSE(ParseDurationArg("50").ok());
  EXPECT_FALSE(ParseDurationArg("-5s").ok());
  EXPECT_FALSE(ParseDurationArg("inf").ok());
  EXPECT_FALSE(ParseDurationArg("soon").ok());
  EXPECT_NE(ParseDurationArg("50").status().message().find("missing unit"),
            std::string::npos);
}

TEST(ParseBoolArg, Values) {
  EXPECT_TRUE(*ParseBoolArg("true"));
  EXPECT_TRUE(*ParseBoolArg("YES"));
  EXPECT_FALSE(*ParseBoolArg("false"));
  EXPECT_FALSE(*ParseBoolArg("0"));
  EXPECT_FALSE(ParseBoolArg("maybe").ok());
}

TEST(FormatBytes, HumanisedIec) {
  EXPECT_EQ(FormatBytes(0), "0B");
  EXPECT_EQ(FormatBytes(1023), "1023B");
  EXPECT_EQ(FormatBytes(1024), "1KiB");
  EXPECT_EQ(FormatBytes(1536), "1.5KiB");
  EXPECT_EQ(FormatBytes(512ull << 20), "512MiB");
  EXPECT_EQ(FormatBytes(1ull << 30), "1GiB");
  EXPECT_EQ(FormatBytes((1ull << 30) * 3 / 2), "1.5GiB");
  EXPECT_EQ(FormatBytes(1048575), "1MiB");  // Not "1024KiB".
  EXPECT_EQ(FormatBytes(12345678), "12MiB");
  EXPECT_EQ(FormatRate(100ull << 20), "100MiB/s");
}

TEST(FormatAge, KubectlStyle) {
  EXPECT_EQ(FormatAge(absl::Seconds(0)), "0s");
  EXPECT_EQ(FormatAge(absl::Seconds(45)), "45s");
  EXPECT_EQ(FormatAge(absl::Seconds(119)), "119s");
  EXPECT_EQ(FormatAge(absl::Seconds(5 * 60 + 3)), "5m3s");
  EXPECT_EQ(FormatAge(absl::Minutes(5)), "5m");
  EXPECT_EQ(FormatAge(absl::Minutes(42) + absl::Seconds(7)), "42m");
  EXPECT_EQ(FormatAge(absl::Hours(3) + absl::Minutes(4)), "3h4m");
  EXPECT_EQ(FormatAge(absl::Hours(20)), "20h");
  EXPECT_EQ(FormatAge(absl::Hours(48)), "2d");
  EXPECT_EQ(FormatAge(absl::Hours(24 * 3 + 5)), "3d5h");
  EXPECT_EQ(FormatAge(absl::Hours(24 * 100)), "100d");
  EXPECT_EQ(FormatAge(absl::Hours(24 * (365 * 3 + 20))), "3y20d");
  EXPECT_EQ(FormatAge(absl::Hours(24 * 365 * 9)), "9y");
  EXPECT_EQ(FormatAge(-absl::Milliseconds(500)), "0s");  // Clock skew.
  EXPECT_EQ(FormatAge(-absl::Seconds(5)), "<invalid>");
}

TEST(FormatSpan, ShortForms) {
  EXPECT_EQ(FormatSpan(absl::ZeroDuration()), "0s");
  EXPECT_EQ(FormatSpan(absl::Microseconds(250)), "250us");
  EXPECT_EQ(FormatSpan(absl::Milliseconds(35)), "35ms");
  EXPECT_EQ(FormatSpan(absl::Milliseconds(1250)), "1.25s");
  EXPECT_EQ(FormatSpan(absl::Seconds(12)), "12s");
  EXPECT_EQ(FormatSpan(absl::Seconds(125)), "2m5s");
  EXPECT_EQ(FormatSpan(absl::Minutes(3)), "3m");
  EXPECT_EQ(FormatSpan(absl::Minutes(61)), "1h1m");
}

TEST(FormatEta, WholeSecondsRoundedUp) {
  EXPECT_EQ(FormatEta(absl::ZeroDuration()), "0s");
  EXPECT_EQ(FormatEta(absl::Milliseconds(277)), "1s");
  EXPECT_EQ(FormatEta(absl::Seconds(12)), "12s");
  EXPECT_EQ(FormatEta(absl::Seconds(125)), "2m5s");
  EXPECT_EQ(FormatEta(absl::Minutes(63)), "1h3m");
}

}  // namespace
}  // namespace ferry::cli
