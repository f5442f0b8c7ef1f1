// RingTracker (DirtyTrackingMode::kRing): KVM's per-vCPU dirty rings
// (api.rst 8.29 KVM_CAP_DIRTY_LOG_RING / _ACQ_REL).
//
// Setup order KVM imposes: the VMM enables the ring on the VM
// (VmFd::EnableDirtyRing) BEFORE creating any vCPU, creates the vCPUs (each
// VcpuFd maps its DirtyRing), and then builds this tracker from the VM and
// those rings. So the ring is a VM-creation decision (see select.h), not
// something Start can switch on.
//
//   Start    drains stale entries (discarded), then KVM_MEM_LOG_DIRTY_PAGES
//            on each slot. The flag is still what makes KVM record writes:
//            with the ring on, mark_page_dirty_in_slot() pushes an entry
//            instead of setting a bitmap bit, but only for slots that log.
//   Collect  harvests every ring (acquire-load flags, release-store RESET;
//            kmod::DirtyRing), maps (slot, offset) to bits of `out`, then
//            ONE KVM_RESET_DIRTY_RINGS for the whole batch — which is what
//            re-protects the pages — and checks reset == harvested.
//            Cost is per dirty page, not per GiB; per-vCPU counts for free.
//   OnRingFull(vcpu)  for the vCPU thread on KVM_EXIT_DIRTY_RING_FULL:
//            harvests that ring into an internal pending window and resets,
//            so the vCPU can re-enter KVM_RUN (re-entering with the ring
//            still full exits again at once). The pages stay in the window
//            and the next Collect reports them: nothing is lost.
//   Stop     clears KVM_MEM_LOG_DIRTY_PAGES first (so no entry can arrive
//            after), then drains and resets every ring: a ring is only
//            re-armed by a reset, and leftover entries would otherwise keep
//            a vCPU near RING_FULL for the VM's whole life. Pages in them
//            are dropped; Collect after Stop is an error anyway.
//
// Resets are batched (per Collect, per RING_FULL exit), never per entry:
// per-entry resets livelock a busy guest (KVM-FACTS.md).
//
// Thread-safety: Collect/Start/Stop from the collector (DirtyLog serialises
// them); OnRingFull from any vCPU thread at any time, including before
// Start and after Stop (it then just harvests, resets and discards). One
// mutex guards the rings' harvest side and the window; harvesting races
// only with the kernel, which the acquire/release protocol handles.
#ifndef FERRY_MMU_KVM_RING_TRACKER_H_
#define FERRY_MMU_KVM_RING_TRACKER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "kmod/dirty_ring.h"
#include "kmod/vm.h"
#include "mmu/dirty_bitmap.h"
#include "mmu/dirty_set.h"
#include "mmu/dirty_tracker.h"
#include "mmu/kvm/slot_table.h"
#include "mmu/kvm/vm_dirty_ops.h"
#include "mmu/memslot.h"

namespace ferry::mmu::kvm {

// The pages ring entries named since the last drain: (slot, offset) →
// bit, deduplicated, each page attributed to the first vCPU that reported
// it. Draining costs O(pages in the window), not O(memory). Not
// thread-safe; RingTracker guards it.
class RingWindow {
 public:
  RingWindow() = default;
  RingWindow(const SlotTable& table, int num_vcpus);

  // Adds the page `gfn` names. An entry outside the tracked slots (another
  // address space, an untracked slot, an offset past the slot) is counted
  // in bad_entries() and otherwise ignored: there is no bit for it.
  void Add(int vcpu, const kmod::DirtyGfn& gfn);

  // Sets every window page in `out` (shaped like the table), fills
  // stats->pages (distinct pages) and per_vcpu_pages, and empties the
  // window. Bad-entry counts are kept until TakeBadEntries.
  void DrainInto(DirtySet* out, CollectStats* stats);
  void Discard();

  uint64_t pages() const { return added_.size(); }
  uint64_t bad_entries() const { return bad_entries_; }
  // Clears the bad-entry count; returns a description of the first one.
  std::string TakeBadEntries();

 private:
  const SlotTable* table_ = nullptr;  // not owned
  std::vector<DirtyBitmap> bits_;     // per slot index
  std::vector<std::pair<int, uint64_t>> added_;  // (slot index, page)
  std::vector<uint64_t> per_vcpu_;
  uint64_t bad_entries_ = 0;
  kmod::DirtyGfn first_bad_;
};

class RingTracker : public DirtyTracker {
 public:
  // rings[i] is vCPU i's ring (VcpuFd::dirty_ring()), every vCPU of the VM,
  // none null; they and `vm` must outlive the tracker. FAILED_PRECONDITION
  // if the VM has no dirty ring.
  static absl::StatusOr<std::unique_ptr<RingTracker>> Create(
      kmod::VmFd* vm, std::vector<kmod::DirtyRing*> rings);
  static absl::StatusOr<std::unique_ptr<RingTracker>> Create(
      std::unique_ptr<VmDirtyOps> ops, std::vector<kmod::DirtyRing*> rings);

  DirtyTrackingMode mode() const override { return DirtyTrackingMode::kRing; }
  absl::Status Start(absl::Span<const Memslot> slots) override
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<CollectStats> Collect(DirtySet* out) override
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status Reprotect(uint32_t, uint64_t, uint64_t) override {
    return absl::OkStatus();  // the reset in Collect re-protected
  }
  bool has_per_vcpu_counts() const override { return true; }
  absl::Status Stop() override ABSL_LOCKS_EXCLUDED(mu_);

  // The vCPU thread's KVM_EXIT_DIRTY_RING_FULL handler (see above). After
  // it returns OK the vCPU may re-enter KVM_RUN.
  absl::Status OnRingFull(int vcpu) ABSL_LOCKS_EXCLUDED(mu_);

  int num_vcpus() const { return static_cast<int>(rings_.size()); }
  uint64_t ring_full_events() const ABSL_LOCKS_EXCLUDED(mu_);
  // Pages harvested by OnRingFull not yet reported by a Collect.
  uint64_t pending_pages() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  RingTracker(std::unique_ptr<VmDirtyOps> ops,
              std::vector<kmod::DirtyRing*> rings)
      : ops_(std::move(ops)), rings_(std::move(rings)) {}

  // Harvests ring `vcpu` (all rings if -1) into the window (discarding when
  // `keep` is false), then one reset for the batch.
  absl::Status HarvestAndReset(int vcpu, bool keep)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::unique_ptr<VmDirtyOps> ops_;
  const std::vector<kmod::DirtyRing*> rings_;

  mutable absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  SlotTable table_ ABSL_GUARDED_BY(mu_);
  RingWindow window_ ABSL_GUARDED_BY(mu_);
  uint64_t ring_full_events_ ABSL_GUARDED_BY(mu_) = 0;
};

// The RingTracker behind `tracker` (e.g. DirtyLog::tracker()), or nullptr:
// how a vCPU thread reaches OnRingFull.
inline RingTracker* AsRingTracker(DirtyTracker* tracker) {
  return tracker != nullptr && tracker->mode() == DirtyTrackingMode::kRing
             ? dynamic_cast<RingTracker*>(tracker)
             : nullptr;
}

}  // namespace ferry::mmu::kvm

#endif  // FERRY_MMU_KVM_RING_TRACKER_H_
