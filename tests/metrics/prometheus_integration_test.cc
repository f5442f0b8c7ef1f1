// A real Prometheus (Debian's binary, 127.0.0.1, started and stopped here)
// scrapes a real ferry-controller and two real ferry-agent processes
// (--backend=soft, registered with the controller) while a VM with a known
// dirty rate, created through ControllerService, runs and live-migrates
// between them (ControllerService.CreateMigration). Then every panel
// query of every dashboard in deploy/grafana and every recording and alert
// rule of deploy/prometheus is asked of Prometheus's HTTP API: each must
// return data, and the numbers must be sane (the dirty rate within 10% of
// what the guest was told to write, one succeeded migration, a downtime
// between 0 and the policy's limit, the controller's counts matching what
// the test did). It prints every query's value during the migration as a
// table (docs/metrics.md quotes it).
#include <algorithm>
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
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/json_util.h"
#include "proto/controller.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/agent_process_util.h"
#include "tests/metrics/controller_process.h"
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

std::unique_ptr<Agent> StartAgent(const std::string& name, const std::string& controller) {
  AgentConfig c;
  c.name = name;
  c.data_dir = absl::StrCat(TmpDir(), "/data-", name);
  c.extra = {"--backend=soft", "--metrics_listen=127.0.0.1:0",
             "--memory_capacity=2GiB", "--stats_interval=1s",
             "--migration_prepare_ttl=10s", "--migration_idle_timeout=10s",
             "--controller=" + controller};
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
                           "live-migrations.json", "host-capacity.json",
                           "controller.json"}) {
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

std::string Config(const std::string& a, const std::string& b, const std::string& controller) {
  // As deploy/prometheus/prometheus.yml, with the daemons' picked ports and
  // a 1 s scrape so a migration of a few seconds leaves several samples.
  return absl::StrCat(
      "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
      "rule_files:\n  - ", Runfile("deploy/prometheus/rules/recording.yml"),
      "\n  - ", Runfile("deploy/prometheus/rules/alerts.yml"),
      "\nscrape_configs:\n  - job_name: ferry-agent\n    scrape_interval: 1s\n"
      "    scrape_timeout: 1s\n    static_configs:\n      - targets: [\"", a,
      "\", \"", b, "\"]\n"
      "  - job_name: ferry-controller\n    scrape_interval: 1s\n"
      "    scrape_timeout: 1s\n    static_configs:\n      - targets: [\"", controller,
      "\"]\n");
}

double One(const PrometheusProcess& prom, const std::string& expr, absl::Time at) {
  absl::StatusOr<google::protobuf::ListValue> r = prom.Query(expr, at);
  EXPECT_TRUE(r.ok()) << expr << ": " << r.status();
  if (!r.ok()) return std::nan("");
  const std::vector<double> v = ResultValues(*r);
  EXPECT_EQ(v.size(), 1u) << expr;
  return v.empty() ? std::nan("") : v[0];
}

// A query result in one table cell: each non-zero series as
// "{labels} value" (labels other than __name__, job and instance), at most
// 4, then how many more and how many were 0 (dashboards keep a 0 series
// per enum value, which would otherwise crowd out the one that matters).
std::string Describe(const google::protobuf::ListValue& result) {
  if (result.values_size() == 0) return "(empty)";
  std::vector<std::string> parts;
  int zeros = 0, more = 0;
  for (const auto& series : result.values()) {
    const auto& f = series.struct_value().fields();
    std::string value = "?";
    if (f.count("value") && f.at("value").list_value().values_size() == 2) {
      value = f.at("value").list_value().values(1).string_value();
      double d;
      if (absl::SimpleAtod(value, &d) && std::isfinite(d)) {
        if (d == 0 && result.values_size() > 1) {
          ++zeros;
          continue;
        }
        if (d != std::floor(d)) value = absl::StrFormat("%.4g", d);
      }
    }
    if (parts.size() == 4) {
      ++more;
      continue;
    }
    std::vector<std::string> labels;
    if (f.count("metric")) {
      for (const auto& [k, v] : f.at("metric").struct_value().fields()) {
        if (k == "__name__" || k == "job" || k == "instance") continue;
        labels.push_back(absl::StrCat(k, "=", v.string_value()));
      }
      std::sort(labels.begin(), labels.end());
    }
    parts.push_back(labels.empty() ? value
                                   : absl::StrCat("{", absl::StrJoin(labels, ","), "} ", value));
  }
  if (more > 0) parts.push_back(absl::StrCat("(+", more, " more)"));
  if (zeros > 0) parts.push_back(absl::StrCat("(", zeros, " series at 0)"));
  return absl::StrJoin(parts, "; ");
}

double MaxFinite(const std::vector<double>& values) {
  double m = std::nan("");
  for (double v : values) {
    if (std::isfinite(v) && !(v <= m)) m = v;
  }
  return m;
}

TEST(PrometheusIntegrationTest, DashboardsAndRulesAnswerDuringAMigration) {
  const std::string binary = FindBinary("prometheus");
  if (binary.empty()) {
    GTEST_SKIP() << "prometheus not installed (Debian package prometheus; "
                    "scripts/install-deps installs it)";
  }
  // 1 s heartbeats: host readiness and the VM's records follow the agents
  // within a scrape or two.
  ControllerProcess controller(absl::StrCat(TmpDir(), "/prom-controller"), "prom",
                               {"--heartbeat_interval=1s"});
  absl::Status ready = controller.WaitReady();
  ASSERT_TRUE(ready.ok()) << ready;
  auto a = StartAgent("prom-a", controller.address());
  auto b = StartAgent("prom-b", controller.address());
  ASSERT_TRUE(a && b);
  ready = controller.WaitHostsReady(2, absl::Seconds(15));
  ASSERT_TRUE(ready.ok()) << ready;
  absl::StatusOr<std::string> a_metrics = MetricsAddress(*a);
  absl::StatusOr<std::string> b_metrics = MetricsAddress(*b);
  ASSERT_TRUE(a_metrics.ok()) << a_metrics.status();
  ASSERT_TRUE(b_metrics.ok()) << b_metrics.status();
  const std::string dir = absl::StrCat(TmpDir(), "/prometheus");
  ASSERT_EQ(system(absl::StrCat("mkdir -p ", dir).c_str()), 0);
  absl::StatusOr<std::unique_ptr<PrometheusProcess>> prom = PrometheusProcess::Start(
      binary, dir, Config(*a_metrics, *b_metrics, controller.metrics_address()));
  ASSERT_TRUE(prom.ok()) << prom.status();
  const absl::Time start = absl::Now();

  // Sequential writes over a working set larger than a second's worth:
  // every write dirties a distinct page, so distinct pages/s == the rate.
  // Created through the controller, pinned to agent a.
  v1::CreateVmRequest create;
  v1::VmSpec* spec = create.mutable_spec();
  spec->set_name(kVm);
  spec->set_memory_bytes(544 * kMiB);
  spec->set_vcpu_count(1);
  spec->set_backend(v1::VM_BACKEND_SOFT);
  spec->mutable_workload()->set_kind(v1::WORKLOAD_KIND_SEQUENTIAL);
  spec->mutable_workload()->set_working_set_bytes(512 * kMiB);
  spec->mutable_workload()->set_dirty_rate_bytes_per_s(kDirtyRate);
  create.set_host(a->name());
  v1::Vm vm;
  grpc::Status created = controller.stub().CreateVm(Ctx(absl::Seconds(60)).get(), create, &vm);
  ASSERT_TRUE(created.ok()) << created.error_message() << "\n" << controller.Log();

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
  // The controller's view before the migration.
  EXPECT_EQ(One(**prom, "ferry_controller_hosts{readiness=\"ready\"}", steady), 2);
  EXPECT_EQ(One(**prom, "ferry_controller_vms{phase=\"running\"}", steady), 1);
  EXPECT_EQ(One(**prom, "ferry_controller_hosts_cordoned", steady), 0);

  // Live-migrate it with the workload running, through the controller.
  v1::CreateMigrationRequest mreq;
  mreq.set_vm_name(kVm);
  mreq.set_target_host(b->name());
  v1::MigrationPolicy* policy = mreq.mutable_policy();
  policy->mutable_max_downtime()->set_nanos(500 * 1000 * 1000);
  policy->set_streams(2);
  policy->set_max_rounds(40);
  policy->set_auto_converge(true);
  // Uncompressed and capped so the migration spans several 1 s scrapes and
  // rule evaluations (round 0 alone takes ~3 s). The cap limits wire bytes,
  // and the workload's pages compress ~20x, hence no compression.
  policy->set_max_bandwidth_bytes_per_s(160 * kMiB);
  policy->set_compression(v1::COMPRESSION_NONE);
  policy->set_xor_delta(false);
  policy->mutable_progress_timeout()->set_seconds(20);
  const absl::Time mig_start = absl::Now();
  v1::Migration migration;
  grpc::Status started =
      controller.stub().CreateMigration(Ctx(absl::Seconds(30)).get(), mreq, &migration);
  ASSERT_TRUE(started.ok()) << started.error_message() << "\n" << controller.Log();
  {
    v1::WatchMigrationRequest wreq;
    wreq.set_id(migration.id());
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
    auto reader = controller.stub().WatchMigration(&ctx, wreq);
    v1::Migration m;
    while (reader->Read(&m)) migration = m;
    grpc::Status watched = reader->Finish();
    ASSERT_TRUE(watched.ok()) << watched.error_message();
  }
  const absl::Time mig_end = absl::Now();
  const absl::Time mid = mig_start + (mig_end - mig_start) / 2;
  const v1::MigrationResult& result = migration.result();
  ASSERT_EQ(migration.phase(), v1::MIGRATION_PHASE_SUCCEEDED)
      << migration.ShortDebugString() << "\n" << controller.Log();
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

  // The controller's view after it: one succeeded migration record, the
  // VM running (now on b), the API calls this test made, synced commits.
  EXPECT_EQ(One(**prom, "ferry_controller_migrations{phase=\"succeeded\"}", end), 1);
  EXPECT_EQ(One(**prom, "ferry_controller_migration_queue_length", end), 0);
  EXPECT_EQ(One(**prom, "ferry_controller_vms{phase=\"running\"}", end), 1);
  EXPECT_EQ(One(**prom, "ferry_controller_hosts{readiness=\"ready\"}", end), 2);
  EXPECT_EQ(One(**prom, "sum(ferry_controller_api_requests_total{method=~\".*/CreateMigration\","
                        "code=\"OK\"})", end), 1);
  EXPECT_EQ(One(**prom, "sum(ferry_controller_api_requests_total{method=~\".*/CreateVm\","
                        "code=\"OK\"})", end), 1);
  EXPECT_GT(One(**prom, "ferry_controller_store_commit_seconds_count", end), 3);
  {
    // In flight in the controller's records while the agents migrated.
    absl::StatusOr<google::protobuf::ListValue> r = (*prom)->QueryRange(
        "sum(ferry_controller_migrations{phase!~\"pending|succeeded|failed|cancelled\"})",
        mig_start, mig_end, absl::Seconds(1));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(MaxFinite(ResultValues(*r)), 1) << "no scrape saw the migration in flight";
  }

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
  // The table printed for the closing note: each query's answer at the
  // migration's midpoint and its largest finite value over the whole run.
  std::string error;
  const std::vector<PanelQuery> panels = DashboardQueries(&error);
  ASSERT_TRUE(error.empty()) << error;
  ASSERT_GT(panels.size(), 30u);
  std::string table =
      "| dashboard / panel | query | at migration midpoint | max over run |\n|---|---|---|---|\n";
  for (const PanelQuery& q : panels) {
    absl::StatusOr<google::protobuf::ListValue> r =
        (*prom)->QueryRange(q.expr, start, end, absl::Seconds(1));
    ASSERT_TRUE(r.ok()) << q.where << ": " << q.expr << ": " << r.status();
    const std::vector<double> values = ResultValues(*r);
    absl::StatusOr<google::protobuf::ListValue> at_mid = (*prom)->Query(q.expr, mid);
    ASSERT_TRUE(at_mid.ok()) << q.where << ": " << q.expr << ": " << at_mid.status();
    absl::StrAppend(&table, "| ", q.where, " | `", absl::StrReplaceAll(q.expr, {{"|", "\\|"}}),
                    "` | ", absl::StrReplaceAll(Describe(*at_mid), {{"|", "\\|"}}), " | ",
                    absl::StrFormat("%.4g", MaxFinite(values)), " |\n");
    if (absl::StrContains(q.expr, "ferry_vcpu_dirty_pages_per_second")) {
      // Empty by design here: per-vCPU rates come from KVM's dirty ring,
      // and these agents run the soft backend, which has none (absent, not
      // 0). //agent/metrics:vcpu_rates_kvm_test covers them on real KVM.
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
  const std::regex metric_name("\\b(ferry_[a-z_]+|up)\\b");
  for (const auto& group : rules->struct_value().fields().at("groups").list_value().values()) {
    for (const auto& rule : group.struct_value().fields().at("rules").list_value().values()) {
      const auto& f = rule.struct_value().fields();
      const std::string name = f.at("name").string_value();
      const std::string expr = f.at("query").string_value();
      EXPECT_EQ(f.at("health").string_value(), "ok")
          << name << ": " << (f.count("lastError") ? f.at("lastError").string_value() : "");
      absl::StatusOr<google::protobuf::ListValue> at_mid = (*prom)->Query(expr, mid);
      ASSERT_TRUE(at_mid.ok()) << name << ": " << at_mid.status();
      if (f.at("type").string_value() == "recording") {
        ++recording;
        absl::StatusOr<google::protobuf::ListValue> r =
            (*prom)->QueryRange(name, start, end, absl::Seconds(1));
        ASSERT_TRUE(r.ok()) << name << ": " << r.status();
        absl::StrAppend(&table, "| rule ", name, " (recording) | `",
                        absl::StrReplaceAll(expr, {{"|", "\\|"}}), "` | ",
                        absl::StrReplaceAll(Describe(*at_mid), {{"|", "\\|"}}), " | ",
                        absl::StrFormat("%.4g", MaxFinite(ResultValues(*r))), " |\n");
        EXPECT_FALSE(ResultValues(*r).empty()) << "recording rule " << name
                                               << " produced nothing: " << expr;
        continue;
      }
      ++alerting;
      // An alert's expression returns the series that would fire: empty
      // when all is well.
      absl::StrAppend(&table, "| rule ", name, " (alert, state ", f.at("state").string_value(),
                      ") | `", absl::StrReplaceAll(expr, {{"|", "\\|"}}), "` | ",
                      absl::StrReplaceAll(Describe(*at_mid), {{"|", "\\|"}}), " | — |\n");
      for (std::sregex_iterator it(expr.begin(), expr.end(), metric_name), e; it != e; ++it) {
        const std::string metric = (*it)[1];
        absl::StatusOr<google::protobuf::ListValue> r =
            (*prom)->QueryRange(metric, start, end, absl::Seconds(1));
        ASSERT_TRUE(r.ok()) << metric << ": " << r.status();
        EXPECT_FALSE(ResultValues(*r).empty())
            << "alert " << name << " reads " << metric << ", which no daemon exposed";
      }
    }
  }
  std::printf("\n%s\n", table.c_str());
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
