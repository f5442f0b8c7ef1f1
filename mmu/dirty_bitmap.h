// DirtyBitmap: one bit per 4 KiB page of one memslot.
//
// Layout is KVM's (KVM_GET_DIRTY_LOG / KVM_CLEAR_DIRTY_LOG): an array of
// little-endian u64 words, bit i of word w = page w * 64 + i, sized to a
// whole number of words. The kernel may therefore fill words() in place.
//
// Invariant: bits at or beyond npages() in the last word are zero. Every
// method keeps it; after filling words() by hand call ClearTailBits().
//
// Concurrency: Set, Clear, SetRange, ClearRange, MergeFrom and TakeAndClear
// update each word with one relaxed atomic read-modify-write, so any number
// of threads may call them at once without losing a bit (a page set during
// TakeAndClear lands either in the taken copy or stays behind, never
// neither). Readers (Test, Count, Next*, ForEach*) load each word with a
// relaxed atomic load: concurrent with writers they see every word at some
// point in time, not one global snapshot. Copy, Swap, assignment, SetAll,
// ClearAll and mutable_words() need exclusive access.
//
// Scanning: zero words are skipped four at a time. On a 64 GiB slot (16M
// pages, 2 MiB of bitmap) an empty scan takes ~36 us and a 0.1% randomly
// dirty one ~0.3 ms; the rest is one unpredictable branch per non-zero word
// (~10-20 ns per isolated dirty page), which a summary bitmap of non-zero
// words would not remove, while it would add a second atomic on a shared
// line to every Set. So there is none; bench/README.md has the figures.

#ifndef FERRY_MMU_DIRTY_BITMAP_H_
#define FERRY_MMU_DIRTY_BITMAP_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/base/macros.h"
#include "absl/types/span.h"

namespace ferry::mmu {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "KVM dirty bitmaps are little-endian u64 words; so are ours");

class DirtyBitmap {
 public:
  static constexpr uint64_t kBitsPerWord = 64;

  DirtyBitmap() = default;
  explicit DirtyBitmap(uint64_t npages);
  DirtyBitmap(const DirtyBitmap& other);
  DirtyBitmap& operator=(const DirtyBitmap& other);
  DirtyBitmap(DirtyBitmap&& other) noexcept;
  DirtyBitmap& operator=(DirtyBitmap&& other) noexcept;
  ~DirtyBitmap() = default;

  uint64_t npages() const { return npages_; }
  size_t num_words() const { return num_words_; }
  static size_t WordsFor(uint64_t npages) {
    return static_cast<size_t>((npages + kBitsPerWord - 1) / kBitsPerWord);
  }

  // Single pages. `page` < npages() (asserted in debug builds).
  void Set(uint64_t page) {
    ABSL_ASSERT(page < npages_);
    __atomic_fetch_or(&words_[page / 64], Bit(page), __ATOMIC_RELAXED);
  }
  void Clear(uint64_t page) {
    ABSL_ASSERT(page < npages_);
    __atomic_fetch_and(&words_[page / 64], ~Bit(page), __ATOMIC_RELAXED);
  }
  bool Test(uint64_t page) const {
    ABSL_ASSERT(page < npages_);
    return (Load(page / 64) & Bit(page)) != 0;
  }

  // [first, first + n), clamped to npages(). Return how many bits changed.
  uint64_t SetRange(uint64_t first, uint64_t n);
  uint64_t ClearRange(uint64_t first, uint64_t n);
  void SetAll();
  void ClearAll();

  // ORs `other` (same npages, else the process aborts: mixing slots is a
  // bug) into this bitmap; returns the number of bits newly set here.
  uint64_t MergeFrom(const DirtyBitmap& other);
  // Same, from a raw word array of num_words() words (e.g. a kernel buffer).
  uint64_t MergeFromWords(absl::Span<const uint64_t> words);

  // Moves every set bit into *out (same npages; its old contents are
  // overwritten) and clears it here, word by word with atomic exchange, so
  // concurrent setters lose nothing. Returns the number of bits taken.
  uint64_t TakeAndClear(DirtyBitmap* out);
  // O(1) exchange of storage; needs exclusive access to both.
  void Swap(DirtyBitmap& other) noexcept;

  uint64_t Count() const;  // popcount
  bool Empty() const { return NextNonZeroWord(0) == num_words_; }

  // First set (clear) page at or after `from`; npages() if there is none.
  uint64_t NextSetBit(uint64_t from) const;
  uint64_t NextClearBit(uint64_t from) const;

  // fn(uint64_t page) for each set bit, ascending.
  template <typename Fn>
  void ForEachSetBit(Fn&& fn) const;
  // fn(uint64_t first_page, uint64_t npages) for each maximal run of set
  // bits, ascending; runs may span any number of words.
  template <typename Fn>
  void ForEachRun(Fn&& fn) const;

  // Raw little-endian u64 words for kernel fills (KVM_GET_DIRTY_LOG writes
  // exactly num_words() * 8 bytes here).
  absl::Span<uint64_t> mutable_words() { return {words_.get(), num_words_}; }
  absl::Span<const uint64_t> words() const { return {words_.get(), num_words_}; }
  void ClearTailBits();

  friend bool operator==(const DirtyBitmap& a, const DirtyBitmap& b);
  friend bool operator!=(const DirtyBitmap& a, const DirtyBitmap& b) {
    return !(a == b);
  }

 private:
  static uint64_t Bit(uint64_t page) { return uint64_t{1} << (page % 64); }
  uint64_t Load(size_t w) const {
    return __atomic_load_n(&words_[w], __ATOMIC_RELAXED);
  }
  // Index of the first non-zero word at or after w; num_words() if none.
  size_t NextNonZeroWord(size_t w) const {
    const uint64_t* p = words_.get();
    while (w + 4 <= num_words_) {
      // Four relaxed loads OR-ed: one branch per 256 pages when sparse.
      uint64_t any = __atomic_load_n(p + w, __ATOMIC_RELAXED) |
                     __atomic_load_n(p + w + 1, __ATOMIC_RELAXED) |
                     __atomic_load_n(p + w + 2, __ATOMIC_RELAXED) |
                     __atomic_load_n(p + w + 3, __ATOMIC_RELAXED);
      if (any != 0) break;
      w += 4;
    }
    while (w < num_words_ && Load(w) == 0) ++w;
    return w;
  }

  uint64_t npages_ = 0;
  size_t num_words_ = 0;
  std::unique_ptr<uint64_t[]> words_;
};

template <typename Fn>
void DirtyBitmap::ForEachSetBit(Fn&& fn) const {
  for (size_t w = NextNonZeroWord(0); w < num_words_;
       w = NextNonZeroWord(w + 1)) {
    uint64_t bits = Load(w);
    const uint64_t base = uint64_t{w} * 64;
    while (bits != 0) {
      fn(base + static_cast<uint64_t>(__builtin_ctzll(bits)));
      bits &= bits - 1;  // drop the lowest set bit
    }
  }
}

template <typename Fn>
void DirtyBitmap::ForEachRun(Fn&& fn) const {
  bool open = false;
  uint64_t start = 0;
  size_t w = NextNonZeroWord(0);
  while (w < num_words_) {
    const uint64_t bits = Load(w);
    const uint64_t base = uint64_t{w} * 64;
    unsigned pos = 0;  // next bit of this word to look at
    while (pos < 64) {
      const uint64_t from_pos = ~uint64_t{0} << pos;
      if (open) {
        const uint64_t zeros = ~bits & from_pos;
        if (zeros == 0) break;  // run continues into the next word
        pos = static_cast<unsigned>(__builtin_ctzll(zeros));
        fn(start, base + pos - start);
        open = false;
      } else {
        const uint64_t ones = bits & from_pos;
        if (ones == 0) break;
        pos = static_cast<unsigned>(__builtin_ctzll(ones));
        start = base + pos;
        open = true;
      }
    }
    // Inside a run the next word matters even if zero; outside, skip zeros.
    w = open ? w + 1 : NextNonZeroWord(w + 1);
  }
  if (open) fn(start, npages_ - start);
}

}  // namespace ferry::mmu

#endif  // FERRY_MMU_DIRTY_BITMAP_H_
