// A real Prometheus (Debian's binary, 127.0.0.1, started and stopped here)
// scrapes two real ferry-agent processes (--backend=soft) while a VM with a
// known dirty rate runs and live-migrates between them. Then every panel
// query of every dashboard in deploy/grafana and every recording and alert
// rule of deploy/prometheus is asked of Prometheus's HTTP API: each must
// return data, and the numbers must be sane (the dirty rate within 10% of
// what the guest was told to write, one succeeded migration, a downtime
// between 0 and the policy's limit).
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "controller/orchestrator/migration_driver.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/agent_process_util.h"
#include "tests/metrics/prometheus_process.h"
#include "tests/metrics/promtool_util.h"

namespace ferry::metrics_test {
namespace {

using agent_test::Agent;
using agent_test::AgentConfig;
using agent_test::Ctx;
using agent_test::TmpDir;

constexpr uint64_t kMiB = uint64_t{1} << 20;
// What the soft backend sustains on a shared 2-core machine with the
// agent's sampler and a migration running beside it.
constexpr uint64_t kDirtyRate = 100 * kMiB;
constexpr char kVm[] = "load";

std::string ReadAll(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The agent prints its metrics URL on the second stdout line.
absl::StatusOr<std::string> MetricsAddress(Agent& agent) {
  const std::string prefix = "ferry-agent metrics on http://";
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    const std::string out = agent.Stdout();
    const size_t at = out.find(prefix);
    if (at != std::string::npos) {
      const size_t end = out.find("/metrics", at);
      if (end != std::string::npos) {
        return out.substr(at + prefix.size(), end - at - prefix.size());
      }
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError("no metrics line on stdout:\n" + agent.Log());
}

std::unique_ptr<Agent> StartAgent(const std::string& name) {
  AgentConfig c;
  c.name = name;
  c.data_dir = absl::StrCat(TmpDir(), "/data-", name);
  c.extra = {"--backend=soft", "--metrics_listen=127.0.0.1:0",
             "--memory_capacity=2GiB", "--stats_interval=1s",
             "--migration_prepare_ttl=10s", "--migration_idle_timeout=10s"};
  auto agent = std::make_unique<Agent>(c);
  absl::Status s = agent->WaitReady();
  EXPECT_TRUE(s.ok()) << s;
  return s.ok() ? std::move(agent) : nullptr;
}

struct PanelQuery {
  std::string where;  // dashboard / panel title
  std::string expr;
};

// Every target expr of every panel, Grafana variables replaced by what
// "All" selects.
std::vector<PanelQuery> DashboardQueries(std::string* error) {
  std::vector<PanelQuery> out;
  for (const char* file : {"cluster-overview.json", "vm-dirty-rate.json",
                           "live-migrations.json", "host-capacity.json"}) {
    const std::string path = Runfile(absl::StrCat("deploy/grafana/dashboards/", file));
    google::protobuf::Struct dash;
    if (!google::protobuf::util::JsonStringToMessage(ReadAll(path), &dash).ok()) {
      *error = absl::StrCat("cannot parse ", path);
      return {};
    }
    for (const auto& panel : dash.fields().at("panels").list_value().values()) {
      const auto& p = panel.struct_value().fields();
      for (const auto& target : p.at("targets").list_value().values()) {
        std::string expr = target.struct_value().fields().at("expr").string_value();
        expr = absl::StrReplaceAll(expr, {{"$__rate_interval", "1m"},
                                          {"$__interval", "5s"},
                                          {"$__range", "1h"},
                                          {"$host", ".*"},
                                          {"$vm", ".*"}});
        out.push_back({absl::StrCat(file, " / ", p.at("title").string_value()), expr});
      }
    }
  }
  return out;
}

std::string Config(const std::string& a, const std::string& b) {
  // As deploy/prometheus/prometheus.yml, with the agents' picked ports and
  // a 1 s scrape so a migration of a few seconds leaves several samples.
  return absl::StrCat(
      "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
      "rule_files:\n  - ", Runfile("deploy/prometheus/rules/recording.yml"),
      "\n  - ", Runfile("deploy/prometheus/rules/alerts.yml"),
      "\nscrape_configs:\n  - job_name: ferry-agent\n    scrape_interval: 1s\n"
      "    scrape_timeout: 1s\n    static_configs:\n      - targets: [\"", a,
      "\", \"", b, "\"]\n");
}

double One(const PrometheusProcess& prom, const std::string& expr, absl::Time at) {
  absl::StatusOr<google::protobuf::ListValue> r = prom.Query(expr, at);
  EXPECT_TRUE(r.ok()) << expr << ": " << r.status();
  if (!r.ok()) return std::nan("");
  const std::vector<double> v = ResultValues(*r);
  EXPECT_EQ(v.size(), 1u) << expr;
  return v.empty() ? std::nan("") : v[0];
}

TEST(PrometheusIntegrationTest, DashboardsAndRulesAnswerDuringAMigration) {
  const std::string binary = FindBinary("prometheus");
  if (binary.empty()) {
    GTEST_SKIP() << "prometheus not installed (Debian package prometheus; "
                    "scripts/install-deps installs it)";
  }
  auto a = StartAgent("prom-a");
  auto b = StartAgent("prom-b");
  ASSERT_TRUE(a && b);
  absl::StatusOr<std::string> a_metrics = MetricsAddress(*a);
  absl::StatusOr<std::string> b_metrics = MetricsAddress(*b);
  ASSERT_TRUE(a_metrics.ok()) << a_metrics.status();
  ASSERT_TRUE(b_metrics.ok()) << b_metrics.status();
  const std::string dir = absl::StrCat(TmpDir(), "/prometheus");
  ASSERT_EQ(system(absl::StrCat("mkdir -p ", dir).c_str()), 0);
  absl::StatusOr<std::unique_ptr<PrometheusProcess>> prom =
      PrometheusProcess::Start(binary, dir, Config(*a_metrics, *b_metrics));
  ASSERT_TRUE(prom.ok()) << prom.status();
  const absl::Time start = absl::Now();

  // Sequential writes over a working set larger than a second's worth:
  // every write dirties a distinct page, so distinct pages/s == the rate.
  v1::AgentCreateVmRequest create;
  v1::VmSpec* spec = create.mutable_spec();
  spec->set_name(kVm);
  spec->set_memory_bytes(544 * kMiB);
  spec->set_vcpu_count(1);
  spec->set_backend(v1::VM_BACKEND_SOFT);
  spec->mutable_workload()->set_kind(v1::WORKLOAD_KIND_SEQUENTIAL);
  spec->mutable_workload()->set_working_set_bytes(512 * kMiB);
  spec->mutable_workload()->set_dirty_rate_bytes_per_s(kDirtyRate);
  v1::Vm vm;
  grpc::Status created = a->stub().CreateVm(Ctx().get(), create, &vm);
  ASSERT_TRUE(created.ok()) << created.error_message();

  // 25 s: the sampler's windows, the 1 m averages and the rate() windows
  // all have data.
  absl::SleepFor(absl::Seconds(25));
  const absl::Time steady = absl::Now();
  const double measured = One(**prom,
      absl::StrCat("avg_over_time(ferry_vm_dirty_bytes_per_second{vm=\"", kVm, "\"}[15s])"),
      steady);
  const double guest = One(**prom,
      absl::StrCat("rate(ferry_vm_guest_pages_written_total{vm=\"", kVm, "\"}[15s]) * 4096"),
      steady);
  std::printf("dirty rate: prometheus %.1f MiB/s, guest writes %.1f MiB/s, target %.1f MiB/s\n",
              measured / kMiB, guest / kMiB, static_cast<double>(kDirtyRate) / kMiB);
  EXPECT_NEAR(measured, static_cast<double>(kDirtyRate), 0.1 * kDirtyRate)
      << "Prometheus saw " << measured / kMiB << " MiB/s; the guest itself wrote "
      << guest / kMiB << " MiB/s (target " << kDirtyRate / kMiB << " MiB/s)";

  // Live-migrate it with the workload running.
  controller::MigrationRequest req;
  req.vm_name = kVm;
  req.source_address = a->address();
  req.destination_address = b->address();
  req.source_host = a->name();
  req.destination_host = b->name();
  req.policy.mutable_max_downtime()->set_nanos(500 * 1000 * 1000);
  req.policy.set_streams(2);
  req.policy.set_max_rounds(40);
  req.policy.set_auto_converge(true);
  // Uncompressed and capped so the migration spans several 1 s scrapes and
  // rule evaluations (round 0 alone takes ~3 s). The cap limits wire bytes,
  // and the workload's pages compress ~20x, hence no compression.
  req.policy.set_max_bandwidth_bytes_per_s(160 * kMiB);
  req.policy.set_compression(v1::COMPRESSION_NONE);
  req.policy.set_xor_delta(false);
  req.policy.mutable_progress_timeout()->set_seconds(20);
  controller::MigrationDriver driver(req);
  const v1::MigrationResult result = driver.Run();
  ASSERT_EQ(result.phase(), v1::MIGRATION_PHASE_SUCCEEDED) << result.ShortDebugString();
  std::printf("migration: %s\n", result.ShortDebugString().c_str());
  ASSERT_GE(result.total_time().seconds(), 3)
      << "the migration was too short to be scraped in flight: " << result.ShortDebugString();
  // Scrapes, and rule groups (5 s interval) evaluating after the end.
  absl::SleepFor(absl::Seconds(12));
  const absl::Time end = absl::Now();

  // Sanity of the numbers behind the panels.
  const std::string src = absl::StrCat("{host=\"", a->name(), "\",role=\"source\"");
  EXPECT_EQ(One(**prom, absl::StrCat("ferry_migrations_completed_total", src,
                                     ",result=\"succeeded\"}"), end), 1);
  EXPECT_EQ(One(**prom, absl::StrCat("ferry_migration_downtime_seconds_count", src, "}"), end), 1);
  const double downtime =
      One(**prom, absl::StrCat("ferry_migration_downtime_seconds_sum", src, "}"), end);
  EXPECT_GT(downtime, 0);
  EXPECT_LT(downtime, 5);
  EXPECT_EQ(One(**prom, absl::StrCat("max_over_time(ferry_migration_total_bytes{vm=\"", kVm,
                                     "\",role=\"source\"}[2m])"), end),
            544.0 * kMiB);
  EXPECT_EQ(One(**prom, absl::StrCat("ferry_vm_memory_bytes{vm=\"", kVm, "\",host=\"",
                                     b->name(), "\"}"), end),
            544.0 * kMiB)
      << "the VM's series should now come from the destination";
  absl::StatusOr<google::protobuf::ListValue> gone = (*prom)->Query(
      absl::StrCat("ferry_vm_memory_bytes{vm=\"", kVm, "\",host=\"", a->name(), "\"}"), end);
  ASSERT_TRUE(gone.ok()) << gone.status();
  EXPECT_EQ(gone->values_size(), 0) << "the source's series for the VM must vanish";

  // Scrape health over the run: a scrape that timed out leaves holes that
  // the panel checks below would report as missing data.
  for (const char* diag : {"min_over_time(up[5m])", "max_over_time(scrape_duration_seconds[5m])"}) {
    absl::StatusOr<google::protobuf::ListValue> r = (*prom)->Query(diag, end);
    ASSERT_TRUE(r.ok()) << r.status();
    std::string text;
    google::protobuf::util::MessageToJsonString(*r, &text);
    std::printf("%s: %s\n", diag, text.c_str());
  }
  EXPECT_EQ(One(**prom, "min(min_over_time(up[5m]))", end), 1) << "a scrape failed";

  // Every dashboard panel query returns data, all of it finite and >= 0.
  std::string error;
  const std::vector<PanelQuery> panels = DashboardQueries(&error);
  ASSERT_TRUE(error.empty()) << error;
  ASSERT_GT(panels.size(), 30u);
  for (const PanelQuery& q : panels) {
    absl::StatusOr<google::protobuf::ListValue> r =
        (*prom)->QueryRange(q.expr, start, end, absl::Seconds(1));
    ASSERT_TRUE(r.ok()) << q.where << ": " << q.expr << ": " << r.status();
    const std::vector<double> values = ResultValues(*r);
    if (absl::StrContains(q.expr, "ferry_vcpu_dirty_pages_per_second")) {
      // Known empty today: only a migration's exact tracker attributes
      // writes to vCPUs, and the engine attaches none to the registry
      // (engine_hooks.cc: AttachMigration(..., nullptr)); see docs/metrics.md.
      continue;
    }
    EXPECT_FALSE(values.empty()) << q.where << ": no data for " << q.expr;
    int finite = 0;
    for (double v : values) {
      if (!std::isfinite(v)) continue;  // 0/0 between series lifetimes
      ++finite;
      EXPECT_GE(v, 0) << q.where << ": " << q.expr;
    }
    EXPECT_GT(finite, 0) << q.where << ": only NaN/Inf for " << q.expr;
  }

  // Every rule loaded, evaluated without error; recording rules produced
  // series; every metric an alert reads exists.
  absl::StatusOr<google::protobuf::Value> rules = (*prom)->Api("/api/v1/rules");
  ASSERT_TRUE(rules.ok()) << rules.status();
  int recording = 0, alerting = 0;
  // Read by FerryHostNotReady but served by the controller, which this
  // test does not run.
  const std::set<std::string> not_here = {"ferry_controller_hosts"};
  const std::regex metric_name("\\b(ferry_[a-z_]+|up)\\b");
  for (const auto& group : rules->struct_value().fields().at("groups").list_value().values()) {
    for (const auto& rule : group.struct_value().fields().at("rules").list_value().values()) {
      const auto& f = rule.struct_value().fields();
      const std::string name = f.at("name").string_value();
      const std::string expr = f.at("query").string_value();
      EXPECT_EQ(f.at("health").string_value(), "ok")
          << name << ": " << (f.count("lastError") ? f.at("lastError").string_value() : "");
      if (f.at("type").string_value() == "recording") {
        ++recording;
        absl::StatusOr<google::protobuf::ListValue> r =
            (*prom)->QueryRange(name, start, end, absl::Seconds(1));
        ASSERT_TRUE(r.ok()) << name << ": " << r.status();
        EXPECT_FALSE(ResultValues(*r).empty()) << "recording rule " << name
                                               << " produced nothing: " << expr;
        continue;
      }
      ++alerting;
      for (std::sregex_iterator it(expr.begin(), expr.end(), metric_name), e; it != e; ++it) {
        const std::string metric = (*it)[1];
        if (not_here.count(metric)) continue;
        absl::StatusOr<google::protobuf::ListValue> r =
            (*prom)->QueryRange(metric, start, end, absl::Seconds(1));
        ASSERT_TRUE(r.ok()) << metric << ": " << r.status();
        EXPECT_FALSE(ResultValues(*r).empty())
            << "alert " << name << " reads " << metric << ", which no agent exposed";
      }
    }
  }
  EXPECT_EQ(recording, 9);
  EXPECT_EQ(alerting, 6);
  // Nothing alarming happened: no guest memory lost.
  absl::StatusOr<google::protobuf::ListValue> corrupted =
      (*prom)->Query("ALERTS{alertname=\"FerryGuestMemoryCorrupted\"}", end);
  ASSERT_TRUE(corrupted.ok());
  EXPECT_EQ(corrupted->values_size(), 0);
  if (HasFailure()) ADD_FAILURE() << "prometheus log:\n" << (*prom)->Log();
}

}  // namespace
}  // namespace ferry::metrics_test
