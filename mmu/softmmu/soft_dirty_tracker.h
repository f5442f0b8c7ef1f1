// SoftDirtyTracker: the DirtyTracker (mode kSoftMmu) over a ShadowMmu's
// write-protection dirty logging.
//
//   classic (default)  Collect = GetDirtyLog with clear-and-protect, like
//                      KVM_GET_DIRTY_LOG; Reprotect is a no-op.
//   manual_protect     Collect reports without clearing (bits stay until
//                      re-protected), Reprotect = ClearDirtyLog, like
//                      KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 + KVM_CLEAR_DIRTY_LOG.
//
// Slots passed to Start must be memslots of the ShadowMmu (same id, gpa and
// size). Thread-safe; DirtyLog serialises calls anyway.
#ifndef FERRY_MMU_SOFTMMU_SOFT_DIRTY_TRACKER_H_
#define FERRY_MMU_SOFTMMU_SOFT_DIRTY_TRACKER_H_

#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "mmu/dirty_bitmap.h"
#include "mmu/dirty_set.h"
#include "mmu/dirty_tracker.h"
#include "mmu/memslot.h"
#include "mmu/softmmu/shadow_mmu.h"

namespace ferry::mmu::softmmu {

class SoftDirtyTracker : public DirtyTracker {
 public:
  explicit SoftDirtyTracker(ShadowMmu* mmu, bool manual_protect = false);

  DirtyTrackingMode mode() const override {
    return DirtyTrackingMode::kSoftMmu;
  }
  absl::Status Start(absl::Span<const Memslot> slots) override;
  absl::StatusOr<CollectStats> Collect(DirtySet* out) override;
  bool needs_reprotect() const override { return manual_protect_; }
  absl::Status Reprotect(uint32_t slot, uint64_t first_page,
                         uint64_t npages) override;
  absl::Status Stop() override;

 private:
  ShadowMmu* const mmu_;
  const bool manual_protect_;
  absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<uint32_t> slots_ ABSL_GUARDED_BY(mu_);
  DirtyBitmap scratch_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::mmu::softmmu

#endif  // FERRY_MMU_SOFTMMU_SOFT_DIRTY_TRACKER_H_
