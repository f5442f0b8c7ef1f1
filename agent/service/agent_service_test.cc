// AgentService over a real in-process gRPC server (port 0, insecure
// channel): every lifecycle call, every error path, and the unwired
// migration calls.
#include "agent/service/agent_service.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/service/migration_hooks.h"
#include "agent/service/server.h"
#include "agent/service/status_conversion.h"
#include "agent/service/soft_port.h"
#include "agent/service/vm_registry.h"
#include "agent/vmm/soft/soft_backend.h"
#include "gtest/gtest.h"
#include "proto/agent.grpc.pb.h"

namespace ferry::service {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

v1::VmSpec Spec(const std::string& name, uint64_t memory = 64 * kMiB,
                uint32_t vcpus = 1) {
  v1::VmSpec spec;
  spec.set_name(name);
  spec.set_memory_bytes(memory);
  spec.set_vcpu_count(vcpus);
  spec.mutable_workload()->set_kind(v1::WORKLOAD_KIND_UNIFORM);
  spec.mutable_workload()->set_dirty_rate_bytes_per_s(500 * 4096);
  spec.mutable_workload()->set_working_set_bytes(32 * kMiB);
  return spec;
}

// Finishes a WatchMigration stream at once with a status.
class FinishedWriteReactor
    : public grpc::ServerWriteReactor<v1::MigrationProgress> {
 public:
  explicit FinishedWriteReactor(const absl::Status& status) {
    Finish(ToGrpcStatus(status));
  }
  void OnDone() override { delete this; }
};

// The status a fake hook returns: names the hook, so a test can tell that
// each RPC reached its own one.
absl::Status Unwired(absl::string_view method) {
  return absl::UnimplementedError(absl::StrCat("fake hooks: ", method));
}

// Fake migration engine: records the cancels a forced delete sends, blocks
// PrepareIncoming on demand, and answers every other hook with Unwired().
class RecordingHooks : public MigrationHooks {
 public:
  absl::StatusOr<v1::StartOutgoingResponse> StartOutgoing(
      const v1::StartOutgoingRequest&) override {
    return Unwired("StartOutgoing");
  }
  absl::StatusOr<v1::FinishIncomingResponse> FinishIncoming(
      const v1::FinishIncomingRequest&) override {
    return Unwired("FinishIncoming");
  }
  absl::StatusOr<v1::ConfirmOutgoingResponse> ConfirmOutgoing(
      const v1::ConfirmOutgoingRequest&) override {
    return Unwired("ConfirmOutgoing");
  }
  absl::StatusOr<v1::AgentMigration> GetMigration(
      const v1::AgentGetMigrationRequest&) override {
    return Unwired("GetMigration");
  }
  absl::StatusOr<v1::AgentListMigrationsResponse> ListMigrations(
      const v1::AgentListMigrationsRequest&) override {
    return Unwired("ListMigrations");
  }
  grpc::ServerWriteReactor<v1::MigrationProgress>* WatchMigration(
      grpc::CallbackServerContext*,
      const v1::AgentWatchMigrationRequest*) override {
    return new FinishedWriteReactor(Unwired("WatchMigration"));
  }
  void FillHostInfo(v1::HostInfo* info) override {
    info->set_min_protocol_version(0);  // no data plane behind the fake
    info->set_max_protocol_version(0);
  }
  void Shutdown() override {}

  absl::StatusOr<v1::AgentCancelMigrationResponse> CancelMigration(
      const v1::AgentCancelMigrationRequest& request) override {
    absl::MutexLock lock(&mu_);
    cancelled_.push_back(request.migration_id());
    return v1::AgentCancelMigrationResponse();
  }
  // PrepareIncoming blocks until Release(): a call in flight.
  absl::StatusOr<v1::PrepareIncomingResponse> PrepareIncoming(
      const v1::PrepareIncomingRequest&) override {
    absl::MutexLock lock(&mu_);
    entered_ = true;
    mu_.Await(absl::Condition(&released_));
    return v1::PrepareIncomingResponse();
  }
  void WaitEntered() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&entered_));
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    released_ = true;
  }
  std::vector<std::string> cancelled() {
    absl::MutexLock lock(&mu_);
    return cancelled_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> cancelled_ ABSL_GUARDED_BY(mu_);
  bool entered_ ABSL_GUARDED_BY(mu_) = false;
  bool released_ ABSL_GUARDED_BY(mu_) = false;
};

class AgentServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backends_.soft = &soft_;
    backends_.kvm_status = absl::NotFoundError("no /dev/kvm here");
    RegistryOptions options;
    options.host_name = "agent-test";
    options.capacity = {256 * kMiB, 4};
    options.sample_interval = absl::Milliseconds(250);
    registry_ = std::make_unique<VmRegistry>(backends_, options);
    v1::HostInfo info;
    info.set_name("agent-test");
    info.add_backends(v1::VM_BACKEND_SOFT);
    info.set_instance_id("abc");
    (*info.mutable_labels())["zone"] = "z1";
    service_ = std::make_unique<AgentServiceImpl>(*registry_, hooks_, info);
    ServerOptions server_options;
    server_options.listen = "127.0.0.1:0";
    server_options.services = {service_.get()};
    auto server = GrpcServer::Start(server_options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    service_->SetAgentAddress(server_->address());
    stub_ = v1::AgentService::NewStub(grpc::CreateChannel(
        server_->address(), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    if (server_) server_->Shutdown(absl::Seconds(1));
    registry_->Shutdown();
  }

  grpc::Status Create(const v1::VmSpec& spec, v1::Vm* vm = nullptr,
                      const std::string& uid = "") {
    grpc::ClientContext ctx;
    v1::AgentCreateVmRequest req;
    *req.mutable_spec() = spec;
    req.set_uid(uid);
    v1::Vm scratch;
    return stub_->CreateVm(&ctx, req, vm ? vm : &scratch);
  }
  grpc::Status Get(const std::string& name, v1::Vm* vm) {
    grpc::ClientContext ctx;
    v1::AgentGetVmRequest req;
    req.set_name(name);
    return stub_->GetVm(&ctx, req, vm);
  }
  grpc::Status Pause(const std::string& name, v1::Vm* vm = nullptr) {
    grpc::ClientContext ctx;
    v1::PauseVmRequest req;
    req.set_name(name);
    v1::Vm scratch;
    return stub_->PauseVm(&ctx, req, vm ? vm : &scratch);
  }
  grpc::Status Resume(const std::string& name, v1::Vm* vm = nullptr) {
    grpc::ClientContext ctx;
    v1::ResumeVmRequest req;
    req.set_name(name);
    v1::Vm scratch;
    return stub_->ResumeVm(&ctx, req, vm ? vm : &scratch);
  }
  grpc::Status Delete(const std::string& name, bool force = false) {
    grpc::ClientContext ctx;
    v1::AgentDeleteVmRequest req;
    req.set_name(name);
    req.set_force(force);
    v1::AgentDeleteVmResponse resp;
    return stub_->DeleteVm(&ctx, req, &resp);
  }
  grpc::Status Stats(const std::string& name, v1::VmStats* stats,
                     int64_t window_s = 0) {
    grpc::ClientContext ctx;
    v1::GetVmStatsRequest req;
    req.set_name(name);
    req.mutable_window()->set_seconds(window_s);
    return stub_->GetVmStats(&ctx, req, stats);
  }
  std::vector<v1::Vm> List() {
    grpc::ClientContext ctx;
    v1::AgentListVmsResponse resp;
    EXPECT_TRUE(stub_->ListVms(&ctx, v1::AgentListVmsRequest(), &resp).ok());
    return {resp.vms().begin(), resp.vms().end()};
  }
  v1::HostInfo Host() {
    grpc::ClientContext ctx;
    v1::HostInfo info;
    EXPECT_TRUE(stub_->GetHostInfo(&ctx, v1::GetHostInfoRequest(), &info).ok());
    return info;
  }

  vmm::SoftBackend soft_{MakeSoftMemoryPortFactory()};
  BackendSet backends_;
  RecordingHooks hooks_;
  std::unique_ptr<VmRegistry> registry_;
  std::unique_ptr<AgentServiceImpl> service_;
  std::unique_ptr<GrpcServer> server_;
  std::unique_ptr<v1::AgentService::Stub> stub_;
};

TEST_F(AgentServiceTest, Lifecycle) {
  v1::Vm vm;
  ASSERT_TRUE(Create(Spec("vm-a"), &vm, "uid-a").ok());
  EXPECT_EQ(vm.spec().name(), "vm-a");
  EXPECT_EQ(vm.uid(), "uid-a");
  EXPECT_EQ(vm.status().phase(), v1::VM_PHASE_RUNNING);
  EXPECT_EQ(vm.status().host(), "agent-test");
  EXPECT_NE(vm.status().workload_seed(), 0u);

  // The guest runs: its counters advance between two GetVm calls.
  v1::Vm first, later;
  ASSERT_TRUE(Get("vm-a", &first).ok());
  absl::SleepFor(absl::Milliseconds(300));
  ASSERT_TRUE(Get("vm-a", &later).ok());
  EXPECT_GT(later.status().guest().iterations(),
            first.status().guest().iterations());
  EXPECT_GT(later.status().guest().pages_written(), 0u);

  ASSERT_EQ(List().size(), 1u);
  v1::Vm paused;
  ASSERT_TRUE(Pause("vm-a", &paused).ok());
  EXPECT_EQ(paused.status().phase(), v1::VM_PHASE_PAUSED);
  ASSERT_TRUE(Pause("vm-a").ok());  // idempotent
  v1::Vm resumed;
  ASSERT_TRUE(Resume("vm-a", &resumed).ok());
  EXPECT_EQ(resumed.status().phase(), v1::VM_PHASE_RUNNING);
  ASSERT_TRUE(Delete("vm-a").ok());
  EXPECT_TRUE(List().empty());
  EXPECT_EQ(Get("vm-a", &vm).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(AgentServiceTest, EveryErrorPathHasItsCodeAndChangesNothing) {
  ASSERT_TRUE(Create(Spec("keep")).ok());
  const v1::HostResources before = Host().allocated();

  grpc::ClientContext ctx;
  v1::Vm scratch;
  EXPECT_EQ(stub_->CreateVm(&ctx, v1::AgentCreateVmRequest(), &scratch)
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);  // no spec
  EXPECT_EQ(Create(Spec("Bad_Name")).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Create(Spec("keep")).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(Create(Spec("zero", 0)).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Create(Spec("many", 64 * kMiB, 4096)).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  grpc::Status over = Create(Spec("huge", 1024 * kMiB));
  EXPECT_EQ(over.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(absl::StrContains(over.error_message(), "1 GiB")) << over.error_message();
  v1::VmSpec kvm = Spec("kvm");
  kvm.set_backend(v1::VM_BACKEND_KVM);
  EXPECT_EQ(Create(kvm).error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  v1::Vm vm;
  v1::VmStats stats;
  EXPECT_EQ(Get("ghost", &vm).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Pause("ghost").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Resume("ghost").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Delete("ghost").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Stats("ghost", &stats).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Get("", &vm).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Pause("UPPER").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Delete(std::string(100, 'x')).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Stats("keep", &stats, -5).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Stats("keep", &stats, 86400).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  const v1::HostResources after = Host().allocated();
  EXPECT_EQ(after.SerializeAsString(), before.SerializeAsString());
  ASSERT_EQ(List().size(), 1u);
  ASSERT_TRUE(Get("keep", &vm).ok());
  EXPECT_EQ(vm.status().phase(), v1::VM_PHASE_RUNNING);
}

// Each migration RPC goes to its own hook, and the hook's status comes back
// with the right gRPC code and message (also for the streaming one).
TEST_F(AgentServiceTest, MigrationCallsReachTheirHooks) {
  auto check = [](const grpc::Status& s, const std::string& method) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED);
    EXPECT_EQ(s.error_message(), "fake hooks: " + method);
  };
  {
    grpc::ClientContext c;
    v1::StartOutgoingResponse r;
    check(stub_->StartOutgoing(&c, v1::StartOutgoingRequest(), &r), "StartOutgoing");
  }
  {
    grpc::ClientContext c;
    v1::FinishIncomingResponse r;
    check(stub_->FinishIncoming(&c, v1::FinishIncomingRequest(), &r), "FinishIncoming");
  }
  {
    grpc::ClientContext c;
    v1::ConfirmOutgoingResponse r;
    check(stub_->ConfirmOutgoing(&c, v1::ConfirmOutgoingRequest(), &r), "ConfirmOutgoing");
  }
  {
    grpc::ClientContext c;
    v1::AgentMigration r;
    check(stub_->GetMigration(&c, v1::AgentGetMigrationRequest(), &r), "GetMigration");
  }
  {
    grpc::ClientContext c;
    v1::AgentListMigrationsResponse r;
    check(stub_->ListMigrations(&c, v1::AgentListMigrationsRequest(), &r), "ListMigrations");
  }
  {
    grpc::ClientContext c;
    auto reader = stub_->WatchMigration(&c, v1::AgentWatchMigrationRequest());
    v1::MigrationProgress p;
    EXPECT_FALSE(reader->Read(&p));
    check(reader->Finish(), "WatchMigration");
  }
  // CancelMigration goes to the hooks too (recorded by this fixture's).
  grpc::ClientContext c;
  v1::AgentCancelMigrationRequest req;
  req.set_migration_id("m-1");
  v1::AgentCancelMigrationResponse r;
  EXPECT_TRUE(stub_->CancelMigration(&c, req, &r).ok());
  EXPECT_EQ(hooks_.cancelled(), std::vector<std::string>{"m-1"});
}

TEST_F(AgentServiceTest, ForcedDeleteCancelsTheMigrationFirst) {
  ASSERT_TRUE(Create(Spec("mig")).ok());
  ASSERT_TRUE(registry_->AttachMigration("mig", "m-7", nullptr).ok());
  EXPECT_EQ(Delete("mig").error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Pause("mig").error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(hooks_.cancelled().empty());
  ASSERT_TRUE(Delete("mig", /*force=*/true).ok());
  EXPECT_EQ(hooks_.cancelled(), std::vector<std::string>{"m-7"});
  EXPECT_TRUE(List().empty());
}

TEST_F(AgentServiceTest, HostInfo) {
  ASSERT_TRUE(Create(Spec("h", 128 * kMiB, 2)).ok());
  v1::HostInfo info = Host();
  EXPECT_EQ(info.name(), "agent-test");
  EXPECT_EQ(info.agent_address(), server_->address());
  EXPECT_EQ(info.migration_address(), server_->address());
  EXPECT_EQ(info.capacity().memory_bytes(), 256 * kMiB);
  EXPECT_EQ(info.capacity().vcpus(), 4u);
  EXPECT_EQ(info.allocated().memory_bytes(), 128 * kMiB);
  EXPECT_EQ(info.allocated().vcpus(), 2u);
  EXPECT_EQ(info.allocated().vms(), 1u);
  EXPECT_EQ(info.instance_id(), "abc");
  EXPECT_EQ(info.labels().at("zone"), "z1");
  ASSERT_EQ(info.backends_size(), 1);
  EXPECT_EQ(info.backends(0), v1::VM_BACKEND_SOFT);
  EXPECT_EQ(info.max_protocol_version(), 0u);  // from the fake hooks
}

TEST_F(AgentServiceTest, StatsReflectTheRunningWorkload) {
  ASSERT_TRUE(Create(Spec("busy")).ok());
  absl::SleepFor(absl::Milliseconds(2600));  // ~10 windows of 250 ms
  v1::VmStats stats;
  ASSERT_TRUE(Stats("busy", &stats, 2).ok());
  EXPECT_EQ(stats.name(), "busy");
  // 500 pages/s uniformly over 8192 pages; a 250 ms window folds few
  // rewrites together (~496 distinct pages/s). Sampling error ~15%.
  EXPECT_GT(stats.dirty_rate_pages_per_s(), 250u) << stats.ShortDebugString();
  EXPECT_LT(stats.dirty_rate_pages_per_s(), 750u) << stats.ShortDebugString();
  EXPECT_GE(stats.window().seconds(), 1);
  EXPECT_GT(stats.working_set_bytes(), 0u);
  EXPECT_GT(stats.guest().pages_written(), 500u);
  EXPECT_EQ(stats.selfcheck_errors(), 0u);
}

TEST_F(AgentServiceTest, DrainWaitsForCallsInFlightThenRefusesNewOnes) {
  std::thread caller([&] {
    grpc::ClientContext c;
    v1::PrepareIncomingResponse r;
    EXPECT_TRUE(stub_->PrepareIncoming(&c, v1::PrepareIncomingRequest(), &r).ok());
  });
  hooks_.WaitEntered();
  EXPECT_FALSE(service_->Drain(absl::Now() + absl::Milliseconds(100)));
  v1::Vm vm;
  grpc::Status refused = Get("any", &vm);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(absl::StrContains(refused.error_message(), "shutting down"));
  hooks_.Release();
  EXPECT_TRUE(service_->Drain(absl::Now() + absl::Seconds(5)));
  caller.join();
  // With nothing in flight the server stops at once.
  const absl::Time start = absl::Now();
  server_->Shutdown(absl::ZeroDuration());
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

// Random, mostly malformed traffic from several threads: the daemon stays up
// and consistent.
TEST_F(AgentServiceTest, GarbageTrafficNeverCrashes) {
  ASSERT_TRUE(Create(Spec("stable")).ok());
  std::vector<std::thread> threads;
  std::atomic<int> calls{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(1234 + t);  // seeded (STYLE.md)
      const std::vector<std::string> names = {"", "stable", "x", "Nope!",
                                              std::string(70, 'a'), "t-vm"};
      const absl::Time end = absl::Now() + absl::Seconds(1);
      while (absl::Now() < end) {
        const std::string& name = names[rng() % names.size()];
        v1::Vm vm;
        v1::VmStats stats;
        switch (rng() % 6) {
          case 0: {
            v1::VmSpec spec = Spec(name, (rng() % 4) * 32 * kMiB, rng() % 3);
            Create(spec, &vm);
            break;
          }
          case 1: Get(name, &vm); break;
          case 2: if (name != "stable") Pause(name); break;
          case 3: if (name != "stable") Resume(name); break;
          case 4: if (name != "stable") Delete(name, rng() % 2); break;
          case 5: Stats(name, &stats, static_cast<int64_t>(rng() % 5) - 1); break;
        }
        ++calls;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_GT(calls.load(), 20);
  v1::Vm vm;
  ASSERT_TRUE(Get("stable", &vm).ok());
  EXPECT_EQ(vm.status().phase(), v1::VM_PHASE_RUNNING);
  EXPECT_EQ(vm.status().selfcheck_errors(), 0u);
}

}  // namespace
}  // namespace ferry::service
