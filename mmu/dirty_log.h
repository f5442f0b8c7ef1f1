// DirtyLog: the pending set between a DirtyTracker and the sender.
//
// Reading the dirty log is destructive (STYLE.md, "Dirty tracking"), so a
// page reported by the tracker lives in `pending` until the sender has
// taken it; if the send then fails the sender gives it back. Pages the VMM
// writes itself (device emulation, the loader, the params page) never fault
// through KVM's dirty log and are added with MarkDirty.
//
//   tracker ──Harvest()──▶ pending ──TakeBatch()──▶ sender ──copy──▶ wire
//                            ▲   ▲                    │
//              MarkDirty() ──┘   └──── GiveBack() ◀───┘ (send failed)
//
// Invariant: a page whose last write happened after its last successful
// copy is in pending, or in a batch the sender holds, or still in the
// tracker (reported by the next Harvest). TakeBatch re-protects (kClearLog)
// before it returns, so the caller must copy only after it returns.
//
// TakeBatch resumes where the previous batch ended and wraps around, like
// a sweeping cursor, so pages given back or re-dirtied behind the cursor
// wait for the next sweep instead of starving the rest of memory.
//
// Thread-safety: all methods may be called from any thread. Tracker calls
// are serialised by tracker_mu_; the pending set by mu_. Harvest collects
// into a scratch set without holding mu_, so a slow KVM_GET_DIRTY_LOG does
// not stall senders. Lock order: tracker_mu_ before mu_.
#ifndef FERRY_MMU_DIRTY_LOG_H_
#define FERRY_MMU_DIRTY_LOG_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "mmu/dirty_set.h"
#include "mmu/dirty_tracker.h"
#include "mmu/memslot.h"

namespace ferry::mmu {

class DirtyLog {
 public:
  struct HarvestResult {
    CollectStats stats;          // from the tracker
    uint64_t new_pages = 0;      // pages that were not already pending
    uint64_t pending_pages = 0;  // pending after the merge
  };
  // Called after each successful Harvest with what the tracker reported
  // (before it is merged away), e.g. for a WorkingSetEstimator or
  // DirtyRateMeter. Runs under tracker_mu_; keep it short, don't call back.
  using HarvestObserver =
      std::function<void(const DirtySet& harvested, const CollectStats& stats)>;

  static absl::StatusOr<std::unique_ptr<DirtyLog>> Create(
      std::unique_ptr<DirtyTracker> tracker, absl::Span<const Memslot> slots);

  DirtyLog(const DirtyLog&) = delete;
  DirtyLog& operator=(const DirtyLog&) = delete;

  // Starts the tracker. With all_pending, every page starts pending, which
  // is round 0 of pre-copy (marked after the tracker starts so no write
  // slips between).
  absl::Status Start(bool all_pending) ABSL_LOCKS_EXCLUDED(tracker_mu_, mu_);
  absl::Status Stop() ABSL_LOCKS_EXCLUDED(tracker_mu_);

  // Collects from the tracker into pending.
  absl::StatusOr<HarvestResult> Harvest() ABSL_LOCKS_EXCLUDED(tracker_mu_, mu_);

  // Removes up to max_pages pending pages as runs (a run may be split at
  // the limit) and, if the tracker needs it, re-protects them. Empty when
  // nothing is pending. On a re-protect error the pages go back to pending.
  absl::StatusOr<std::vector<PageRun>> TakeBatch(uint64_t max_pages)
      ABSL_LOCKS_EXCLUDED(tracker_mu_, mu_);

  // Puts runs back into pending after a failed send. Runs must lie inside
  // the slots (INVALID_ARGUMENT otherwise, and then nothing changes).
  absl::Status GiveBack(absl::Span<const PageRun> runs) ABSL_LOCKS_EXCLUDED(mu_);

  // Marks [gpa, gpa + len) dirty: the VMM wrote it behind KVM's back.
  absl::Status MarkDirty(uint64_t gpa, uint64_t len) ABSL_LOCKS_EXCLUDED(mu_);

  uint64_t pending_pages() const ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t pending_bytes() const { return pending_pages() << kPageShift; }
  // A copy of the pending set (tests, debugging).
  DirtySet PendingSnapshot() const ABSL_LOCKS_EXCLUDED(mu_);

  void SetHarvestObserver(HarvestObserver observer)
      ABSL_LOCKS_EXCLUDED(tracker_mu_);

  DirtyTrackingMode mode() const { return mode_; }
  // For mode-specific calls (e.g. the ring tracker's full-ring handling
  // from vCPU threads); do not Collect through it or pages bypass pending.
  DirtyTracker* tracker() { return tracker_.get(); }

 private:
  DirtyLog(std::unique_ptr<DirtyTracker> tracker,
           absl::Span<const Memslot> slots);
  absl::Status ValidateRun(const PageRun& run) const;
  // Takes runs from [from, to) of entry `index`, at most *budget pages.
  void TakeFromSlot(size_t index, uint64_t from, uint64_t to, uint64_t* budget,
                    std::vector<PageRun>* runs) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const DirtyTrackingMode mode_;
  const bool needs_reprotect_;  // tracker_->needs_reprotect(), fixed
  const std::vector<Memslot> slots_;

  mutable absl::Mutex tracker_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  std::unique_ptr<DirtyTracker> tracker_ ABSL_PT_GUARDED_BY(tracker_mu_);
  DirtySet scratch_ ABSL_GUARDED_BY(tracker_mu_);
  HarvestObserver observer_ ABSL_GUARDED_BY(tracker_mu_);

  mutable absl::Mutex mu_;
  DirtySet pending_ ABSL_GUARDED_BY(mu_);
  uint64_t pending_count_ ABSL_GUARDED_BY(mu_) = 0;
  size_t cursor_slot_ ABSL_GUARDED_BY(mu_) = 0;  // index into entries
  uint64_t cursor_page_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace ferry::mmu

#endif  // FERRY_MMU_DIRTY_LOG_H_
