// `ferryctl top vms` and the agent's /metrics must show the same dirty
// rates (issue 8). One real ferry-controller, one real ferry-agent
// (--backend=soft, --metrics_listen, registered with --controller), two
// VMs created through ControllerService with known sequential write rates.
// The ferryctl binary's table is compared with the agent's
// ferry_vm_dirty_bytes_per_second series for each VM.
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/metrics/http_get.h"
#include "common/metrics/text_format.h"
#include "gtest/gtest.h"
#include "tests/agent_process_util.h"
#include "tests/metrics/controller_process.h"

namespace ferry::metrics_test {
namespace {

using agent_test::Agent;
using agent_test::AgentConfig;
using agent_test::Ctx;
using agent_test::RunfilePath;
using agent_test::TmpDir;

constexpr uint64_t kMiB = uint64_t{1} << 20;

// "95MiB/s", "9.5MiB/s", "512KiB/s", "0B/s" (cli/units.cc FormatRate) to
// bytes/s; -1 when it is none of those.
double ParseRate(absl::string_view s) {
  if (!absl::ConsumeSuffix(&s, "/s")) return -1;
  static const std::pair<const char*, double> kUnits[] = {
      {"GiB", 1024.0 * kMiB}, {"MiB", kMiB}, {"KiB", 1024}, {"B", 1}};
  for (const auto& [suffix, scale] : kUnits) {
    absl::string_view n = s;
    if (!absl::ConsumeSuffix(&n, suffix)) continue;
    double v;
    if (!absl::SimpleAtod(n, &v)) return -1;
    return v * scale;
  }
  return -1;
}

// NAME -> DIRTY-RATE column of `ferryctl top vms` (it has no -o json:
// the table is what a person reads, so that is what is compared).
absl::StatusOr<std::map<std::string, double>> TopVms(const std::string& server) {
  CommandResult r = RunCommand({RunfilePath("cli/ferryctl"), "--server", server, "top", "vms"});
  if (r.exit_code != 0) {
    return absl::InternalError(absl::StrCat("ferryctl exited ", r.exit_code, ": ", r.err));
  }
  std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  if (lines.empty()) return absl::InternalError("ferryctl printed nothing: " + r.err);
  std::vector<std::string> header = absl::StrSplit(lines[0], ' ', absl::SkipEmpty());
  int name_col = -1, rate_col = -1;
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] == "NAME") name_col = static_cast<int>(i);
    if (header[i] == "DIRTY-RATE") rate_col = static_cast<int>(i);
  }
  if (name_col < 0 || rate_col < 0) {
    return absl::InternalError("no NAME/DIRTY-RATE columns in: " + lines[0]);
  }
  std::map<std::string, double> out;
  for (size_t l = 1; l < lines.size(); ++l) {
    std::vector<std::string> cells = absl::StrSplit(lines[l], ' ', absl::SkipEmpty());
    if (static_cast<int>(cells.size()) <= rate_col) {
      return absl::InternalError("short row: " + lines[l]);
    }
    const double rate = ParseRate(cells[rate_col]);
    if (rate < 0) return absl::InternalError("bad DIRTY-RATE in row: " + lines[l]);
    out[cells[name_col]] = rate;
  }
  return out;
}

// vm -> ferry_vm_dirty_bytes_per_second from the agent's /metrics.
absl::StatusOr<std::map<std::string, double>> ScrapeRates(const std::string& address) {
  absl::StatusOr<metrics::HttpResponse> r = metrics::HttpGet(address, "/metrics");
  if (!r.ok()) return r.status();
  if (r->status != 200) return absl::InternalError(absl::StrCat("HTTP ", r->status));
  absl::StatusOr<std::vector<metrics::Sample>> samples = metrics::ParseTextFormat(r->body);
  if (!samples.ok()) return samples.status();
  std::map<std::string, double> out;
  for (const metrics::Sample& s : *samples) {
    if (s.name == "ferry_vm_dirty_bytes_per_second") out[s.labels.at("vm")] = s.value;
  }
  return out;
}

struct VmCase {
  std::string name;
  uint64_t rate;
  uint64_t working_set;
};

TEST(TopVsMetricsTest, FerryctlTopShowsTheAgentsDirtyRates) {
  ControllerProcess controller(absl::StrCat(TmpDir(), "/top-controller"), "top",
                               {"--heartbeat_interval=1s"});
  absl::Status s = controller.WaitReady();
  ASSERT_TRUE(s.ok()) << s;
  AgentConfig c;
  c.name = "top-agent";
  c.data_dir = absl::StrCat(TmpDir(), "/data-top-agent");
  c.extra = {"--backend=soft", "--metrics_listen=127.0.0.1:0", "--memory_capacity=2GiB",
             "--stats_interval=1s", "--controller=" + controller.address()};
  Agent agent(c);
  s = agent.WaitReady();
  ASSERT_TRUE(s.ok()) << s;
  std::string agent_metrics;
  for (int i = 0; i < 200 && agent_metrics.empty(); ++i) {
    agent_metrics = MetricsAddressIn(agent.Stdout(), "ferry-agent metrics on http://");
    if (agent_metrics.empty()) absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_FALSE(agent_metrics.empty()) << agent.Log();
  s = controller.WaitHostsReady(1, absl::Seconds(15));
  ASSERT_TRUE(s.ok()) << s << agent.Log();

  // Sequential writes over a working set larger than a second's worth, so
  // distinct pages per second == the write rate; two rates far apart so a
  // mix-up between VMs shows.
  const std::vector<VmCase> vms = {{"slow", 24 * kMiB, 128 * kMiB},
                                   {"fast", 96 * kMiB, 256 * kMiB}};
  for (const VmCase& v : vms) {
    v1::CreateVmRequest req;
    v1::VmSpec* spec = req.mutable_spec();
    spec->set_name(v.name);
    spec->set_memory_bytes(v.working_set + 32 * kMiB);
    spec->set_vcpu_count(1);
    spec->set_backend(v1::VM_BACKEND_SOFT);
    spec->mutable_workload()->set_kind(v1::WORKLOAD_KIND_SEQUENTIAL);
    spec->mutable_workload()->set_working_set_bytes(v.working_set);
    spec->mutable_workload()->set_dirty_rate_bytes_per_s(v.rate);
    req.set_host(agent.name());
    v1::Vm vm;
    grpc::Status g = controller.stub().CreateVm(Ctx(absl::Seconds(60)).get(), req, &vm);
    ASSERT_TRUE(g.ok()) << g.error_message() << "\n" << controller.Log();
  }
  // Sampler windows fill, heartbeats carry them to the controller.
  absl::SleepFor(absl::Seconds(8));

  // Both sides read the same thing: the agent's sampler's newest 1 s
  // window (the heartbeat's VmSummary via ListVms' status, the scrape via
  // GetStats(window 0)). They are still read at different instants: the
  // controller holds the figure of the last heartbeat (up to 1 s old, so
  // possibly the previous window), and successive windows of a sampled
  // estimate differ by a few percent. ferryctl also rounds to whole MiB/s
  // above 10 MiB/s (<= 2% at 24 MiB/s). Averaging 6 readings of each
  // side taken alternately, 1 s apart, the two must agree within 5%; a
  // figure from a different source (a longer window, a stale record, the
  // target rate instead of the measured one) would show larger gaps or
  // move in step with neither.
  constexpr int kReadings = 6;
  std::map<std::string, double> top_sum, metrics_sum;
  for (int i = 0; i < kReadings; ++i) {
    absl::StatusOr<std::map<std::string, double>> top = TopVms(controller.address());
    ASSERT_TRUE(top.ok()) << top.status();
    absl::StatusOr<std::map<std::string, double>> scraped = ScrapeRates(agent_metrics);
    ASSERT_TRUE(scraped.ok()) << scraped.status();
    for (const VmCase& v : vms) {
      ASSERT_TRUE(top->count(v.name)) << "ferryctl top vms lacks " << v.name;
      ASSERT_TRUE(scraped->count(v.name)) << "/metrics lacks " << v.name;
      std::printf("reading %d  %-5s  top %7.2f MiB/s  metrics %7.2f MiB/s\n", i,
                  v.name.c_str(), top->at(v.name) / kMiB, scraped->at(v.name) / kMiB);
      top_sum[v.name] += top->at(v.name);
      metrics_sum[v.name] += scraped->at(v.name);
    }
    absl::SleepFor(absl::Seconds(1));
  }
  std::printf("\n| VM | target MiB/s | ferryctl top (avg) MiB/s | /metrics (avg) MiB/s | diff |\n"
              "|---|---|---|---|---|\n");
  for (const VmCase& v : vms) {
    const double top = top_sum[v.name] / kReadings;
    const double met = metrics_sum[v.name] / kReadings;
    std::printf("| %s | %.1f | %.2f | %.2f | %+.2f%% |\n", v.name.c_str(),
                static_cast<double>(v.rate) / kMiB, top / kMiB, met / kMiB,
                100.0 * (top - met) / met);
    EXPECT_GT(met, 0.5 * v.rate) << v.name << ": the sampler measured far below the target";
    EXPECT_NEAR(top, met, 0.05 * met)
        << v.name << ": ferryctl top shows " << top / kMiB << " MiB/s, /metrics "
        << met / kMiB << " MiB/s";
  }
  if (HasFailure()) ADD_FAILURE() << controller.Log() << agent.Log();
}

}  // namespace
}  // namespace ferry::metrics_test
