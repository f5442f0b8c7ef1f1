// DirtyTracker: the one interface every dirty-tracking mode implements.
//
//   kBitmap    KVM_GET_DIRTY_LOG, classic: get + re-protect in one ioctl.
//   kClearLog  KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: GET does not re-protect;
//              Reprotect() issues KVM_CLEAR_DIRTY_LOG for just the pages
//              about to be sent, right before they are copied, so pages
//              the guest keeps rewriting between rounds fault once per send
//              instead of once per round.
//   kRing      KVM_CAP_DIRTY_LOG_RING: per-vCPU rings; Collect harvests and
//              resets (which re-protects), and gives per-vCPU counts.
//   kSoftMmu   the userspace model in mmu/softmmu/.
//   kFake      tests only (fake_dirty_tracker.h).
//
// Protocol (one collector thread; DirtyLog serialises all calls):
//   Start(slots) → { Collect(out) ; Reprotect(...) before each copy }* → Stop()
// A page written after the Collect (or, in kClearLog mode, after the
// Reprotect) that last reported it is reported again by a later Collect.
// That is the whole contract a migration needs: every write after a page's
// last copy is seen.
//
// Collect is destructive on the source (the kernel bitmap/ring entries are
// consumed), so its result must never be dropped: DirtyLog keeps it pending
// until the sender confirms the copy, and puts pages back if a send fails.
#ifndef FERRY_MMU_DIRTY_TRACKER_H_
#define FERRY_MMU_DIRTY_TRACKER_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "mmu/dirty_set.h"
#include "mmu/memslot.h"

namespace ferry::mmu {

enum class DirtyTrackingMode {
  kUnspecified = 0,
  kBitmap = 1,
  kClearLog = 2,
  kRing = 3,
  kSoftMmu = 4,
  kFake = 5,
};

absl::string_view DirtyTrackingModeName(DirtyTrackingMode mode);

struct CollectStats {
  // Pages this Collect reported (distinct within the call; a page already
  // set in `out` still counts). Over a window between two Collects this is
  // the number of distinct pages dirtied in it, not the number of writes.
  uint64_t pages = 0;
  // Wall time of the Collect call itself.
  int64_t duration_ns = 0;
  // Pages per vCPU (index = vCPU id) when the mode knows who wrote (ring);
  // empty otherwise. Sums to at most `pages` (a page two vCPUs dirtied is
  // in both rings but once in `pages`).
  std::vector<uint64_t> per_vcpu_pages;
};

class DirtyTracker {
 public:
  virtual ~DirtyTracker() = default;

  virtual DirtyTrackingMode mode() const = 0;

  // Begins tracking `slots` (write-protects them). Pages written before
  // Start are not reported: the first migration round sends everything.
  virtual absl::Status Start(absl::Span<const Memslot> slots) = 0;

  // ORs every page dirtied since the previous Collect (or Start) into
  // `out`, which must have been made by DirtySet::ForSlots of the same
  // slots. Consumes the source: the same pages are not reported twice
  // unless written again (kClearLog: unless written again or not yet
  // Reprotect-ed, since KVM keeps the bit until KVM_CLEAR_DIRTY_LOG).
  virtual absl::StatusOr<CollectStats> Collect(DirtySet* out) = 0;

  // True if pages must be Reprotect-ed before they are copied (kClearLog).
  // Other modes re-protect inside Collect and treat Reprotect as a no-op.
  virtual bool needs_reprotect() const { return false; }

  // Re-arms write tracking for pages [first_page, first_page + npages) of
  // `slot`, which the caller is about to copy. Unaligned ranges are allowed;
  // implementations over KVM_CLEAR_DIRTY_LOG (which wants first_page % 64
  // == 0) build the 64-aligned mask themselves.
  virtual absl::Status Reprotect(uint32_t slot, uint64_t first_page,
                                 uint64_t npages) = 0;

  // Batch form; the default loops. KVM implementations should override it
  // to coalesce runs into one KVM_CLEAR_DIRTY_LOG per aligned chunk (a call
  // costs ~9 µs for 64 pages but ~30 ns/page at ≥32K pages, KVM-FACTS.md).
  virtual absl::Status ReprotectRuns(absl::Span<const PageRun> runs) {
    for (const PageRun& r : runs) {
      absl::Status s = Reprotect(r.slot, r.first_page, r.npages);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }

  // True if CollectStats::per_vcpu_pages is filled.
  virtual bool has_per_vcpu_counts() const { return false; }

  // Stops tracking (drops write protection). Collect after Stop is an error.
  virtual absl::Status Stop() = 0;
};

}  // namespace ferry::mmu

#endif  // FERRY_MMU_DIRTY_TRACKER_H_
