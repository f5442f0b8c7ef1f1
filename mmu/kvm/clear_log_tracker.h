// ClearLogTracker (DirtyTrackingMode::kClearLog): KVM dirty logging with
// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (api.rst 4.117 KVM_CLEAR_DIRTY_LOG,
// 7.18 the capability).
//
//   Start    enables the capability (with KVM_DIRTY_LOG_INITIALLY_SET when
//            the kernel has it), then KVM_MEM_LOG_DIRTY_PAGES per slot.
//   Collect  KVM_GET_DIRTY_LOG per slot: copies the bitmap, re-protects
//            nothing. A reported page stays set in KVM until cleared.
//   ReprotectRuns  KVM_CLEAR_DIRTY_LOG on just the pages about to be
//            copied (DirtyLog::TakeBatch calls it before it hands them out),
//            so a page the guest keeps rewriting faults once per copy, not
//            once per round.
//
// INITIALLY_SET (the default when supported): enabling logging sets every
// bit and write-protects nothing, so Start costs ~0.1 ms instead of
// 3–11 ms, and the first Collect reports EVERY page of every slot — a
// superset of the contract's "pages written since Start", never a miss.
// With DirtyLog round 0 this costs nothing: DirtyLog::Start(all_pending =
// true) already puts every page in pending (round 0 sends everything), the
// all-ones Collect adds no new page, and TakeBatch's KVM_CLEAR_DIRTY_LOG
// before each copy is what write-protects each chunk for the first time —
// the up-front protect is spread over round 0's copies. A caller that
// starts without all_pending simply sends everything once too.
//
// Chunking: runs are OR-ed into a per-slot 64-page-aligned mask, then one
// KVM_CLEAR_DIRTY_LOG is issued per chunk of at most `chunk_pages` pages
// that has a bit set; a chunk starts at the first non-zero mask word and
// may end short at the slot's end (the one unaligned length KVM accepts).
// Per call KVM costs ~9 µs plus ~30 ns per page at ≥ 32K pages and holds
// mmu_lock throughout (KVM-FACTS.md), so the default 64K-page (256 MiB)
// chunk keeps the fixed cost under 0.5% of a full chunk while bounding the
// lock hold to ~2 ms for a fully dirty chunk. (QEMU clears 1 GiB chunks by
// default, clear_bmap_shift = 18.) Chunks with nothing to clear are not
// issued at all.
//
// Manual protect cannot be switched off through kmod once on, so Stop
// leaves it on (a later Start reuses it); a BitmapTracker refuses such a VM.
//
// Thread-safety: one caller at a time (DirtyLog serialises every call).
#ifndef FERRY_MMU_KVM_CLEAR_LOG_TRACKER_H_
#define FERRY_MMU_KVM_CLEAR_LOG_TRACKER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kmod/vm.h"
#include "mmu/dirty_bitmap.h"
#include "mmu/dirty_set.h"
#include "mmu/dirty_tracker.h"
#include "mmu/kvm/slot_table.h"
#include "mmu/kvm/vm_dirty_ops.h"
#include "mmu/memslot.h"

namespace ferry::mmu::kvm {

// One planned KVM_CLEAR_DIRTY_LOG: pages [first_page, first_page +
// num_pages) of a slot, mask = the slot mask's words from first_page / 64.
struct ClearChunk {
  uint64_t first_page = 0;  // multiple of 64
  uint32_t num_pages = 0;   // multiple of 64 unless it ends at the slot end

  friend bool operator==(const ClearChunk& a, const ClearChunk& b) {
    return a.first_page == b.first_page && a.num_pages == b.num_pages;
  }
};

inline constexpr uint64_t kDefaultClearChunkPages = 64 * 1024;
// num_pages is a u32 in struct kvm_clear_dirty_log.
inline constexpr uint64_t kMaxClearChunkPages = (uint64_t{1} << 31) - 64;

// Plans the calls that re-protect every page set in `mask` (a slot's
// bitmap) among words [first_word, end_word): each chunk starts at a
// non-zero word, spans at most `chunk_pages` pages (a positive multiple of
// 64, at most kMaxClearChunkPages) and is cut at the slot's end; words
// between chunks are all zero. Pure; the caller checks chunk_pages.
std::vector<ClearChunk> PlanClearChunks(const DirtyBitmap& mask,
                                        uint64_t chunk_pages,
                                        size_t first_word = 0,
                                        size_t end_word = SIZE_MAX);

class ClearLogTracker : public DirtyTracker {
 public:
  struct Options {
    // Use KVM_DIRTY_LOG_INITIALLY_SET if the kernel offers it.
    bool initially_set = true;
    // Pages per KVM_CLEAR_DIRTY_LOG; a positive multiple of 64.
    uint64_t chunk_pages = kDefaultClearChunkPages;
  };

  // Over a real VM; `vm` must outlive the tracker.
  static absl::StatusOr<std::unique_ptr<ClearLogTracker>> Create(
      kmod::VmFd* vm, const Options& options);
  static absl::StatusOr<std::unique_ptr<ClearLogTracker>> Create(
      std::unique_ptr<VmDirtyOps> ops, const Options& options);

  DirtyTrackingMode mode() const override {
    return DirtyTrackingMode::kClearLog;
  }
  absl::Status Start(absl::Span<const Memslot> slots) override;
  absl::StatusOr<CollectStats> Collect(DirtySet* out) override;
  bool needs_reprotect() const override { return true; }
  absl::Status Reprotect(uint32_t slot, uint64_t first_page,
                         uint64_t npages) override;
  absl::Status ReprotectRuns(absl::Span<const PageRun> runs) override;
  absl::Status Stop() override;

  // Whether the last Start ran with INITIALLY_SET (its first Collect then
  // reports every page). True also when manual protect was already on and
  // the bit is unknown.
  bool initially_set() const { return initially_set_; }
  // KVM_CLEAR_DIRTY_LOG calls issued so far (for metrics and tests).
  uint64_t clear_calls() const { return clear_calls_; }

 private:
  ClearLogTracker(std::unique_ptr<VmDirtyOps> ops, const Options& options)
      : ops_(std::move(ops)), options_(options) {}

  std::unique_ptr<VmDirtyOps> ops_;
  const Options options_;
  bool started_ = false;
  bool initially_set_ = false;
  uint64_t clear_calls_ = 0;
  SlotTable table_;
  std::vector<uint64_t> scratch_;    // GET buffer, words of the largest slot
  std::vector<DirtyBitmap> masks_;   // per slot; all zero between calls
};

}  // namespace ferry::mmu::kvm

#endif  // FERRY_MMU_KVM_CLEAR_LOG_TRACKER_H_
