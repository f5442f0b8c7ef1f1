// DirtySet: one DirtyBitmap per memslot, the unit trackers fill and the
// pending log keeps. Entries keep the order of the slots they were made
// from (GuestMemory sorts by gpa), which is also the order runs come out.
//
// Concurrency: the set's shape is fixed at construction; the bitmaps inside
// follow DirtyBitmap's rules (atomic per word for writers).
#ifndef FERRY_MMU_DIRTY_SET_H_
#define FERRY_MMU_DIRTY_SET_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "mmu/dirty_bitmap.h"
#include "mmu/memslot.h"

namespace ferry::mmu {

class DirtySet {
 public:
  struct Entry {
    uint32_t slot = 0;
    uint64_t gpa = 0;
    DirtyBitmap bitmap;  // npages of the slot
  };

  DirtySet() = default;
  // Empty bitmaps shaped like `slots`.
  static DirtySet ForSlots(absl::Span<const Memslot> slots);

  absl::Span<Entry> entries() { return absl::MakeSpan(entries_); }
  absl::Span<const Entry> entries() const { return entries_; }
  size_t size() const { return entries_.size(); }

  // The bitmap of slot id `slot`, or NOT_FOUND.
  absl::StatusOr<DirtyBitmap*> Get(uint32_t slot);
  absl::StatusOr<const DirtyBitmap*> Get(uint32_t slot) const;

  // Same slot ids, gpas and page counts, in the same order.
  bool SameLayout(const DirtySet& other) const;

  // ORs `other` in; FAILED_PRECONDITION unless SameLayout. Returns the
  // number of pages newly set here.
  absl::StatusOr<uint64_t> MergeFrom(const DirtySet& other);

  // Sets every page overlapping [gpa, gpa + len); len 0 marks nothing.
  // The range may cross adjacent slots; a byte outside every slot is
  // NOT_FOUND and then nothing is marked. Returns pages newly set.
  absl::StatusOr<uint64_t> MarkGpaRange(uint64_t gpa, uint64_t len);

  uint64_t Count() const;
  bool Empty() const;
  void ClearAll();

  // fn(const PageRun&) for every run of every slot, slot order then page.
  template <typename Fn>
  void ForEachRun(Fn&& fn) const {
    for (const Entry& e : entries_) {
      e.bitmap.ForEachRun([&](uint64_t first, uint64_t n) {
        fn(PageRun{e.slot, first, n, e.gpa + (first << kPageShift)});
      });
    }
  }

 private:
  std::vector<Entry> entries_;
};

}  // namespace ferry::mmu

#endif  // FERRY_MMU_DIRTY_SET_H_
