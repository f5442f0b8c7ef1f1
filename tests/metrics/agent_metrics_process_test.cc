// ferry-agent's --metrics_listen, as a process: the stdout contract (the
// first line unchanged, the metrics URL second), /metrics served and
// parseable, bad flags and a busy port refused with the right exit status.
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/metrics/http_get.h"
#include "common/metrics/metrics_server.h"
#include "common/metrics/text_format.h"
#include "gtest/gtest.h"
#include "tests/agent_process_util.h"

namespace ferry::metrics_test {
namespace {

using agent_test::Agent;
using agent_test::AgentConfig;
using agent_test::Ctx;
using agent_test::TmpDir;

AgentConfig Config(const std::string& name, const std::string& metrics_listen) {
  AgentConfig c;
  c.name = name;
  c.data_dir = absl::StrCat(TmpDir(), "/data-", name);
  c.extra = {"--backend=soft", absl::StrCat("--metrics_listen=", metrics_listen)};
  return c;
}

// The second stdout line, once printed (it follows the first at once).
std::string SecondLine(Agent& agent) {
  for (int i = 0; i < 100; ++i) {
    std::vector<std::string> lines =
        absl::StrSplit(agent.Stdout(), '\n', absl::SkipEmpty());
    if (lines.size() >= 2) return lines[1];
    absl::SleepFor(absl::Milliseconds(50));
  }
  return "";
}

TEST(AgentMetricsProcessTest, ServesMetricsOnTheSecondStdoutLine) {
  Agent agent(Config("am-ok", "127.0.0.1:0"));
  ASSERT_TRUE(agent.WaitReady().ok()) << agent.Log();
  const std::string second = SecondLine(agent);
  EXPECT_TRUE(absl::StartsWith(agent.Stdout(),
                               absl::StrCat("ferry-agent listening on ", agent.address(), "\n")))
      << agent.Stdout();
  const std::string prefix = "ferry-agent metrics on http://";
  ASSERT_TRUE(absl::StartsWith(second, prefix)) << agent.Stdout();
  ASSERT_TRUE(absl::EndsWith(second, "/metrics")) << second;
  const std::string address =
      second.substr(prefix.size(), second.size() - prefix.size() - 8);

  v1::AgentCreateVmRequest create;
  create.mutable_spec()->set_name("web-1");
  create.mutable_spec()->set_memory_bytes(64 << 20);
  create.mutable_spec()->set_vcpu_count(1);
  create.mutable_spec()->mutable_workload()->set_kind(v1::WORKLOAD_KIND_IDLE);
  v1::Vm vm;
  ASSERT_TRUE(agent.stub().CreateVm(Ctx().get(), create, &vm).ok());

  absl::StatusOr<metrics::HttpResponse> r = metrics::HttpGet(address, "/metrics");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(absl::StartsWith(r->content_type, "text/plain")) << r->content_type;
  absl::StatusOr<std::vector<metrics::Sample>> samples = metrics::ParseTextFormat(r->body);
  ASSERT_TRUE(samples.ok()) << samples.status();
  EXPECT_EQ(metrics::FindSample(*samples, "ferry_vm_memory_bytes",
                                {{"vm", "web-1"}, {"host", "am-ok"}}),
            64 << 20);
  EXPECT_EQ(metrics::FindSample(*samples, "ferry_host_vms", {{"host", "am-ok"}}), 1);
  EXPECT_EQ(agent.Terminate(), 0) << agent.Log();
}

TEST(AgentMetricsProcessTest, MalformedListenIsABadFlag) {
  Agent agent(Config("am-bad", "localhost"));
  EXPECT_EQ(agent.WaitExit(), 2) << agent.Log();
  EXPECT_TRUE(absl::StrContains(agent.Stderr(), "--metrics_listen")) << agent.Stderr();
}

TEST(AgentMetricsProcessTest, BusyPortRefusesToStart) {
  absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> squatter =
      metrics::MetricsServer::Start("127.0.0.1:0");
  if (!squatter.ok()) GTEST_SKIP() << "cannot bind loopback: " << squatter.status();
  Agent agent(Config("am-busy", (*squatter)->address()));
  EXPECT_EQ(agent.WaitExit(), 1) << agent.Log();
  EXPECT_TRUE(absl::StrContains(agent.Stderr(), "cannot serve metrics")) << agent.Stderr();
  EXPECT_FALSE(agent_test::Exists(agent.port_file()));
}

}  // namespace
}  // namespace ferry::metrics_test
