#include "controller/metrics/controller_metrics.h"

#include <stdlib.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/metrics/text_format.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"

namespace ferry::controller {
namespace {

class ControllerMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = getenv("TEST_TMPDIR");
    std::string templ = absl::StrCat(tmp ? tmp : "/tmp", "/ctlmetrics-XXXXXX");
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    absl::StatusOr<std::unique_ptr<Store>> s = Store::Open(templ + "/db");
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
    metrics_ = std::make_unique<ControllerMetrics>(*store_);
  }

  std::vector<metrics::Sample> Scrape() {
    const std::string text = prometheus::TextSerializer().Serialize(metrics_->Collect());
    absl::StatusOr<std::vector<metrics::Sample>> s = metrics::ParseTextFormat(text);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : std::vector<metrics::Sample>{};
  }

  void AddHost(const std::string& name, v1::HostReadiness r, bool cordoned = false) {
    v1::Host h;
    h.set_name(name);
    h.mutable_info()->set_name(name);
    h.set_readiness(r);
    h.set_cordoned(cordoned);
    ASSERT_TRUE(store_->Create(h).ok());
  }
  void AddVm(const std::string& name, v1::VmPhase phase) {
    v1::Vm vm;
    vm.mutable_spec()->set_name(name);
    vm.mutable_spec()->set_memory_bytes(1 << 30);
    vm.mutable_status()->set_phase(phase);
    ASSERT_TRUE(store_->Create(vm).ok());
  }
  void AddMigration(const std::string& id, v1::MigrationPhase phase) {
    v1::Migration m;
    m.set_id(id);
    m.set_vm_name("vm-" + id);
    m.set_phase(phase);
    ASSERT_TRUE(store_->Create(m).ok());
  }

  std::unique_ptr<Store> store_;
  std::unique_ptr<ControllerMetrics> metrics_;
};

TEST_F(ControllerMetricsTest, EmptyStoreHasZeroSeriesForEveryState) {
  std::vector<metrics::Sample> s = Scrape();
  EXPECT_EQ(metrics::FindSample(s, "ferry_controller_hosts", {{"readiness", "not_ready"}}), 0);
  EXPECT_EQ(metrics::FindSample(s, "ferry_controller_vms", {{"phase", "running"}}), 0);
  EXPECT_EQ(metrics::FindSample(s, "ferry_controller_migration_queue_length"), 0);
  EXPECT_EQ(metrics::CountSamples(s, "ferry_controller_hosts"), 3);
}

TEST_F(ControllerMetricsTest, CountsFollowTheStore) {
  AddHost("h1", v1::HOST_READINESS_READY);
  AddHost("h2", v1::HOST_READINESS_READY, /*cordoned=*/true);
  AddHost("h3", v1::HOST_READINESS_NOT_READY);
  AddVm("a", v1::VM_PHASE_RUNNING);
  AddVm("b", v1::VM_PHASE_RUNNING);
  AddVm("c", v1::VM_PHASE_PAUSED);
  AddMigration("m1", v1::MIGRATION_PHASE_PENDING);
  AddMigration("m2", v1::MIGRATION_PHASE_PENDING);
  AddMigration("m3", v1::MIGRATION_PHASE_TRANSFERRING);
  std::vector<metrics::Sample> s = Scrape();
  EXPECT_EQ(metrics::FindSample(s, "ferry_controller_hosts", {{"readiness", "ready"}}), 2);
  EXPECT_EQ(metrics::FindSample(s, "ferry_controller_hosts", {{"readiness", "not_ready"}}), 1);
  EXPECT_EQ(metrics::FindSample(s, "ferry_controller_hosts_cordoned"), 1);
  EXPECT_EQ(metrics::FindSample(s, "ferry_controller_vms", {{"phase", "running"}}), 2);
  EXPECT_EQ(metrics::FindSample(s, "ferry_controller_vms", {{"phase", "paused"}}), 1);
  EXPECT_EQ(metrics::FindSample(s, "ferry_controller_migrations", {{"phase", "transferring"}}), 1);
  EXPECT_EQ(metrics::FindSample(s, "ferry_controller_migration_queue_length"), 2);

  // A deleted host is gone on the next scrape (computed from the store).
  ASSERT_TRUE(store_->Delete<v1::Host>("h3").ok());
  s = Scrape();
  EXPECT_EQ(metrics::FindSample(s, "ferry_controller_hosts", {{"readiness", "not_ready"}}), 0);
}

TEST_F(ControllerMetricsTest, MoreRecordsThanOnePage) {
  for (int i = 0; i < kMaxPageSize + 5; ++i) AddVm(absl::StrCat("vm-", i), v1::VM_PHASE_RUNNING);
  EXPECT_EQ(metrics::FindSample(Scrape(), "ferry_controller_vms", {{"phase", "running"}}),
            kMaxPageSize + 5);
}

TEST_F(ControllerMetricsTest, RequestsAndCommitLatency) {
  metrics_->RecordRequest("/ferry.v1.ControllerService/CreateVm", 0, absl::Milliseconds(3));
  metrics_->RecordRequest("/ferry.v1.ControllerService/CreateVm", 6, absl::Milliseconds(1));
  metrics_->RecordRequest("/ferry.v1.ControllerService/GetVm", 99, absl::Milliseconds(200));
  metrics_->ObserveStoreCommit(absl::Milliseconds(4));
  std::vector<metrics::Sample> s = Scrape();
  const std::string create = "/ferry.v1.ControllerService/CreateVm";
  EXPECT_EQ(metrics::FindSample(s, "ferry_controller_api_requests_total",
                                {{"method", create}, {"code", "OK"}}), 1);
  EXPECT_EQ(metrics::FindSample(s, "ferry_controller_api_requests_total",
                                {{"method", create}, {"code", "ALREADY_EXISTS"}}), 1);
  EXPECT_EQ(metrics::FindSample(s, "ferry_controller_api_requests_total",
                                {{"method", "/ferry.v1.ControllerService/GetVm"}, {"code", "UNKNOWN"}}), 1);
  EXPECT_EQ(metrics::FindSample(s, "ferry_controller_api_request_duration_seconds_count",
                                {{"method", create}}), 2);
  EXPECT_EQ(metrics::FindSample(s, "ferry_controller_api_request_duration_seconds_bucket",
                                {{"method", create}, {"le", "0.0025"}}), 1);
  EXPECT_EQ(metrics::FindSample(s, "ferry_controller_store_commit_seconds_count"), 1);
  EXPECT_EQ(metrics::FindSample(s, "ferry_controller_store_commit_seconds_bucket",
                                {{"le", "0.005"}}), 1);
}

}  // namespace
}  // namespace ferry::controller
