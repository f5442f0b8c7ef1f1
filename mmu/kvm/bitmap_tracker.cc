#include "mmu/kvm/bitmap_tracker.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace ferry::mmu::kvm {

absl::Status EnableLoggingOnAll(VmDirtyOps* ops,
                                absl::Span<const Memslot> slots) {
  for (size_t i = 0; i < slots.size(); ++i) {
    absl::Status s = ops->SetDirtyLogging(slots[i].slot, true);
    if (!s.ok()) {
      for (size_t j = 0; j < i; ++j) {
        (void)ops->SetDirtyLogging(slots[j].slot, false);  // best effort
      }
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status DisableLoggingOnAll(VmDirtyOps* ops,
                                 absl::Span<const Memslot> slots) {
  absl::Status first;
  for (const Memslot& s : slots) {
    absl::Status r = ops->SetDirtyLogging(s.slot, false);
    if (first.ok()) first = r;
  }
  return first;
}

BitmapTracker::BitmapTracker(kmod::VmFd* vm)
    : BitmapTracker(std::make_unique<KvmVmDirtyOps>(vm)) {}

BitmapTracker::BitmapTracker(std::unique_ptr<VmDirtyOps> ops)
    : ops_(std::move(ops)) {}

absl::Status BitmapTracker::Start(absl::Span<const Memslot> slots) {
  if (started_) return absl::FailedPreconditionError("bitmap tracker: already started");
  if (ops_->dirty_ring_bytes() != 0) {
    return absl::FailedPreconditionError(
        "bitmap tracker: the VM has the dirty ring on, so KVM_GET_DIRTY_LOG "
        "fails (ENXIO); use the ring tracker");
  }
  if (ops_->manual_protect_enabled()) {
    return absl::FailedPreconditionError(
        "bitmap tracker: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 is on for this VM, "
        "so KVM_GET_DIRTY_LOG does not re-protect; use the clear-log tracker");
  }
  ASSIGN_OR_RETURN(table_, SlotTable::Create(slots, "bitmap tracker"));
  size_t words = 0;
  for (const Memslot& s : slots) {
    words = std::max(words, DirtyBitmap::WordsFor(s.npages()));
  }
  scratch_.assign(words, 0);
  RETURN_IF_ERROR(EnableLoggingOnAll(ops_.get(), slots));
  started_ = true;
  return absl::OkStatus();
}

absl::StatusOr<CollectStats> BitmapTracker::Collect(DirtySet* out) {
  if (!started_) return absl::FailedPreconditionError("bitmap tracker: Collect before Start");
  RETURN_IF_ERROR(table_.CheckShape(*out, "bitmap tracker"));
  const int64_t start = MonotonicNowNs();
  CollectStats stats;
  for (size_t i = 0; i < table_.size(); ++i) {
    const Memslot& slot = table_.slots()[i];
    DirtyBitmap& dst = out->entries()[i].bitmap;
    absl::Span<uint64_t> words(scratch_.data(), dst.num_words());
    // Each GET consumes that slot's bits, so what it returned is merged
    // into `out` before the next slot: an error on slot k leaves slots
    // < k in `out`, which DirtyLog keeps (it merges even on error).
    RETURN_IF_ERROR(ops_->GetDirtyLog(slot.slot, words));
    for (uint64_t w : words) stats.pages += __builtin_popcountll(w);
    dst.MergeFromWords(words);
  }
  stats.duration_ns = MonotonicNowNs() - start;
  return stats;
}

absl::Status BitmapTracker::Stop() {
  if (!started_) return absl::OkStatus();
  started_ = false;
  return DisableLoggingOnAll(ops_.get(), table_.slots());
}

}  // namespace ferry::mmu::kvm
