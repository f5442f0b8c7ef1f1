#include "agent/metrics/agent_collector.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/service/proto_util.h"
#include "agent/service/soft_port.h"
#include "agent/vmm/soft/soft_backend.h"
#include "common/metrics/text_format.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"

namespace ferry::agent_metrics {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

// Only ListMigrations matters to the collector.
class FakeMigrations : public service::MigrationHooks {
 public:
  void Set(std::vector<v1::AgentMigration> list) {
    absl::MutexLock lock(&mu_);
    list_ = std::move(list);
  }
  absl::StatusOr<v1::AgentListMigrationsResponse> ListMigrations(
      const v1::AgentListMigrationsRequest&) override {
    absl::MutexLock lock(&mu_);
    v1::AgentListMigrationsResponse r;
    for (const auto& m : list_) *r.add_migrations() = m;
    return r;
  }
  absl::StatusOr<v1::PrepareIncomingResponse> PrepareIncoming(
      const v1::PrepareIncomingRequest&) override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<v1::StartOutgoingResponse> StartOutgoing(
      const v1::StartOutgoingRequest&) override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<v1::AgentCancelMigrationResponse> CancelMigration(
      const v1::AgentCancelMigrationRequest&) override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<v1::FinishIncomingResponse> FinishIncoming(
      const v1::FinishIncomingRequest&) override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<v1::ConfirmOutgoingResponse> ConfirmOutgoing(
      const v1::ConfirmOutgoingRequest&) override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<v1::AgentMigration> GetMigration(
      const v1::AgentGetMigrationRequest&) override {
    return absl::UnimplementedError("fake");
  }
  grpc::ServerWriteReactor<v1::MigrationProgress>* WatchMigration(
      grpc::CallbackServerContext*, const v1::AgentWatchMigrationRequest*) override {
    return nullptr;
  }
  void FillHostInfo(v1::HostInfo*) override {}
  void Shutdown() override {}

 private:
  absl::Mutex mu_;
  std::vector<v1::AgentMigration> list_ ABSL_GUARDED_BY(mu_);
};

// rate 0 = an idle workload (for the workload, 0 would mean "flat out").
v1::VmSpec Spec(const std::string& name, uint64_t rate) {
  v1::VmSpec spec;
  spec.set_name(name);
  spec.set_memory_bytes(64 * kMiB);
  spec.set_vcpu_count(1);
  spec.set_backend(v1::VM_BACKEND_AUTO);
  spec.mutable_workload()->set_kind(rate == 0 ? v1::WORKLOAD_KIND_IDLE
                                              : v1::WORKLOAD_KIND_UNIFORM);
  spec.mutable_workload()->set_dirty_rate_bytes_per_s(rate);
  spec.mutable_workload()->set_working_set_bytes(32 * kMiB);
  spec.mutable_workload()->set_seed(7);
  return spec;
}

v1::AgentMigration InFlight(const std::string& id, const std::string& vm) {
  v1::AgentMigration m;
  m.set_migration_id(id);
  m.set_vm_name(vm);
  m.set_role(v1::MIGRATION_ROLE_SOURCE);
  m.set_peer_host("host-b");
  m.set_phase(v1::MIGRATION_PHASE_TRANSFERRING);
  service::ToProtoDuration(absl::Milliseconds(50), m.mutable_policy()->mutable_max_downtime());
  v1::MigrationProgress* p = m.mutable_progress();
  p->set_round(3);
  p->set_total_bytes(64 * kMiB);
  p->set_remaining_bytes(5 * kMiB);
  p->set_bandwidth_bytes_per_s(100 * kMiB);
  p->set_throttle_percent(20);
  service::ToProtoDuration(absl::Milliseconds(40), p->mutable_expected_downtime());
  return m;
}

v1::AgentMigration Ended(v1::AgentMigration m, v1::MigrationPhase phase,
                         absl::Duration downtime,
                         v1::MigrationFailure failure = v1::MIGRATION_FAILURE_UNSPECIFIED) {
  m.set_phase(phase);
  m.mutable_result()->set_phase(phase);
  m.mutable_result()->set_failure(failure);
  m.mutable_result()->set_wire_bytes(1000);
  m.mutable_result()->set_rounds(4);
  service::ToProtoDuration(downtime, m.mutable_result()->mutable_downtime());
  service::ToProtoDuration(absl::Seconds(3), m.mutable_result()->mutable_total_time());
  return m;
}

class AgentCollectorTest : public ::testing::Test {
 protected:
  AgentCollectorTest() : soft_(service::MakeSoftMemoryPortFactory()) {
    backends_.soft = &soft_;
    backends_.kvm_status = absl::NotFoundError("no /dev/kvm in this test");
    options_.host_name = "host-a";
    options_.capacity = {256 * kMiB, 4};
    options_.sample_interval = absl::ZeroDuration();  // SampleAllNow()
    registry_ = std::make_unique<service::VmRegistry>(backends_, options_);
    AgentCollectorOptions o;
    o.host = "host-a";
    o.observe_interval = absl::ZeroDuration();
    collector_ = std::make_unique<AgentCollector>(*registry_, &migrations_, o);
  }

  // Through the text serializer and back: what Prometheus would read.
  std::vector<metrics::Sample> Scrape() {
    const std::string text = prometheus::TextSerializer().Serialize(collector_->Collect());
    absl::StatusOr<std::vector<metrics::Sample>> s = metrics::ParseTextFormat(text);
    EXPECT_TRUE(s.ok()) << s.status() << "\n" << text;
    return s.ok() ? *s : std::vector<metrics::Sample>{};
  }

  vmm::SoftBackend soft_;
  service::BackendSet backends_;
  service::RegistryOptions options_;
  std::unique_ptr<service::VmRegistry> registry_;
  FakeMigrations migrations_;
  std::unique_ptr<AgentCollector> collector_;
};

TEST_F(AgentCollectorTest, PerVmSeriesFollowTheVmAndItsDirtyRate) {
  ASSERT_TRUE(registry_->Create(Spec("web-1", 2000 * 4096), "u1").ok());
  ASSERT_TRUE(registry_->Create(Spec("idle-1", 0), "u2").ok());
  registry_->SampleAllNow();
  absl::SleepFor(absl::Milliseconds(500));
  registry_->SampleAllNow();

  std::vector<metrics::Sample> s = Scrape();
  EXPECT_EQ(metrics::FindSample(s, "ferry_vm_memory_bytes", {{"vm", "web-1"}, {"host", "host-a"}}),
            64.0 * kMiB);
  EXPECT_EQ(metrics::FindSample(s, "ferry_vm_vcpus", {{"vm", "web-1"}}), 1);
  EXPECT_EQ(metrics::FindSample(s, "ferry_vm_phase", {{"vm", "web-1"}, {"phase", "running"}}), 1);
  EXPECT_EQ(metrics::FindSample(s, "ferry_vm_dirty_tracking_mode", {{"vm", "web-1"}, {"mode", "off"}}),
            1);
  std::optional<double> busy = metrics::FindSample(s, "ferry_vm_dirty_bytes_per_second", {{"vm", "web-1"}});
  std::optional<double> idle = metrics::FindSample(s, "ferry_vm_dirty_bytes_per_second", {{"vm", "idle-1"}});
  ASSERT_TRUE(busy.has_value());
  ASSERT_TRUE(idle.has_value());
  EXPECT_GT(*busy, 0);
  EXPECT_LT(*idle, *busy);
  EXPECT_GT(*metrics::FindSample(s, "ferry_vm_working_set_bytes", {{"vm", "web-1"}}), 0);
  EXPECT_EQ(metrics::FindSample(s, "ferry_host_vms", {{"host", "host-a"}}), 2);
  EXPECT_EQ(metrics::FindSample(s, "ferry_host_memory_allocated_bytes"), 128.0 * kMiB);
  EXPECT_EQ(metrics::FindSample(s, "ferry_host_memory_capacity_bytes"), 256.0 * kMiB);
  EXPECT_GT(*metrics::FindSample(s, "ferry_agent_dirty_samples_total"), 0);

  // A deleted VM's series are gone on the next scrape.
  ASSERT_TRUE(registry_->Delete("web-1", false).ok());
  s = Scrape();
  EXPECT_FALSE(metrics::FindSample(s, "ferry_vm_memory_bytes", {{"vm", "web-1"}}).has_value());
  EXPECT_FALSE(metrics::FindSample(s, "ferry_vm_dirty_bytes_per_second", {{"vm", "web-1"}}).has_value());
  EXPECT_TRUE(metrics::FindSample(s, "ferry_vm_memory_bytes", {{"vm", "idle-1"}}).has_value());
}

TEST_F(AgentCollectorTest, InFlightMigrationSeriesVanishAndTotalsCountOnce) {
  migrations_.Set({InFlight("m-1", "web-1")});
  std::vector<metrics::Sample> s = Scrape();
  const std::map<std::string, std::string> src = {{"vm", "web-1"}, {"role", "source"}};
  EXPECT_EQ(metrics::FindSample(s, "ferry_migration_round", src), 3);
  EXPECT_EQ(metrics::FindSample(s, "ferry_migration_remaining_bytes", src), 5.0 * kMiB);
  EXPECT_DOUBLE_EQ(*metrics::FindSample(s, "ferry_migration_expected_downtime_seconds", src), 0.04);
  EXPECT_DOUBLE_EQ(*metrics::FindSample(s, "ferry_migration_throttle_ratio", src), 0.2);
  EXPECT_EQ(metrics::FindSample(s, "ferry_migration_info", {{"migration_id", "m-1"}, {"peer", "host-b"}}), 1);
  EXPECT_EQ(metrics::FindSample(s, "ferry_migrations_in_flight",
                                {{"role", "source"}, {"phase", "transferring"}}), 1);
  EXPECT_EQ(metrics::FindSample(s, "ferry_migrations_in_flight",
                                {{"role", "destination"}, {"phase", "switchover"}}), 0);

  // It succeeds with 80 ms downtime (over the 50 ms limit); another fails.
  migrations_.Set({Ended(InFlight("m-1", "web-1"), v1::MIGRATION_PHASE_SUCCEEDED,
                         absl::Milliseconds(80)),
                   Ended(InFlight("m-2", "db-1"), v1::MIGRATION_PHASE_FAILED,
                         absl::ZeroDuration(), v1::MIGRATION_FAILURE_NOT_CONVERGING)});
  collector_->ObserveMigrations();
  collector_->ObserveMigrations();  // seen twice, counted once
  s = Scrape();
  EXPECT_FALSE(metrics::FindSample(s, "ferry_migration_round", src).has_value());
  EXPECT_FALSE(metrics::FindSample(s, "ferry_migration_info").has_value());
  EXPECT_EQ(metrics::FindSample(s, "ferry_migrations_in_flight",
                                {{"role", "source"}, {"phase", "transferring"}}), 0);
  EXPECT_EQ(metrics::FindSample(s, "ferry_migrations_completed_total",
                                {{"role", "source"}, {"result", "succeeded"}, {"reason", "none"}}), 1);
  EXPECT_EQ(metrics::FindSample(s, "ferry_migrations_completed_total",
                                {{"role", "source"}, {"result", "failed"}, {"reason", "not_converging"}}), 1);
  EXPECT_EQ(metrics::FindSample(s, "ferry_migration_downtime_seconds_count", {{"role", "source"}}), 1);
  EXPECT_DOUBLE_EQ(*metrics::FindSample(s, "ferry_migration_downtime_seconds_sum", {{"role", "source"}}),
                   0.08);
  EXPECT_EQ(metrics::FindSample(s, "ferry_migration_downtime_seconds_bucket",
                                {{"role", "source"}, {"le", "0.05"}}), 0);
  EXPECT_EQ(metrics::FindSample(s, "ferry_migration_downtime_seconds_bucket",
                                {{"role", "source"}, {"le", "0.1"}}), 1);
  EXPECT_EQ(metrics::FindSample(s, "ferry_migration_downtime_over_limit_total", {{"role", "source"}}), 1);
  EXPECT_EQ(metrics::FindSample(s, "ferry_migration_duration_seconds_count",
                                {{"role", "source"}, {"result", "failed"}}), 1);
  EXPECT_EQ(metrics::FindSample(s, "ferry_migration_wire_bytes_total", {{"role", "source"}}), 2000);

  // The engine forgets them; the totals stay.
  migrations_.Set({});
  s = Scrape();
  EXPECT_EQ(metrics::FindSample(s, "ferry_migrations_completed_total",
                                {{"role", "source"}, {"result", "succeeded"}, {"reason", "none"}}), 1);
  EXPECT_EQ(metrics::FindSample(s, "ferry_agent_metrics_collect_seconds_count"), 3);
}

TEST_F(AgentCollectorTest, NamesFollowPrometheusConventions) {
  ASSERT_TRUE(registry_->Create(Spec("web-1", 0), "u1").ok());
  migrations_.Set({InFlight("m-1", "web-1")});
  for (const prometheus::MetricFamily& f : collector_->Collect()) {
    EXPECT_EQ(f.name.rfind("ferry_", 0), 0u) << f.name;
    const bool counter = f.type == prometheus::MetricType::Counter;
    EXPECT_EQ(counter, f.name.size() > 6 && f.name.substr(f.name.size() - 6) == "_total")
        << f.name;
    EXPECT_EQ(f.name.find("milli"), std::string::npos) << f.name << ": use base units";
    EXPECT_FALSE(f.help.empty()) << f.name;
  }
}

}  // namespace
}  // namespace ferry::agent_metrics
