#include "cli/flags.h"

#include "gtest/gtest.h"

namespace ferry::cli {
namespace {

absl::StatusOr<ParsedArgs> Parse(std::vector<std::string> args) {
  return ParseArgs(args, AllFlags());
}

TEST(ParseArgs, FlagFormsAnywhere) {
  auto a = Parse({"-ojson", "get", "--server=h:1", "vms", "-l", "a=b",
                  "--watch", "name", "--host", "n1"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->words, (std::vector<std::string>{"get", "vms", "name"}));
  EXPECT_EQ(a->Get("output"), "json");
  EXPECT_EQ(a->Get("server"), "h:1");
  EXPECT_EQ(a->Get("selector"), "a=b");
  EXPECT_EQ(a->Get("watch"), "true");
  EXPECT_EQ(a->Get("host"), "n1");
  EXPECT_EQ(Parse({"-o=yaml"})->Get("output"), "yaml");
  EXPECT_EQ(Parse({"-o", "wide"})->Get("output"), "wide");
}

TEST(ParseArgs, BooleansAndNegation) {
  EXPECT_EQ(Parse({"--no-wait"})->Get("wait"), "false");
  EXPECT_EQ(Parse({"--wait"})->Get("wait"), "true");
  EXPECT_EQ(Parse({"--auto-converge=false"})->Get("auto-converge"), "false");
  EXPECT_EQ(Parse({"--auto-converge=true"})->Get("auto-converge"), "true");
  // A bool does not eat the next word.
  auto a = Parse({"--watch", "vms"});
  EXPECT_EQ(a->words, std::vector<std::string>{"vms"});
  EXPECT_FALSE(Parse({"--auto-converge=maybe"}).ok());
  EXPECT_FALSE(Parse({"--no-wait=true"}).ok());
  EXPECT_FALSE(Parse({"--no-server"}).ok());  // Not a bool.
}

TEST(ParseArgs, RepeatedValuesAndDoubleDash) {
  auto a = Parse({"-l", "a=1", "-l", "b=2", "--", "--not-a-flag"});
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->GetAll("selector"), (std::vector<std::string>{"a=1", "b=2"}));
  EXPECT_EQ(a->words, std::vector<std::string>{"--not-a-flag"});
}

TEST(ParseArgs, Errors) {
  auto unknown = Parse({"get", "--frobnicate"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().message(), "unknown flag --frobnicate");
  auto missing = Parse({"get", "-o"});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(), "-o needs a value (FORMAT)");
  EXPECT_FALSE(Parse({"-x"}).ok());
}

TEST(CheckFlagsFor, RejectsFlagsOfOtherCommands) {
  auto a = Parse({"get", "vms", "--to", "n2"});
  ASSERT_TRUE(a.ok());
  absl::Status s = CheckFlagsFor(*a, "get", AllFlags());
  EXPECT_EQ(s.message(), "unknown flag --to for \"get\"");
  EXPECT_TRUE(CheckFlagsFor(*a, "migrate", AllFlags()).ok());
  auto g = Parse({"--server", "x", "--help"});
  EXPECT_TRUE(CheckFlagsFor(*g, "cordon", AllFlags()).ok());
}

}  // namespace
}  // namespace ferry::cli
