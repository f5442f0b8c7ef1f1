// VMM figures per backend, one JSON object per line:
//   create   — Vm::Create of a 1 GiB, 2-vCPU VM until the guest's first
//              page write (create-to-running);
//   rate     — the dirty rate each workload reaches at a 200 MB/s target,
//              with dirty logging off and on (guest writes/s from its status
//              pages; with logging on also the tracker's distinct pages/s);
//   snapshot — for a 1 GiB VM with 512 MiB written: Save() (state only), the
//              guest-memory copy into fresh memory, Restore() into a new VM,
//              and the check that the guest continues with 0 mismatches.
// Backends that cannot run here print {"skipped": reason}.
//   bazel run -c opt //bench:vmm
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/vmm/kvm/kvm_backend.h"
#include "agent/vmm/soft/soft_backend.h"
#include "agent/vmm/soft/softmmu_port.h"
#include "agent/vmm/vm.h"
#include "mmu/dirty_set.h"
#include "mmu/guest_memory.h"

namespace ferry::vmm {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

v1::VmSpec Spec(const std::string& name, v1::WorkloadKind kind,
                uint64_t rate_bytes_per_s, uint64_t ws_bytes) {
  v1::VmSpec spec;
  spec.set_name(name);
  spec.set_memory_bytes(1024 * kMiB);
  spec.set_vcpu_count(2);
  spec.mutable_workload()->set_kind(kind);
  spec.mutable_workload()->set_working_set_bytes(ws_bytes);
  spec.mutable_workload()->set_dirty_rate_bytes_per_s(rate_bytes_per_s);
  spec.mutable_workload()->set_hot_fraction(0.1);
  spec.mutable_workload()->set_hot_probability(0.9);
  spec.mutable_workload()->set_seed(20261122);
  return spec;
}

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

void Fail(const char* backend, const char* what, const absl::Status& s) {
  std::printf("{\"bench\":\"vmm\",\"backend\":\"%s\",\"case\":\"%s\","
              "\"error\":\"%s\"}\n",
              backend, what, std::string(s.message()).c_str());
}

void CreateToRunning(Backend& backend, const char* name) {
  const absl::Time t0 = absl::Now();
  auto vm = Vm::Create(Spec("create", v1::WORKLOAD_KIND_UNIFORM, 0, 256 * kMiB),
                       backend);
  if (!vm.ok()) return Fail(name, "create", vm.status());
  const absl::Duration created = absl::Now() - t0;
  while ((*vm)->Stats().guest.pages_written == 0 &&
         absl::Now() - t0 < absl::Seconds(10)) {
    absl::SleepFor(absl::Microseconds(200));
  }
  std::printf("{\"bench\":\"vmm\",\"backend\":\"%s\",\"case\":\"create\","
              "\"memory_bytes\":%llu,\"vcpus\":2,\"create_ms\":%.2f,"
              "\"create_to_first_write_ms\":%.2f}\n",
              name, 1024 * kMiB, Ms(created), Ms(absl::Now() - t0));
}

void Rate(Backend& backend, const char* name, v1::WorkloadKind kind,
          bool logging) {
  const uint64_t target = 200 * 1000 * 1000;
  auto vm = Vm::Create(Spec("rate", kind, target, 512 * kMiB), backend);
  if (!vm.ok()) return Fail(name, "rate", vm.status());
  std::unique_ptr<mmu::DirtyTracker> tracker;
  mmu::DirtySet set = mmu::DirtySet::ForSlots((*vm)->memory().slots());
  if (logging) {
    auto t = (*vm)->CreateDirtyTracker(mmu::DirtyTrackingMode::kUnspecified);
    if (!t.ok()) return Fail(name, "rate", t.status());
    tracker = std::move(*t);
    absl::Status s = tracker->Start((*vm)->memory().slots());
    if (!s.ok()) return Fail(name, "rate", s);
  }
  absl::SleepFor(absl::Milliseconds(700));  // past first-touch faults
  if (tracker) (void)tracker->Collect(&set);
  const uint64_t w0 = (*vm)->Stats().guest.pages_written;
  const absl::Time t0 = absl::Now();
  uint64_t distinct = 0;
  for (int i = 0; i < 15; ++i) {  // 1.5 s in 100 ms collection windows
    absl::SleepFor(absl::Milliseconds(100));
    if (tracker) {
      set.ClearAll();
      auto stats = tracker->Collect(&set);
      if (stats.ok()) distinct += stats->pages;
    }
  }
  const double secs = absl::ToDoubleSeconds(absl::Now() - t0);
  const uint64_t w1 = (*vm)->Stats().guest.pages_written;
  if (tracker) (void)tracker->Stop();
  tracker.reset();
  std::printf("{\"bench\":\"vmm\",\"backend\":\"%s\",\"case\":\"rate\","
              "\"workload\":\"%s\",\"logging\":%s,"
              "\"target_bytes_per_s\":%llu,\"guest_write_bytes_per_s\":%.0f,"
              "\"tracked_distinct_bytes_per_s\":%.0f,\"selfcheck_errors\":%llu}\n",
              name, v1::WorkloadKind_Name(kind).c_str(),
              logging ? "true" : "false",
              static_cast<unsigned long long>(target),
              (w1 - w0) * 4096.0 / secs, distinct * 4096.0 / secs,
              static_cast<unsigned long long>(
                  (*vm)->Stats().guest.selfcheck_errors));
}

void Snapshot(Backend& backend, const char* name) {
  auto vm = Vm::Create(
      Spec("snap", v1::WORKLOAD_KIND_SEQUENTIAL, 0, 512 * kMiB), backend);
  if (!vm.ok()) return Fail(name, "snapshot", vm.status());
  // Let the sequential writer cover its 512 MiB once.
  const absl::Time until = absl::Now() + absl::Seconds(20);
  while ((*vm)->Stats().guest.pages_written < 512 * kMiB / 4096 &&
         absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  absl::Status s = (*vm)->Pause();
  if (!s.ok()) return Fail(name, "snapshot", s);
  const uint64_t written = (*vm)->Stats().guest.pages_written;

  absl::Time t = absl::Now();
  auto state = (*vm)->Save();
  if (!state.ok()) return Fail(name, "snapshot", state.status());
  const absl::Duration save = absl::Now() - t;

  t = absl::Now();
  mmu::GuestMemoryLayout layout;
  for (const mmu::Memslot& slot : (*vm)->memory().slots()) {
    layout.slots.push_back({slot.slot, slot.gpa, slot.size});
  }
  layout.populate = true;  // KVM-FACTS: populate the destination first
  auto copy = mmu::GuestMemory::Create(layout);
  if (!copy.ok()) return Fail(name, "snapshot", copy.status());
  const absl::Duration alloc = absl::Now() - t;
  t = absl::Now();
  // Only the memfd's data extents: pages the guest never touched are holes
  // and read as zero in the fresh memory too (what migration round 0 does).
  uint64_t copied = 0;
  for (size_t i = 0; i < layout.slots.size(); ++i) {
    const mmu::Memslot& src = (*vm)->memory().slots()[i];
    const off_t end = static_cast<off_t>(src.memfd_offset + src.size);
    off_t pos = static_cast<off_t>(src.memfd_offset);
    while (pos < end) {
      off_t data = lseek((*vm)->memory().memfd(), pos, SEEK_DATA);
      if (data < 0 || data >= end) break;
      off_t hole = lseek((*vm)->memory().memfd(), data, SEEK_HOLE);
      if (hole < 0 || hole > end) hole = end;
      const uint64_t off = data - src.memfd_offset;
      // SAFETY: [off, off + len) lies inside both slots (same layout); the
      // source is paused.
      std::memcpy((*copy)->slots()[i].hva + off, src.hva + off, hole - data);
      copied += hole - data;
      pos = hole;
    }
  }
  const absl::Duration memcpy_time = absl::Now() - t;
  vm->reset();  // the source is gone, as after a migration

  t = absl::Now();
  auto restored = Vm::Restore(*state, std::move(*copy), backend);
  if (!restored.ok()) return Fail(name, "snapshot", restored.status());
  const absl::Duration restore = absl::Now() - t;
  absl::SleepFor(absl::Milliseconds(300));
  const uint64_t after = (*restored)->Stats().guest.pages_written;
  (void)(*restored)->Pause();
  auto check = (*restored)->CheckGuestMemory();
  std::printf(
      "{\"bench\":\"vmm\",\"backend\":\"%s\",\"case\":\"snapshot\","
      "\"memory_bytes\":%llu,\"written_bytes\":%llu,\"state_bytes\":%zu,"
      "\"save_ms\":%.3f,\"alloc_populate_ms\":%.1f,\"memcpy_ms\":%.1f,"
      "\"copied_bytes\":%llu,\"restore_ms\":%.2f,\"state_plus_memory_ms\":%.1f,"
      "\"guest_continued\":%s,\"mismatches\":%lld}\n",
      name, 1024 * kMiB, static_cast<unsigned long long>(written * 4096),
      state->ByteSizeLong(), Ms(save), Ms(alloc), Ms(memcpy_time),
      static_cast<unsigned long long>(copied), Ms(restore), Ms(save + alloc + memcpy_time + restore),
      after > written ? "true" : "false",
      check.ok() ? static_cast<long long>(check->mismatches) : -1LL);
}

void RunAll(Backend& backend, const char* name) {
  absl::Status probe = backend.Probe();
  if (!probe.ok()) {
    std::printf("{\"bench\":\"vmm\",\"backend\":\"%s\",\"skipped\":\"%s\"}\n",
                name, std::string(probe.message()).c_str());
    return;
  }
  CreateToRunning(backend, name);
  for (v1::WorkloadKind kind :
       {v1::WORKLOAD_KIND_UNIFORM, v1::WORKLOAD_KIND_HOTCOLD,
        v1::WORKLOAD_KIND_SEQUENTIAL}) {
    Rate(backend, name, kind, false);
    Rate(backend, name, kind, true);
  }
  Snapshot(backend, name);
}

}  // namespace
}  // namespace ferry::vmm

int main() {
  ferry::vmm::SoftBackend soft(ferry::vmm::SoftMmuPortFactory());
  ferry::vmm::RunAll(soft, "soft");
  ferry::vmm::KvmBackend kvm;
  ferry::vmm::RunAll(kvm, "kvm");
  return 0;
}
