#include "mmu/fake_dirty_tracker.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace ferry::mmu {

FakeDirtyTracker::FakeDirtyTracker(Semantics semantics, int num_vcpus)
    : semantics_(semantics), num_vcpus_(num_vcpus) {}

absl::Status FakeDirtyTracker::Dirty(uint32_t slot, uint64_t page, int vcpu) {
  absl::MutexLock l(&mu_);
  if (!started_) return absl::OkStatus();
  ASSIGN_OR_RETURN(DirtyBitmap * bitmap, log_.Get(slot));
  if (page >= bitmap->npages()) {
    return absl::OutOfRangeError(absl::StrCat("page ", page, " past slot ", slot));
  }
  const bool was = bitmap->Test(page);
  bitmap->Set(page);
  if (!was && vcpu >= 0 && vcpu < num_vcpus_) ++per_vcpu_[vcpu];
  return absl::OkStatus();
}

absl::Status FakeDirtyTracker::DirtyGpa(uint64_t gpa, uint64_t len, int vcpu) {
  absl::MutexLock l(&mu_);
  if (!started_) return absl::OkStatus();
  ASSIGN_OR_RETURN(uint64_t added, log_.MarkGpaRange(gpa, len));
  if (vcpu >= 0 && vcpu < num_vcpus_) per_vcpu_[vcpu] += added;
  return absl::OkStatus();
}

void FakeDirtyTracker::FailNextCollect(absl::Status status) {
  absl::MutexLock l(&mu_);
  fail_collect_ = std::move(status);
}

void FakeDirtyTracker::FailNextReprotect(absl::Status status) {
  absl::MutexLock l(&mu_);
  fail_reprotect_ = std::move(status);
}

std::vector<PageRun> FakeDirtyTracker::reprotected() const {
  absl::MutexLock l(&mu_);
  return reprotected_;
}

int FakeDirtyTracker::collect_calls() const {
  absl::MutexLock l(&mu_);
  return collect_calls_;
}

bool FakeDirtyTracker::started() const {
  absl::MutexLock l(&mu_);
  return started_;
}

absl::Status FakeDirtyTracker::Start(absl::Span<const Memslot> slots) {
  absl::MutexLock l(&mu_);
  if (started_) return absl::FailedPreconditionError("tracker already started");
  log_ = DirtySet::ForSlots(slots);
  per_vcpu_.assign(num_vcpus_, 0);
  started_ = true;
  return absl::OkStatus();
}

absl::StatusOr<CollectStats> FakeDirtyTracker::Collect(DirtySet* out) {
  absl::MutexLock l(&mu_);
  ++collect_calls_;
  if (!started_) return absl::FailedPreconditionError("Collect before Start");
  if (!out->SameLayout(log_)) {
    return absl::InvalidArgumentError("Collect into a set of other slots");
  }
  const bool fail = !fail_collect_.ok();
  const size_t limit = fail ? log_.size() / 2 : log_.size();
  CollectStats stats;
  for (size_t i = 0; i < limit; ++i) {
    DirtyBitmap& src = log_.entries()[i].bitmap;
    DirtyBitmap& dst = out->entries()[i].bitmap;
    if (semantics_ == Semantics::kClassic) {
      DirtyBitmap taken(src.npages());
      stats.pages += src.TakeAndClear(&taken);
      dst.MergeFrom(taken);
    } else {
      stats.pages += src.Count();
      dst.MergeFrom(src);
    }
  }
  if (fail) return std::exchange(fail_collect_, absl::OkStatus());
  if (num_vcpus_ > 0) {
    stats.per_vcpu_pages = per_vcpu_;
    per_vcpu_.assign(num_vcpus_, 0);
  }
  return stats;
}

absl::Status FakeDirtyTracker::Reprotect(uint32_t slot, uint64_t first_page,
                                         uint64_t npages) {
  absl::MutexLock l(&mu_);
  if (!fail_reprotect_.ok()) return std::exchange(fail_reprotect_, absl::OkStatus());
  ASSIGN_OR_RETURN(DirtyBitmap * bitmap, log_.Get(slot));
  if (semantics_ == Semantics::kManualProtect) bitmap->ClearRange(first_page, npages);
  uint64_t gpa = 0;
  for (const DirtySet::Entry& e : log_.entries()) {
    if (e.slot == slot) gpa = e.gpa + (first_page << kPageShift);
  }
  reprotected_.push_back(PageRun{slot, first_page, npages, gpa});
  return absl::OkStatus();
}

absl::Status FakeDirtyTracker::Stop() {
  absl::MutexLock l(&mu_);
  started_ = false;
  return absl::OkStatus();
}

}  // namespace ferry::mmu
