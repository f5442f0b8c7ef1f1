#include "mmu/dirty_log.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace ferry::mmu {

absl::StatusOr<std::unique_ptr<DirtyLog>> DirtyLog::Create(
    std::unique_ptr<DirtyTracker> tracker, absl::Span<const Memslot> slots) {
  if (tracker == nullptr) {
    return absl::InvalidArgumentError("DirtyLog needs a tracker");
  }
  if (slots.empty()) {
    return absl::InvalidArgumentError("DirtyLog needs at least one memslot");
  }
  return std::unique_ptr<DirtyLog>(new DirtyLog(std::move(tracker), slots));
}

DirtyLog::DirtyLog(std::unique_ptr<DirtyTracker> tracker,
                   absl::Span<const Memslot> slots)
    : mode_(tracker->mode()),
      needs_reprotect_(tracker->needs_reprotect()),
      slots_(slots.begin(), slots.end()),
      tracker_(std::move(tracker)),
      scratch_(DirtySet::ForSlots(slots)),
      pending_(DirtySet::ForSlots(slots)) {}

absl::Status DirtyLog::Start(bool all_pending) {
  absl::MutexLock tl(&tracker_mu_);
  RETURN_IF_ERROR(tracker_->Start(slots_));
  if (all_pending) {
    absl::MutexLock l(&mu_);
    pending_count_ = 0;
    for (DirtySet::Entry& e : pending_.entries()) {
      e.bitmap.SetAll();
      pending_count_ += e.bitmap.npages();
    }
  }
  return absl::OkStatus();
}

absl::Status DirtyLog::Stop() {
  absl::MutexLock tl(&tracker_mu_);
  return tracker_->Stop();
}

absl::StatusOr<DirtyLog::HarvestResult> DirtyLog::Harvest() {
  absl::MutexLock tl(&tracker_mu_);
  HarvestResult result;
  // If Collect fails after consuming part of the log, what it already put
  // in scratch_ must not be lost: merge it into pending either way.
  absl::StatusOr<CollectStats> stats = tracker_->Collect(&scratch_);
  {
    absl::MutexLock l(&mu_);
    ASSIGN_OR_RETURN(result.new_pages, pending_.MergeFrom(scratch_));
    pending_count_ += result.new_pages;
    result.pending_pages = pending_count_;
  }
  if (stats.ok() && observer_) observer_(scratch_, *stats);
  scratch_.ClearAll();
  if (!stats.ok()) return stats.status();
  result.stats = *std::move(stats);
  return result;
}

void DirtyLog::TakeFromSlot(size_t index, uint64_t from, uint64_t to,
                            uint64_t* budget, std::vector<PageRun>* runs) {
  DirtySet::Entry& e = pending_.entries()[index];
  uint64_t page = from;
  while (*budget > 0 && page < to) {
    const uint64_t first = e.bitmap.NextSetBit(page);
    if (first >= to) return;
    const uint64_t end = std::min(e.bitmap.NextClearBit(first), to);
    const uint64_t n = std::min(end - first, *budget);
    e.bitmap.ClearRange(first, n);
    runs->push_back(PageRun{e.slot, first, n, e.gpa + (first << kPageShift)});
    *budget -= n;
    pending_count_ -= n;
    page = first + n;
    cursor_slot_ = index;
    cursor_page_ = page;
  }
}

absl::StatusOr<std::vector<PageRun>> DirtyLog::TakeBatch(uint64_t max_pages) {
  std::vector<PageRun> runs;
  {
    absl::MutexLock l(&mu_);
    uint64_t budget = max_pages;
    const size_t n = pending_.size();
    const size_t cs = std::min(cursor_slot_, n - 1);
    const uint64_t cp = cursor_page_;
    // Sweep from the cursor to the end of memory, then from the start back
    // to the cursor.
    for (size_t k = 0; k < n && budget > 0 && pending_count_ > 0; ++k) {
      const size_t i = (cs + k) % n;
      TakeFromSlot(i, k == 0 ? cp : 0, pending_.entries()[i].bitmap.npages(),
                   &budget, &runs);
    }
    if (budget > 0 && pending_count_ > 0) TakeFromSlot(cs, 0, cp, &budget, &runs);
  }
  if (runs.empty() || !needs_reprotect_) return runs;
  absl::Status s;
  {
    absl::MutexLock tl(&tracker_mu_);
    s = tracker_->ReprotectRuns(runs);
  }
  if (!s.ok()) {
    // The pages were not re-armed; they must be sent later, not forgotten.
    absl::Status g = GiveBack(runs);
    (void)g;  // runs came from pending_, so they are valid
    return s;
  }
  return runs;
}

absl::Status DirtyLog::ValidateRun(const PageRun& run) const {
  for (const Memslot& s : slots_) {
    if (s.slot != run.slot) continue;
    if (run.first_page > s.npages() || run.npages > s.npages() - run.first_page) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "run [page %u, +%u) lies outside slot %u (%u pages)", run.first_page,
          run.npages, run.slot, s.npages()));
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("run names unknown slot %u", run.slot));
}

absl::Status DirtyLog::GiveBack(absl::Span<const PageRun> runs) {
  for (const PageRun& r : runs) RETURN_IF_ERROR(ValidateRun(r));
  absl::MutexLock l(&mu_);
  for (const PageRun& r : runs) {
    // ValidateRun checked the slot exists.
    DirtyBitmap* bitmap = *pending_.Get(r.slot);
    pending_count_ += bitmap->SetRange(r.first_page, r.npages);
  }
  return absl::OkStatus();
}

absl::Status DirtyLog::MarkDirty(uint64_t gpa, uint64_t len) {
  absl::MutexLock l(&mu_);
  ASSIGN_OR_RETURN(uint64_t added, pending_.MarkGpaRange(gpa, len));
  pending_count_ += added;
  return absl::OkStatus();
}

uint64_t DirtyLog::pending_pages() const {
  absl::MutexLock l(&mu_);
  return pending_count_;
}

DirtySet DirtyLog::PendingSnapshot() const {
  absl::MutexLock l(&mu_);
  return pending_;
}

void DirtyLog::SetHarvestObserver(HarvestObserver observer) {
  absl::MutexLock tl(&tracker_mu_);
  observer_ = std::move(observer);
}

}  // namespace ferry::mmu
