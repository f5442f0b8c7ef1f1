// deploy/prometheus passes Prometheus's own checks: the config and rule
// files load (promtool check config / check rules), and the alert rules
// fire on synthetic series exactly when they should (promtool test rules,
// deploy/prometheus/rules/alerts_test.yml).
#include <string>

#include "gtest/gtest.h"
#include "tests/metrics/promtool_util.h"

namespace ferry::metrics_test {
namespace {

class PromtoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    promtool_ = FindBinary("promtool");
    if (promtool_.empty()) {
      GTEST_SKIP() << "promtool not installed (Debian package prometheus; "
                      "scripts/install-deps installs it)";
    }
  }
  std::string promtool_;
};

TEST_F(PromtoolTest, CheckConfig) {
  std::string out;
  const int rc = RunCommand(
      promtool_ + " check config " + Runfile("deploy/prometheus/prometheus.yml"), &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("2 rule files found"), std::string::npos) << out;
}

TEST_F(PromtoolTest, CheckRules) {
  std::string out;
  const int rc = RunCommand(
      promtool_ + " check rules " + Runfile("deploy/prometheus/rules/recording.yml") +
          " " + Runfile("deploy/prometheus/rules/alerts.yml"),
      &out);
  EXPECT_EQ(rc, 0) << out;
}

TEST_F(PromtoolTest, AlertRulesFireOnSyntheticSeries) {
  std::string out;
  const int rc = RunCommand(
      promtool_ + " test rules " + Runfile("deploy/prometheus/rules/alerts_test.yml"),
      &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("SUCCESS"), std::string::npos) << out;
}

}  // namespace
}  // namespace ferry::metrics_test
