#include "mmu/kvm/clear_log_tracker.h"

#include "kmod/kvm_abi.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "mmu/kvm/bitmap_tracker.h"

namespace ferry::mmu::kvm {

std::vector<ClearChunk> PlanClearChunks(const DirtyBitmap& mask,
                                        uint64_t chunk_pages,
                                        size_t first_word, size_t end_word) {
  std::vector<ClearChunk> chunks;
  absl::Span<const uint64_t> words = mask.words();
  const uint64_t npages = mask.npages();
  end_word = std::min(end_word, words.size());
  size_t w = first_word;
  while (w < end_word) {
    if (words[w] == 0) {
      ++w;
      continue;
    }
    const uint64_t first = uint64_t{w} * 64;
    const uint64_t n = std::min(chunk_pages, npages - first);
    chunks.push_back(ClearChunk{first, static_cast<uint32_t>(n)});
    w += DirtyBitmap::WordsFor(n);
  }
  return chunks;
}

absl::StatusOr<std::unique_ptr<ClearLogTracker>> ClearLogTracker::Create(
    kmod::VmFd* vm, const Options& options) {
  return Create(std::make_unique<KvmVmDirtyOps>(vm), options);
}

absl::StatusOr<std::unique_ptr<ClearLogTracker>> ClearLogTracker::Create(
    std::unique_ptr<VmDirtyOps> ops, const Options& options) {
  if (options.chunk_pages == 0 || options.chunk_pages % 64 != 0 ||
      options.chunk_pages > kMaxClearChunkPages) {
    return absl::InvalidArgumentError(absl::StrCat(
        "clear-log tracker: chunk_pages ", options.chunk_pages,
        " must be a positive multiple of 64, at most ", kMaxClearChunkPages));
  }
  return std::unique_ptr<ClearLogTracker>(
      new ClearLogTracker(std::move(ops), options));
}

absl::Status ClearLogTracker::Start(absl::Span<const Memslot> slots) {
  if (started_) {
    return absl::FailedPreconditionError("clear-log tracker: already started");
  }
  if (ops_->dirty_ring_bytes() != 0) {
    return absl::FailedPreconditionError(
        "clear-log tracker: the VM has the dirty ring on, so "
        "KVM_GET/CLEAR_DIRTY_LOG fail (ENXIO); use the ring tracker");
  }
  ASSIGN_OR_RETURN(table_, SlotTable::Create(slots, "clear-log tracker"));
  if (ops_->manual_protect_enabled()) {
    // Someone (an earlier Start) switched it on; whether with INITIALLY_SET
    // is not recorded by kmod, so assume it was (only affects reporting).
    initially_set_ = true;
  } else {
    ASSIGN_OR_RETURN(uint64_t support, ops_->ManualProtectSupport());
    if ((support & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) == 0) {
      return absl::FailedPreconditionError(
          "clear-log tracker: this kernel lacks "
          "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2; use the bitmap tracker");
    }
    const bool init_set = options_.initially_set &&
                          (support & KVM_DIRTY_LOG_INITIALLY_SET) != 0;
    // Must precede enabling logging: INITIALLY_SET acts at that moment.
    RETURN_IF_ERROR(ops_->EnableManualProtect(init_set));
    initially_set_ = init_set;
  }
  size_t words = 0;
  masks_.clear();
  for (const Memslot& s : slots) {
    words = std::max(words, DirtyBitmap::WordsFor(s.npages()));
    masks_.emplace_back(s.npages());
  }
  scratch_.assign(words, 0);
  RETURN_IF_ERROR(EnableLoggingOnAll(ops_.get(), slots));
  started_ = true;
  return absl::OkStatus();
}

absl::StatusOr<CollectStats> ClearLogTracker::Collect(DirtySet* out) {
  if (!started_) {
    return absl::FailedPreconditionError("clear-log tracker: Collect before Start");
  }
  RETURN_IF_ERROR(table_.CheckShape(*out, "clear-log tracker"));
  const int64_t start = MonotonicNowNs();
  CollectStats stats;
  for (size_t i = 0; i < table_.size(); ++i) {
    DirtyBitmap& dst = out->entries()[i].bitmap;
    absl::Span<uint64_t> words(scratch_.data(), dst.num_words());
    RETURN_IF_ERROR(ops_->GetDirtyLog(table_.slots()[i].slot, words));
    for (uint64_t w : words) stats.pages += __builtin_popcountll(w);
    dst.MergeFromWords(words);
  }
  stats.duration_ns = MonotonicNowNs() - start;
  return stats;
}

absl::Status ClearLogTracker::Reprotect(uint32_t slot, uint64_t first_page,
                                        uint64_t npages) {
  const PageRun run{slot, first_page, npages, 0};
  return ReprotectRuns(absl::MakeConstSpan(&run, 1));
}

absl::Status ClearLogTracker::ReprotectRuns(absl::Span<const PageRun> runs) {
  if (!started_) {
    return absl::FailedPreconditionError("clear-log tracker: Reprotect before Start");
  }
  // Validate everything before the first ioctl, so a bad run changes nothing.
  for (const PageRun& r : runs) {
    const int idx = table_.IndexOf(r.slot);
    if (idx < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("clear-log tracker: Reprotect of untracked slot ", r.slot));
    }
    const uint64_t np = table_.slots()[idx].npages();
    if (r.first_page > np || r.npages > np - r.first_page) {
      return absl::InvalidArgumentError(absl::StrCat(
          "clear-log tracker: Reprotect pages [", r.first_page, ", +",
          r.npages, ") outside slot ", r.slot, " (", np, " pages)"));
    }
  }
  // Per slot: the word range the runs touched, so planning and zeroing cost
  // O(pages in runs), not O(slot size).
  std::vector<std::pair<size_t, size_t>> touched(table_.size(),
                                                 {SIZE_MAX, 0});
  for (const PageRun& r : runs) {
    if (r.npages == 0) continue;
    const int idx = table_.IndexOf(r.slot);
    masks_[idx].SetRange(r.first_page, r.npages);
    auto& [lo, hi] = touched[idx];
    lo = std::min<size_t>(lo, r.first_page / 64);
    hi = std::max<size_t>(hi, (r.first_page + r.npages + 63) / 64);
  }
  absl::Status status;
  for (size_t idx = 0; idx < table_.size(); ++idx) {
    auto [lo, hi] = touched[idx];
    if (lo >= hi) continue;
    DirtyBitmap& mask = masks_[idx];
    for (const ClearChunk& c :
         PlanClearChunks(mask, options_.chunk_pages, lo, hi)) {
      if (status.ok()) {
        absl::Span<const uint64_t> words = mask.words().subspan(
            c.first_page / 64, DirtyBitmap::WordsFor(c.num_pages));
        status = ops_->ClearDirtyLog(table_.slots()[idx].slot, c.first_page,
                                     c.num_pages, words);
        ++clear_calls_;
      }
      // The chunks cover every set word, so zeroing them leaves the mask
      // all zero for the next call, error or not (DirtyLog gives every run
      // back on error; re-protecting some of them early only costs a resend).
      mask.ClearRange(c.first_page, c.num_pages);
    }
  }
  return status;
}

absl::Status ClearLogTracker::Stop() {
  if (!started_) return absl::OkStatus();
  started_ = false;
  return DisableLoggingOnAll(ops_.get(), table_.slots());
}

}  // namespace ferry::mmu::kvm
