#include "cli/config.h"

#include <cstdlib>
#include <fstream>
#include <map>

#include "gtest/gtest.h"

namespace ferry::cli {
namespace {

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    dir_ = std::string(tmp ? tmp : "/tmp") + "/cfg_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::system(("rm -rf '" + dir_ + "'").c_str());
    env_["HOME"] = dir_;
  }
  GetEnvFn Env() {
    return [this](const std::string& k) -> std::optional<std::string> {
      auto it = env_.find(k);
      if (it == env_.end()) return std::nullopt;
      return it->second;
    };
  }
  void Write(const std::string& path, const std::string& text) {
    std::system(("mkdir -p \"$(dirname '" + path + "')\"").c_str());
    std::ofstream(path) << text;
  }
  std::string dir_;
  std::map<std::string, std::string> env_;
};

TEST(ParseConfig, RoundTrip) {
  auto c = ParseConfig(
      "# comment\ncurrent-context = prod\n\n[context prod]\nserver = a:1  # x\n"
      "[context lab]\nserver=b:2\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->current_context, "prod");
  EXPECT_EQ(c->contexts.at("prod"), "a:1");
  EXPECT_EQ(c->contexts.at("lab"), "b:2");
  auto again = ParseConfig(SerializeConfig(*c));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->contexts, c->contexts);
  EXPECT_EQ(again->current_context, "prod");
}

TEST(ParseConfig, ErrorsNameTheLine) {
  auto bad = ParseConfig("current-context = x\n[context a]\nport = 3\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("line 3"), std::string::npos);
  EXPECT_FALSE(ParseConfig("[ctx a]\n").ok());
  EXPECT_FALSE(ParseConfig("just words\n").ok());
  EXPECT_FALSE(ParseConfig("server = x\n").ok());  // Outside a context.
}

TEST_F(ConfigTest, PathFromEnv) {
  EXPECT_EQ(ConfigPath(Env()), dir_ + "/.config/ferry/config");
  env_["FERRYCONFIG"] = "/elsewhere/cfg";
  EXPECT_EQ(ConfigPath(Env()), "/elsewhere/cfg");
}

TEST_F(ConfigTest, ResolutionOrder) {
  // Nothing anywhere: the default.
  auto r = ResolveServer("", "", Env());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->address, "127.0.0.1:7400");
  EXPECT_EQ(r->source, "the default");

  // A config with a current context beats the default.
  std::string path = dir_ + "/.config/ferry/config";
  Write(path, "current-context = prod\n[context prod]\nserver = p:1\n"
              "[context lab]\nserver = l:2\n");
  r = ResolveServer("", "", Env());
  EXPECT_EQ(r->address, "p:1");
  EXPECT_EQ(r->source, "context \"prod\" in " + path);

  // $FERRY_SERVER beats the config.
  env_["FERRY_SERVER"] = "e:3";
  r = ResolveServer("", "", Env());
  EXPECT_EQ(r->address, "e:3");
  EXPECT_EQ(r->source, "$FERRY_SERVER");

  // An explicit --context beats $FERRY_SERVER.
  r = ResolveServer("", "lab", Env());
  EXPECT_EQ(r->address, "l:2");

  // --server beats everything.
  r = ResolveServer("f:4", "lab", Env());
  EXPECT_EQ(r->address, "f:4");
  EXPECT_EQ(r->source, "--server");

  // An unknown context is an error, not a silent fallback.
  auto missing = ResolveServer("", "nope", Env());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ConfigTest, SaveCreatesDirectoriesAndLoadsBack) {
  std::string path = dir_ + "/a/b/config";
  ClientConfig c;
  c.current_context = "x";
  c.contexts["x"] = "h:9";
  ASSERT_TRUE(SaveConfig(path, c).ok());
  auto back = LoadConfig(path);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->contexts.at("x"), "h:9");
  // A missing file is an empty config.
  auto none = LoadConfig(dir_ + "/missing");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->contexts.empty());
}

TEST_F(ConfigTest, BrokenConfigIsAnError) {
  env_["FERRYCONFIG"] = dir_ + "/bad";
  Write(dir_ + "/bad", "garbage\n");
  auto r = ResolveServer("", "", Env());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(dir_ + "/bad"), std::string::npos);
}

}  // namespace
}  // namespace ferry::cli
