#include "agent/service/vm_registry.h"

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "agent/service/soft_port.h"
#include "agent/vmm/soft/soft_backend.h"
#include "gtest/gtest.h"

namespace ferry::service {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

v1::VmSpec Spec(const std::string& name, uint64_t memory = 64 * kMiB,
                uint32_t vcpus = 1,
                v1::WorkloadKind kind = v1::WORKLOAD_KIND_UNIFORM,
                uint64_t rate = 500 * 4096, uint64_t working_set = 32 * kMiB) {
  v1::VmSpec spec;
  spec.set_name(name);
  spec.set_memory_bytes(memory);
  spec.set_vcpu_count(vcpus);
  spec.set_backend(v1::VM_BACKEND_AUTO);
  spec.mutable_workload()->set_kind(kind);
  spec.mutable_workload()->set_dirty_rate_bytes_per_s(rate);
  spec.mutable_workload()->set_working_set_bytes(working_set);
  spec.mutable_workload()->set_seed(7);
  return spec;
}

class VmRegistryTest : public ::testing::Test {
 protected:
  VmRegistryTest() : soft_(MakeSoftMemoryPortFactory()) {
    backends_.soft = &soft_;
    backends_.kvm_status = absl::NotFoundError("no /dev/kvm in this test");
    options_.host_name = "test-host";
    options_.capacity = {256 * kMiB, 4};
    options_.sample_interval = absl::ZeroDuration();  // SampleAllNow()
    registry_ = std::make_unique<VmRegistry>(backends_, options_);
  }

  // Waits until the guest of `name` has run more iterations than `after`.
  uint64_t WaitForProgress(const std::string& name, uint64_t after) {
    for (int i = 0; i < 200; ++i) {
      auto vm = registry_->Get(name);
      if (vm.ok() && vm->status().guest().iterations() > after) {
        return vm->status().guest().iterations();
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    ADD_FAILURE() << name << " made no progress past " << after;
    return after;
  }

  vmm::SoftBackend soft_;
  BackendSet backends_;
  RegistryOptions options_;
  std::unique_ptr<VmRegistry> registry_;
};

TEST_F(VmRegistryTest, CreateGetListPauseResumeDelete) {
  auto created = registry_->Create(Spec("web-1"), "uid-1");
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->uid(), "uid-1");
  EXPECT_EQ(created->status().phase(), v1::VM_PHASE_RUNNING);
  EXPECT_EQ(created->status().backend(), v1::VM_BACKEND_SOFT);
  EXPECT_EQ(created->status().host(), "test-host");
  EXPECT_EQ(created->status().workload_seed(), 7u);
  EXPECT_TRUE(created->status().has_started_time());
  WaitForProgress("web-1", 0);

  ASSERT_TRUE(registry_->Create(Spec("web-2"), "").ok());
  std::vector<v1::Vm> all = registry_->List();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].spec().name(), "web-1");
  EXPECT_EQ(all[1].spec().name(), "web-2");
  EXPECT_EQ(all[1].uid().size(), 32u);  // agent-assigned

  auto paused = registry_->Pause("web-1");
  ASSERT_TRUE(paused.ok()) << paused.status();
  EXPECT_EQ(paused->status().phase(), v1::VM_PHASE_PAUSED);
  const uint64_t frozen = paused->status().guest().iterations();
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(registry_->Get("web-1")->status().guest().iterations(), frozen);

  auto resumed = registry_->Resume("web-1");
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->status().phase(), v1::VM_PHASE_RUNNING);
  WaitForProgress("web-1", frozen);

  EXPECT_EQ(registry_->Allocated().vms(), 2u);
  EXPECT_EQ(registry_->Allocated().memory_bytes(), 128 * kMiB);
  ASSERT_TRUE(registry_->Delete("web-1", false).ok());
  EXPECT_EQ(registry_->Get("web-1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry_->Allocated().vms(), 1u);
  EXPECT_EQ(registry_->Allocated().vcpus(), 1u);
}

TEST_F(VmRegistryTest, PauseAndResumeAreIdempotent) {
  ASSERT_TRUE(registry_->Create(Spec("a"), "").ok());
  ASSERT_TRUE(registry_->Resume("a").ok());  // already running
  ASSERT_TRUE(registry_->Pause("a").ok());
  auto again = registry_->Pause("a");        // already paused
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->status().phase(), v1::VM_PHASE_PAUSED);
}

TEST_F(VmRegistryTest, BadNamesAreInvalidArgumentAndChangeNothing) {
  for (const std::string& bad : std::vector<std::string>{
           "", "Web", "web_1", "-web", "web-", "a.b", std::string(64, 'a'),
        std::string("a\0b", 3), "ü"}) {
    auto r = registry_->Create(Spec(bad), "");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_TRUE(ValidateVmName(std::string(63, 'a')).ok());
  EXPECT_TRUE(ValidateVmName("0-a").ok());
  EXPECT_EQ(registry_->Allocated().vms(), 0u);
}

TEST_F(VmRegistryTest, DuplicatesAndRetries) {
  auto first = registry_->Create(Spec("db"), "uid-a");
  ASSERT_TRUE(first.ok());
  // Same name and uid: a retried create returns the same VM.
  auto retry = registry_->Create(Spec("db"), "uid-a");
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->uid(), "uid-a");
  // Another uid or none: ALREADY_EXISTS.
  EXPECT_EQ(registry_->Create(Spec("db"), "uid-b").status().code(),
            absl::StatusCode::kAlreadyExists);
  auto none = registry_->Create(Spec("db"), "");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(absl::StrContains(none.status().message(), "db"));
  EXPECT_EQ(registry_->Allocated().vms(), 1u);
}

TEST_F(VmRegistryTest, ConcurrentCreatesOfOneNameMakeOneVm) {
  std::atomic<int> ok{0}, exists{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      auto r = registry_->Create(Spec("race"), "");
      if (r.ok()) ++ok;
      if (r.status().code() == absl::StatusCode::kAlreadyExists) ++exists;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 1);
  EXPECT_EQ(exists.load(), 3);
  EXPECT_EQ(registry_->Allocated().vms(), 1u);
}

TEST_F(VmRegistryTest, UnknownNamesAreNotFound) {
  EXPECT_EQ(registry_->Get("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry_->Pause("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry_->Resume("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry_->Delete("nope", true).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry_->GetStats("nope", absl::ZeroDuration()).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(VmRegistryTest, ImpossibleSpecsAreInvalidArgument) {
  std::vector<v1::VmSpec> bad = {Spec("m0", 0), Spec("m1", 64 * kMiB + 1),
                                 Spec("v0", 64 * kMiB, 0),
                                 Spec("v9", 64 * kMiB, 1000)};
  v1::VmSpec no_kind = Spec("k0");
  no_kind.mutable_workload()->set_kind(v1::WORKLOAD_KIND_UNSPECIFIED);
  bad.push_back(no_kind);
  v1::VmSpec bad_backend = Spec("b9");
  bad_backend.set_backend(static_cast<v1::VmBackend>(42));
  bad.push_back(bad_backend);
  for (const v1::VmSpec& spec : bad) {
    auto r = registry_->Create(spec, "");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument)
        << spec.ShortDebugString() << " -> " << r.status();
  }
  EXPECT_EQ(registry_->Allocated().vms(), 0u);
}

TEST_F(VmRegistryTest, UnavailableBackendIsFailedPrecondition) {
  v1::VmSpec spec = Spec("k");
  spec.set_backend(v1::VM_BACKEND_KVM);
  auto r = registry_->Create(spec, "");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "no /dev/kvm"))
      << r.status();
}

TEST_F(VmRegistryTest, OverCapacityIsResourceExhaustedWithNumbers) {
  ASSERT_TRUE(registry_->Create(Spec("big", 192 * kMiB), "").ok());
  auto memory = registry_->Create(Spec("more", 128 * kMiB), "");
  ASSERT_EQ(memory.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(memory.status().message(), "128 MiB"))
      << memory.status();
  EXPECT_TRUE(absl::StrContains(memory.status().message(), "64 MiB free"))
      << memory.status();
  auto vcpus = registry_->Create(Spec("wide", 64 * kMiB, 4), "");
  ASSERT_EQ(vcpus.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(vcpus.status().message(), "needs 4 vCPUs"))
      << vcpus.status();
  EXPECT_TRUE(absl::StrContains(vcpus.status().message(), "only 3 free"))
      << vcpus.status();
  // Freed capacity is usable again.
  ASSERT_TRUE(registry_->Delete("big", false).ok());
  EXPECT_TRUE(registry_->Create(Spec("more", 128 * kMiB), "").ok());
}

TEST_F(VmRegistryTest, StatsFollowTheWorkloadsDirtyRate) {
  // 500 pages/s uniformly over 8192 pages: per 1 s window ~485 distinct
  // pages (8192 (1 - e^(-500/8192))).
  ASSERT_TRUE(registry_->Create(Spec("busy"), "").ok());
  ASSERT_TRUE(registry_->Create(Spec("idle", 64 * kMiB, 1,
                                     v1::WORKLOAD_KIND_IDLE, 0, 0), "")
                  .ok());
  auto early = registry_->GetStats("busy", absl::ZeroDuration());
  ASSERT_TRUE(early.ok());
  EXPECT_EQ(early->dirty_rate_pages_per_s(), 0u);  // no window closed yet
  for (int i = 0; i < 3; ++i) {
    absl::SleepFor(absl::Seconds(1));
    registry_->SampleAllNow();
  }
  auto busy = registry_->GetStats("busy", absl::Seconds(3));
  ASSERT_TRUE(busy.ok()) << busy.status();
  EXPECT_EQ(busy->tracking_mode(), v1::DIRTY_TRACKING_MODE_OFF);
  EXPECT_GE(busy->window().seconds(), 2);
  EXPECT_GT(busy->dirty_rate_pages_per_s(), 485 / 2) << busy->ShortDebugString();
  EXPECT_LT(busy->dirty_rate_pages_per_s(), 485 * 3 / 2) << busy->ShortDebugString();
  EXPECT_NEAR(busy->dirty_rate_bytes_per_s(),
              busy->dirty_rate_pages_per_s() * 4096.0, 4096);
  // The working set so far: ~3 windows of ~485 distinct pages, overlapping.
  EXPECT_GT(busy->working_set_bytes(), 400u * 4096) << busy->ShortDebugString();
  EXPECT_LT(busy->working_set_bytes(), 32 * kMiB) << busy->ShortDebugString();
  EXPECT_GT(busy->guest().pages_written(), 0u);
  EXPECT_EQ(busy->selfcheck_errors(), 0u);
  EXPECT_TRUE(busy->has_sample_time());
  EXPECT_GT(registry_->Get("busy")->status().dirty_rate_bytes_per_s(), 0u);

  auto idle = registry_->GetStats("idle", absl::ZeroDuration());
  ASSERT_TRUE(idle.ok());
  EXPECT_LT(idle->dirty_rate_pages_per_s(), 50u) << idle->ShortDebugString();
  EXPECT_EQ(registry_->GetStats("busy", absl::Seconds(-1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(VmRegistryTest, MigrationSeamDestinationSide) {
  v1::VmSpec spec = Spec("moving");
  ASSERT_TRUE(registry_->Reserve(spec, "uid-m", "mig-1").ok());
  ASSERT_TRUE(registry_->Reserve(spec, "uid-m", "mig-1").ok());  // repeat
  EXPECT_EQ(registry_->Reserve(spec, "uid-m", "mig-2").code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry_->Allocated().memory_bytes(), 64 * kMiB);
  auto shell = registry_->Get("moving");
  ASSERT_TRUE(shell.ok());
  EXPECT_EQ(shell->status().phase(), v1::VM_PHASE_INCOMING);
  EXPECT_EQ(shell->status().migration_id(), "mig-1");
  EXPECT_EQ(registry_->Resume("moving").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(registry_->GetStats("moving", absl::ZeroDuration()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(registry_->Activate("moving").code(),
            absl::StatusCode::kFailedPrecondition);  // nothing adopted yet

  vmm::VmOptions paused;
  paused.start_paused = true;
  auto vm = vmm::Vm::Create(spec, soft_, paused);
  ASSERT_TRUE(vm.ok()) << vm.status();
  ASSERT_TRUE(registry_->Adopt(std::move(*vm), "uid-m", "mig-1",
                               absl::FromUnixSeconds(1000)).ok());
  EXPECT_EQ(registry_->Get("moving")->status().phase(), v1::VM_PHASE_INCOMING);
  ASSERT_TRUE(registry_->Activate("moving").ok());
  auto running = registry_->Get("moving");
  EXPECT_EQ(running->status().phase(), v1::VM_PHASE_RUNNING);
  EXPECT_EQ(running->status().migration_id(), "");
  EXPECT_EQ(running->status().started_time().seconds(), 1000);
  WaitForProgress("moving", 0);
}

TEST_F(VmRegistryTest, MigrationSeamSourceSide) {
  ASSERT_TRUE(registry_->Create(Spec("src"), "").ok());
  int calls = 0;
  ASSERT_TRUE(registry_
                  ->AttachMigration("src", "mig-9",
                                    [&calls]() -> std::optional<ExactDirtyStats> {
                                      ++calls;
                                      ExactDirtyStats s;
                                      s.mode = mmu::DirtyTrackingMode::kBitmap;
                                      s.rate.pages_per_sec = 1234;
                                      s.rate.bytes_per_sec = 1234 * 4096;
                                      s.working_set_bytes = 99;
                                      return s;
                                    })
                  .ok());
  EXPECT_EQ(registry_->AttachMigration("src", "mig-10", nullptr).code(),
            absl::StatusCode::kFailedPrecondition);
  auto stats = registry_->GetStats("src", absl::ZeroDuration());
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->tracking_mode(), v1::DIRTY_TRACKING_MODE_BITMAP);
  EXPECT_EQ(stats->dirty_rate_pages_per_s(), 1234u);
  EXPECT_EQ(stats->working_set_bytes(), 99u);
  EXPECT_GT(calls, 0);
  EXPECT_EQ(registry_->Get("src")->status().migration_id(), "mig-9");
  // The user cannot pause, resume or (without force) delete it now.
  EXPECT_EQ(registry_->Pause("src").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(registry_->Resume("src").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(registry_->Delete("src", false).code(),
            absl::StatusCode::kFailedPrecondition);

  auto handle = registry_->Acquire("src");
  ASSERT_TRUE(handle.ok());
  ASSERT_TRUE((*handle)->Pause().ok());  // switchover
  ASSERT_TRUE(registry_->MarkMigrated("src").ok());
  ASSERT_TRUE(registry_->DetachMigration("src", "mig-9").ok());
  EXPECT_EQ(registry_->Get("src")->status().phase(), v1::VM_PHASE_MIGRATED);
  EXPECT_EQ(registry_->Resume("src").status().code(),
            absl::StatusCode::kFailedPrecondition);
  handle->reset();
  auto released = registry_->Release("src");
  ASSERT_TRUE(released.ok());
  EXPECT_NE(*released, nullptr);
  EXPECT_EQ(registry_->Get("src").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry_->Allocated().vms(), 0u);
}

TEST_F(VmRegistryTest, ForcedDeleteIgnoresTheMigration) {
  ASSERT_TRUE(registry_->Create(Spec("f"), "").ok());
  ASSERT_TRUE(registry_->AttachMigration("f", "m", nullptr).ok());
  EXPECT_TRUE(registry_->Delete("f", true).ok());
  EXPECT_EQ(registry_->Allocated().vms(), 0u);
}

TEST_F(VmRegistryTest, ShutdownDestroysEverythingAndRefusesMore) {
  ASSERT_TRUE(registry_->Create(Spec("x"), "").ok());
  ASSERT_TRUE(registry_->Create(Spec("y"), "").ok());
  ASSERT_TRUE(registry_->Pause("y").ok());
  EXPECT_EQ(registry_->Shutdown(), 2);
  EXPECT_EQ(registry_->Shutdown(), 0);
  EXPECT_TRUE(registry_->List().empty());
  EXPECT_EQ(registry_->Create(Spec("z"), "").status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(VmRegistryBackgroundTest, SamplerThreadFillsTheRate) {
  vmm::SoftBackend soft(MakeSoftMemoryPortFactory());
  BackendSet backends;
  backends.soft = &soft;
  RegistryOptions options;
  options.capacity = {256 * kMiB, 2};
  options.sample_interval = absl::Milliseconds(200);
  VmRegistry registry(backends, options);
  ASSERT_TRUE(registry.Create(Spec("bg"), "").ok());
  absl::SleepFor(absl::Milliseconds(900));
  auto stats = registry.GetStats("bg", absl::ZeroDuration());
  ASSERT_TRUE(stats.ok());
  EXPECT_GT(stats->dirty_rate_pages_per_s(), 0u) << stats->ShortDebugString();
}

}  // namespace
}  // namespace ferry::service
