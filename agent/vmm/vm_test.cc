// Vm over every backend: the soft backend (runs anywhere) and KVM (skips,
// with the reason, where /dev/kvm is missing). Each test checks the guest's
// own verdict (selfcheck_errors) and the host's (wl_check_all).
#include "agent/vmm/vm.h"

#include <dirent.h>

#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/vmm/kvm/kvm_backend.h"
#include "agent/vmm/soft/soft_backend.h"
#include "agent/vmm/soft/softmmu_port.h"
#include "gtest/gtest.h"
#include "mmu/dirty_set.h"

namespace ferry::vmm {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

struct BackendCase {
  std::string name;
  std::function<std::unique_ptr<Backend>()> make;
};

std::vector<BackendCase> AllBackends() {
  return {
      {"soft",
       [] {
         return std::make_unique<SoftBackend>(
             SoftMmuPortFactory());
       }},
      {"kvm", [] { return std::make_unique<KvmBackend>(); }},
  };
}

int CountDir(const char* path) {
  DIR* dir = opendir(path);
  if (dir == nullptr) return -1;
  int n = 0;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n;  // includes the DIR's own fd; equal before and after
}

v1::VmSpec Spec(v1::WorkloadKind kind, uint32_t vcpus,
                uint64_t rate_bytes_per_s = 40 * kMiB) {
  v1::VmSpec spec;
  spec.set_name("test-vm");
  spec.set_memory_bytes(64 * kMiB);
  spec.set_vcpu_count(vcpus);
  spec.mutable_workload()->set_kind(kind);
  spec.mutable_workload()->set_working_set_bytes(16 * kMiB);
  spec.mutable_workload()->set_dirty_rate_bytes_per_s(rate_bytes_per_s);
  spec.mutable_workload()->set_seed(12345);
  return spec;
}

// Waits until every vCPU's counters moved past `floor` (or times out).
bool WaitForProgress(const Vm& vm, const GuestTotals& floor, bool writes,
                     absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    GuestTotals now = vm.Stats().guest;
    bool all = true;
    for (size_t i = 0; i < now.vcpus.size(); ++i) {
      const VcpuCounters& was = i < floor.vcpus.size() ? floor.vcpus[i]
                                                       : VcpuCounters{};
      const VcpuCounters& c = now.vcpus[i];
      const bool moved = writes ? c.pages_written > was.pages_written
                                : c.iterations > was.iterations;
      all = all && c.initialised && moved;
    }
    if (all) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return false;
}

std::unique_ptr<mmu::GuestMemory> CopyMemory(const mmu::GuestMemory& from) {
  auto layout = mmu::DefaultLayout(from.total_bytes());
  EXPECT_TRUE(layout.ok()) << layout.status();
  auto to = mmu::GuestMemory::Create(*layout);
  EXPECT_TRUE(to.ok()) << to.status();
  for (const mmu::Memslot& s : from.slots()) {
    auto dst = (*to)->Range(s.gpa, s.size);
    EXPECT_TRUE(dst.ok()) << dst.status();
    std::memcpy(dst->data(), s.hva, s.size);
  }
  return std::move(*to);
}

void ExpectGuestClean(const Vm& vm) {
  VmStats stats = vm.Stats();
  EXPECT_EQ(stats.guest.selfcheck_errors, 0u);
  EXPECT_NE(stats.phase, v1::VM_PHASE_FAILED) << stats.message;
  auto check = vm.CheckGuestMemory();
  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_EQ(check->mismatches, 0u) << "first bad page " << check->first_bad_page;
}

class VmTest : public ::testing::TestWithParam<BackendCase> {
 protected:
  void SetUp() override {
    backend_ = GetParam().make();
    absl::Status probe = backend_->Probe();
    if (!probe.ok()) GTEST_SKIP() << GetParam().name << ": " << probe;
  }

  std::unique_ptr<Vm> MakeVm(const v1::VmSpec& spec) {
    auto vm = Vm::Create(spec, *backend_);
    EXPECT_TRUE(vm.ok()) << vm.status();
    return vm.ok() ? std::move(*vm) : nullptr;
  }

  std::unique_ptr<Backend> backend_;
};

TEST_P(VmTest, EveryWorkloadAdvancesItsStatusPage) {
  for (v1::WorkloadKind kind :
       {v1::WORKLOAD_KIND_IDLE, v1::WORKLOAD_KIND_UNIFORM,
        v1::WORKLOAD_KIND_HOTCOLD, v1::WORKLOAD_KIND_SEQUENTIAL,
        v1::WORKLOAD_KIND_MIXED}) {
    SCOPED_TRACE(v1::WorkloadKind_Name(kind));
    v1::VmSpec spec = Spec(kind, 2);
    if (kind == v1::WORKLOAD_KIND_MIXED) {
      auto* o = spec.mutable_workload()->add_vcpu_overrides();
      o->set_vcpu_index(0);
      o->mutable_workload()->set_kind(v1::WORKLOAD_KIND_SEQUENTIAL);
      o = spec.mutable_workload()->add_vcpu_overrides();
      o->set_vcpu_index(1);
      o->mutable_workload()->set_kind(v1::WORKLOAD_KIND_HOTCOLD);
    }
    std::unique_ptr<Vm> vm = MakeVm(spec);
    ASSERT_NE(vm, nullptr);
    const bool writes = kind != v1::WORKLOAD_KIND_IDLE;
    EXPECT_TRUE(WaitForProgress(*vm, {}, writes)) << vm->Stats().message;
    ASSERT_TRUE(vm->Pause().ok());
    ExpectGuestClean(*vm);
    if (!writes) EXPECT_EQ(vm->Stats().guest.pages_written, 0u);
  }
}

class SaveRestoreTest
    : public ::testing::TestWithParam<std::tuple<BackendCase, uint32_t>> {};

TEST_P(SaveRestoreTest, CountersContinueInAFreshVm) {
  std::unique_ptr<Backend> backend = std::get<0>(GetParam()).make();
  if (absl::Status p = backend->Probe(); !p.ok()) GTEST_SKIP() << p;
  const uint32_t vcpus = std::get<1>(GetParam());
  auto vm = Vm::Create(Spec(v1::WORKLOAD_KIND_UNIFORM, vcpus), *backend);
  ASSERT_TRUE(vm.ok()) << vm.status();
  ASSERT_TRUE(WaitForProgress(**vm, {}, true));
  ASSERT_TRUE((*vm)->Pause().ok());
  auto state = (*vm)->Save();
  ASSERT_TRUE(state.ok()) << state.status();
  const GuestTotals saved = (*vm)->Stats().guest;
  std::unique_ptr<mmu::GuestMemory> copy = CopyMemory((*vm)->memory());
  vm->reset();  // the source is gone; only state + memory remain

  auto restored = Vm::Restore(*state, std::move(copy), *backend);
  ASSERT_TRUE(restored.ok()) << restored.status();
  GuestTotals first = (*restored)->Stats().guest;
  for (uint32_t i = 0; i < vcpus; ++i) {
    EXPECT_GE(first.vcpus[i].pages_written, saved.vcpus[i].pages_written);
  }
  EXPECT_TRUE(WaitForProgress(**restored, saved, true));
  ASSERT_TRUE((*restored)->Pause().ok());
  ExpectGuestClean(**restored);
  EXPECT_EQ((*restored)->spec().workload().seed(), 12345u);
}

TEST_P(VmTest, SurvivesAThousandPauseResumeCycles) {
  std::unique_ptr<Vm> vm = MakeVm(Spec(v1::WORKLOAD_KIND_UNIFORM, 2));
  ASSERT_NE(vm, nullptr);
  ASSERT_TRUE(WaitForProgress(*vm, {}, true));
  const absl::Time start = absl::Now();
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(vm->Pause().ok()) << "cycle " << i;
    ASSERT_EQ(vm->phase(), v1::VM_PHASE_PAUSED);
    ASSERT_TRUE(vm->Resume().ok()) << "cycle " << i;
    if (i % 100 == 99) {  // the guest really runs between the cycles
      ASSERT_TRUE(WaitForProgress(*vm, vm->Stats().guest, true)) << i;
    }
  }
  const GuestTotals before = vm->Stats().guest;
  EXPECT_TRUE(WaitForProgress(*vm, before, true));
  ASSERT_TRUE(vm->Pause().ok());
  ExpectGuestClean(*vm);
  EXPECT_EQ(vm->Stats().pause_count, 1001u);
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
}

TEST_P(VmTest, DirtyTrackerSeesTheGuestWrite) {
  std::unique_ptr<Vm> vm = MakeVm(Spec(v1::WORKLOAD_KIND_SEQUENTIAL, 1));
  ASSERT_NE(vm, nullptr);
  auto tracker = vm->CreateDirtyTracker(mmu::DirtyTrackingMode::kUnspecified);
  if (absl::IsUnimplemented(tracker.status())) {
    GTEST_SKIP() << tracker.status();
  }
  ASSERT_TRUE(tracker.ok()) << tracker.status();
  ASSERT_TRUE((*tracker)->Start(vm->memory().slots()).ok());
  ASSERT_TRUE(WaitForProgress(*vm, vm->Stats().guest, true));
  mmu::DirtySet set = mmu::DirtySet::ForSlots(vm->memory().slots());
  auto stats = (*tracker)->Collect(&set);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_GT(stats->pages, 0u);
  EXPECT_TRUE((*tracker)->Stop().ok());
}

TEST_P(VmTest, RejectsBadSpecsAndLeaksNothing) {
  const int fds = CountDir("/proc/self/fd");
  const int threads = CountDir("/proc/self/task");
  struct Case {
    std::string field;
    std::function<void(v1::VmSpec&)> edit;
  };
  const std::vector<Case> cases = {
      {"memory_bytes", [](v1::VmSpec& s) { s.set_memory_bytes(0); }},
      {"memory_bytes", [](v1::VmSpec& s) { s.set_memory_bytes(64 * kMiB + 1); }},
      {"memory_bytes", [](v1::VmSpec& s) { s.set_memory_bytes(8 * kMiB); }},
      {"vcpu_count", [](v1::VmSpec& s) { s.set_vcpu_count(0); }},
      {"vcpu_count", [](v1::VmSpec& s) { s.set_vcpu_count(100000); }},
      {"workload.kind",
       [](v1::VmSpec& s) {
         s.mutable_workload()->set_kind(static_cast<v1::WorkloadKind>(42));
       }},
      {"workload.working_set_bytes",
       [](v1::VmSpec& s) {
         s.mutable_workload()->set_working_set_bytes(1024 * kMiB);
       }},
  };
  for (const Case& c : cases) {
    v1::VmSpec spec = Spec(v1::WORKLOAD_KIND_UNIFORM, 1);
    c.edit(spec);
    auto vm = Vm::Create(spec, *backend_);
    ASSERT_FALSE(vm.ok()) << c.field;
    EXPECT_TRUE(absl::IsInvalidArgument(vm.status())) << vm.status();
    EXPECT_NE(vm.status().message().find(c.field), std::string::npos)
        << vm.status();
  }
  {  // and a good VM leaves nothing behind either
    std::unique_ptr<Vm> vm = MakeVm(Spec(v1::WORKLOAD_KIND_UNIFORM, 2));
    ASSERT_NE(vm, nullptr);
    ASSERT_TRUE(WaitForProgress(*vm, {}, true));
  }
  EXPECT_EQ(CountDir("/proc/self/fd"), fds);
  EXPECT_EQ(CountDir("/proc/self/task"), threads);
}

// Rate of guest page writes over `d`.
double WriteRate(Vm& vm, absl::Duration d) {
  const uint64_t before = vm.Stats().guest.pages_written;
  const absl::Time t0 = absl::Now();
  absl::SleepFor(d);
  const uint64_t after = vm.Stats().guest.pages_written;
  return (after - before) / absl::ToDoubleSeconds(absl::Now() - t0);
}

TEST_P(VmTest, ThrottleTakesVcpuTimeAwayInProportion) {
  // Flat out (rate 0): the write rate is bound by vCPU time.
  std::unique_ptr<Vm> vm = MakeVm(Spec(v1::WORKLOAD_KIND_UNIFORM, 1, 0));
  ASSERT_NE(vm, nullptr);
  ASSERT_TRUE(WaitForProgress(*vm, {}, true));
  EXPECT_EQ(vm->SetThrottle(100).code(), absl::StatusCode::kInvalidArgument);
  const double full = WriteRate(*vm, absl::Milliseconds(300));
  ASSERT_GT(full, 0);
  ASSERT_TRUE(vm->SetThrottle(50).ok());
  const double half = WriteRate(*vm, absl::Milliseconds(300));
  ASSERT_TRUE(vm->SetThrottle(90).ok());
  const double ninety = WriteRate(*vm, absl::Milliseconds(300));
  EXPECT_EQ(vm->Stats().throttle_percent, 90u);
  EXPECT_GT(vm->Stats().throttle_sleeps, 10u);
  // Pause/Resume work while throttled, and the throttle is not in memory.
  ASSERT_TRUE(vm->Pause().ok());
  ExpectGuestClean(*vm);
  ASSERT_TRUE(vm->Resume().ok());
  ASSERT_TRUE(vm->SetThrottle(0).ok());
  const double again = WriteRate(*vm, absl::Milliseconds(300));
  std::printf("throttle: 0%% %.0f pages/s, 50%% %.0f, 90%% %.0f, off %.0f\n",
              full, half, ninety, again);
  // Loose bounds: other tests share the host's 2 CPUs, so the unthrottled
  // rate is taken as the better of the two samples.
  const double base = std::max(full, again);
  EXPECT_GT(half, 0.2 * base);
  EXPECT_LT(half, 0.8 * base);
  EXPECT_LT(ninety, 0.3 * base);
  EXPECT_LT(ninety, half);
  EXPECT_GT(ninety, 0.0);
}

TEST_P(VmTest, IncomingShellLoadsStateOnce) {
  Backend* backend = backend_.get();
  std::unique_ptr<Vm> src = MakeVm(Spec(v1::WORKLOAD_KIND_UNIFORM, 2));
  ASSERT_NE(src, nullptr);
  ASSERT_TRUE(WaitForProgress(*src, {}, true));
  auto layout = mmu::DefaultLayout(src->memory().total_bytes());
  ASSERT_TRUE(layout.ok());
  auto memory = mmu::GuestMemory::Create(*layout);
  ASSERT_TRUE(memory.ok());
  auto shell = Vm::CreateIncoming(src->spec(), std::move(*memory), *backend);
  ASSERT_TRUE(shell.ok()) << shell.status();
  EXPECT_EQ((*shell)->Resume().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(src->Pause().ok());
  auto state = src->Save();
  ASSERT_TRUE(state.ok()) << state.status();
  for (const mmu::Memslot& s : src->memory().slots()) {
    ASSERT_TRUE((*shell)->memory().Write(s.gpa, {s.hva, s.size}).ok());
  }
  ASSERT_TRUE((*shell)->LoadState(*state).ok());
  EXPECT_EQ((*shell)->LoadState(*state).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE((*shell)->Resume().ok());
  const GuestTotals floor = (*shell)->Stats().guest;
  EXPECT_GE(floor.pages_written, src->Stats().guest.pages_written);
  EXPECT_TRUE(WaitForProgress(**shell, floor, true));
  ASSERT_TRUE((*shell)->Pause().ok());
  ExpectGuestClean(**shell);
}

TEST_P(VmTest, SaveWhileRunningIsRefused) {
  std::unique_ptr<Vm> vm = MakeVm(Spec(v1::WORKLOAD_KIND_IDLE, 1));
  ASSERT_NE(vm, nullptr);
  EXPECT_TRUE(absl::IsFailedPrecondition(vm->Save().status()));
}

std::string BackendName(const ::testing::TestParamInfo<BackendCase>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Backends, VmTest, ::testing::ValuesIn(AllBackends()),
                         BackendName);

INSTANTIATE_TEST_SUITE_P(
    Backends, SaveRestoreTest,
    ::testing::Combine(::testing::ValuesIn(AllBackends()),
                       ::testing::Values(1u, 3u)),
    [](const auto& info) {
      return absl::StrCat(std::get<0>(info.param).name, "_",
                          std::get<1>(info.param), "vcpus");
    });

}  // namespace
}  // namespace ferry::vmm
