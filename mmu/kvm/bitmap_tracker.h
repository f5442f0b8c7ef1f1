// BitmapTracker (DirtyTrackingMode::kBitmap): classic KVM dirty logging.
//
//   Start    KVM_MEM_LOG_DIRTY_PAGES on each slot: KVM write-protects every
//            spte of the slot (3–11 ms per 64K–256K mapped pages,
//            KVM-FACTS.md).
//   Collect  KVM_GET_DIRTY_LOG per slot into a scratch word buffer, then
//            OR into `out`. The kernel clears its bitmap and re-protects
//            the pages it returned in the same ioctl (api.rst 4.35), so a
//            write that lands after the GET is reported by the next one.
//   Stop     clears KVM_MEM_LOG_DIRTY_PAGES (KVM rebuilds huge mappings).
//
// Cost of Collect: ~5 µs per GiB of slot + ~28 ns per dirty page.
//
// Preconditions: the VM has neither the dirty ring (GET fails with ENXIO)
// nor KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (GET would not re-protect and every
// page would stay dirty forever); Start refuses both.
//
// Thread-safety: one caller at a time (DirtyLog serialises every call).
// Collect may run while vCPUs run; that is what KVM_GET_DIRTY_LOG is for.
#ifndef FERRY_MMU_KVM_BITMAP_TRACKER_H_
#define FERRY_MMU_KVM_BITMAP_TRACKER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kmod/vm.h"
#include "mmu/dirty_set.h"
#include "mmu/dirty_tracker.h"
#include "mmu/kvm/slot_table.h"
#include "mmu/kvm/vm_dirty_ops.h"
#include "mmu/memslot.h"

namespace ferry::mmu::kvm {

class BitmapTracker : public DirtyTracker {
 public:
  // Over a real VM; `vm` must outlive the tracker.
  explicit BitmapTracker(kmod::VmFd* vm);
  explicit BitmapTracker(std::unique_ptr<VmDirtyOps> ops);

  DirtyTrackingMode mode() const override { return DirtyTrackingMode::kBitmap; }
  absl::Status Start(absl::Span<const Memslot> slots) override;
  absl::StatusOr<CollectStats> Collect(DirtySet* out) override;
  absl::Status Reprotect(uint32_t, uint64_t, uint64_t) override {
    return absl::OkStatus();  // GET already re-protected
  }
  absl::Status Stop() override;

 private:
  std::unique_ptr<VmDirtyOps> ops_;
  bool started_ = false;
  SlotTable table_;
  std::vector<uint64_t> scratch_;  // words of the largest slot
};

// Turns KVM_MEM_LOG_DIRTY_PAGES on for every slot, undoing the ones it did
// if one fails (so a failed Start leaves logging as it found it).
absl::Status EnableLoggingOnAll(VmDirtyOps* ops, absl::Span<const Memslot> slots);
// Turns it off for every slot; tries them all, returns the first error.
absl::Status DisableLoggingOnAll(VmDirtyOps* ops,
                                 absl::Span<const Memslot> slots);

}  // namespace ferry::mmu::kvm

#endif  // FERRY_MMU_KVM_BITMAP_TRACKER_H_
