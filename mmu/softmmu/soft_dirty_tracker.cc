#include "mmu/softmmu/soft_dirty_tracker.h"

#include <time.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace ferry::mmu::softmmu {
namespace {

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

}  // namespace

SoftDirtyTracker::SoftDirtyTracker(ShadowMmu* mmu, bool manual_protect)
    : mmu_(mmu), manual_protect_(manual_protect) {}

absl::Status SoftDirtyTracker::Start(absl::Span<const Memslot> slots) {
  absl::MutexLock lock(&mu_);
  if (started_) return absl::FailedPreconditionError("already started");
  for (const Memslot& s : slots) {
    auto it = std::find_if(
        mmu_->memslots().begin(), mmu_->memslots().end(),
        [&](const Memslot& m) { return m.slot == s.slot; });
    if (it == mmu_->memslots().end() || it->gpa != s.gpa ||
        it->size != s.size) {
      return absl::InvalidArgumentError(
          absl::StrCat("slot ", s.slot, " is not a memslot of this MMU"));
    }
  }
  slots_.clear();
  for (const Memslot& s : slots) {
    RETURN_IF_ERROR(mmu_->EnableDirtyLogging(s.slot));
    slots_.push_back(s.slot);
  }
  started_ = true;
  return absl::OkStatus();
}

absl::StatusOr<CollectStats> SoftDirtyTracker::Collect(DirtySet* out) {
  absl::MutexLock lock(&mu_);
  if (!started_) return absl::FailedPreconditionError("not started");
  const int64_t t0 = NowNs();
  CollectStats stats;
  for (DirtySet::Entry& e : out->entries()) {
    if (std::find(slots_.begin(), slots_.end(), e.slot) == slots_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("slot ", e.slot, " is not tracked"));
    }
    ASSIGN_OR_RETURN(uint64_t n,
                     mmu_->GetDirtyLog(e.slot, &scratch_, !manual_protect_));
    if (scratch_.npages() != e.bitmap.npages()) {
      return absl::InvalidArgumentError("DirtySet does not match the slots");
    }
    e.bitmap.MergeFrom(scratch_);
    stats.pages += n;
  }
  stats.duration_ns = NowNs() - t0;
  return stats;
}

absl::Status SoftDirtyTracker::Reprotect(uint32_t slot, uint64_t first_page,
                                         uint64_t npages) {
  absl::MutexLock lock(&mu_);
  if (!started_) return absl::FailedPreconditionError("not started");
  if (!manual_protect_) return absl::OkStatus();
  return mmu_->ClearDirtyLog(slot, first_page, npages).status();
}

absl::Status SoftDirtyTracker::Stop() {
  absl::MutexLock lock(&mu_);
  if (!started_) return absl::FailedPreconditionError("not started");
  for (uint32_t slot : slots_) RETURN_IF_ERROR(mmu_->DisableDirtyLogging(slot));
  started_ = false;
  return absl::OkStatus();
}

}  // namespace ferry::mmu::softmmu
