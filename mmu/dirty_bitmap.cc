#include "mmu/dirty_bitmap.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/base/internal/raw_logging.h"

namespace ferry::mmu {
namespace {

// Without -mpopcnt, __builtin_popcountll is a libgcc call (~4x slower on
// the bulk loops). Build the hot loops twice and pick once at run time:
// every x86-64 host KVM runs on has POPCNT, but nothing here assumes it.
#if defined(__x86_64__)
#define FERRY_POPCNT_TARGET __attribute__((target("popcnt")))
bool HavePopcnt() {
  static const bool have = __builtin_cpu_supports("popcnt");
  return have;
}
#else
#define FERRY_POPCNT_TARGET
bool HavePopcnt() { return false; }
#endif

inline uint64_t LoadWord(const uint64_t* p) {
  return __atomic_load_n(p, __ATOMIC_RELAXED);
}

template <bool kPopcnt>
struct Kernels;

#define FERRY_DEFINE_KERNELS(FAST, ATTR)                                       \
  template <>                                                                  \
  struct Kernels<FAST> {                                                       \
    ATTR static uint64_t Count(const uint64_t* w, size_t n) {                  \
      uint64_t c = 0;                                                          \
      for (size_t i = 0; i < n; ++i) c += __builtin_popcountll(LoadWord(w + i));   \
      return c;                                                                \
    }                                                                          \
    ATTR static uint64_t Merge(uint64_t* dst, const uint64_t* src, size_t n) { \
      uint64_t added = 0;                                                      \
      for (size_t i = 0; i < n; ++i) {                                         \
        const uint64_t s = LoadWord(src + i);                                      \
        /* Skip the locked RMW when nothing new: the common case. */         \
        if (s == 0 || (s & ~LoadWord(dst + i)) == 0) continue;                     \
        const uint64_t old = __atomic_fetch_or(dst + i, s, __ATOMIC_RELAXED);  \
        added += __builtin_popcountll(s & ~old);                               \
      }                                                                        \
      return added;                                                            \
    }                                                                          \
    ATTR static uint64_t Take(uint64_t* src, uint64_t* out, size_t n) {        \
      uint64_t taken = 0;                                                      \
      for (size_t i = 0; i < n; ++i) {                                         \
        uint64_t v = LoadWord(src + i);                                            \
        if (v != 0) {                                                          \
          v = __atomic_exchange_n(src + i, uint64_t{0}, __ATOMIC_RELAXED);     \
          taken += __builtin_popcountll(v);                                    \
        }                                                                      \
        out[i] = v;                                                            \
      }                                                                        \
      return taken;                                                            \
    }                                                                          \
  };

FERRY_DEFINE_KERNELS(true, FERRY_POPCNT_TARGET)
FERRY_DEFINE_KERNELS(false, )
#undef FERRY_DEFINE_KERNELS

// Mask of bits [lo, hi) of a word, 0 ≤ lo < hi ≤ 64.
inline uint64_t MaskRange(unsigned lo, unsigned hi) {
  const uint64_t upper = hi == 64 ? ~uint64_t{0} : (uint64_t{1} << hi) - 1;
  return upper & (~uint64_t{0} << lo);
}

// Applies op(word_ptr, mask) to each word overlapping [first, first + n).
template <typename Op>
uint64_t ForEachMaskedWord(uint64_t first, uint64_t n, Op op) {
  uint64_t changed = 0;
  const uint64_t end = first + n;
  for (uint64_t p = first; p < end;) {
    const uint64_t w = p / 64;
    const unsigned lo = static_cast<unsigned>(p % 64);
    const unsigned hi =
        static_cast<unsigned>(std::min<uint64_t>(64, end - w * 64));
    changed += op(w, MaskRange(lo, hi));
    p = (w + 1) * 64;
  }
  return changed;
}

}  // namespace

DirtyBitmap::DirtyBitmap(uint64_t npages)
    : npages_(npages),
      num_words_(WordsFor(npages)),
      words_(new uint64_t[WordsFor(npages)]()) {}

DirtyBitmap::DirtyBitmap(const DirtyBitmap& other)
    : npages_(other.npages_),
      num_words_(other.num_words_),
      words_(new uint64_t[other.num_words_]) {
  if (num_words_ != 0) {
    std::memcpy(words_.get(), other.words_.get(), num_words_ * 8);
  }
}

DirtyBitmap& DirtyBitmap::operator=(const DirtyBitmap& other) {
  if (this != &other) {
    DirtyBitmap copy(other);
    Swap(copy);
  }
  return *this;
}

DirtyBitmap::DirtyBitmap(DirtyBitmap&& other) noexcept
    : npages_(std::exchange(other.npages_, 0)),
      num_words_(std::exchange(other.num_words_, 0)),
      words_(std::move(other.words_)) {}

DirtyBitmap& DirtyBitmap::operator=(DirtyBitmap&& other) noexcept {
  npages_ = std::exchange(other.npages_, 0);
  num_words_ = std::exchange(other.num_words_, 0);
  words_ = std::move(other.words_);
  return *this;
}

void DirtyBitmap::Swap(DirtyBitmap& other) noexcept {
  std::swap(npages_, other.npages_);
  std::swap(num_words_, other.num_words_);
  std::swap(words_, other.words_);
}

uint64_t DirtyBitmap::SetRange(uint64_t first, uint64_t n) {
  if (first >= npages_) return 0;
  n = std::min(n, npages_ - first);
  uint64_t* words = words_.get();
  return ForEachMaskedWord(first, n, [words](uint64_t w, uint64_t mask) {
    if ((LoadWord(words + w) & mask) == mask) return uint64_t{0};
    const uint64_t old = __atomic_fetch_or(words + w, mask, __ATOMIC_RELAXED);
    return static_cast<uint64_t>(__builtin_popcountll(mask & ~old));
  });
}

uint64_t DirtyBitmap::ClearRange(uint64_t first, uint64_t n) {
  if (first >= npages_) return 0;
  n = std::min(n, npages_ - first);
  uint64_t* words = words_.get();
  return ForEachMaskedWord(first, n, [words](uint64_t w, uint64_t mask) {
    if ((LoadWord(words + w) & mask) == 0) return uint64_t{0};
    const uint64_t old = __atomic_fetch_and(words + w, ~mask, __ATOMIC_RELAXED);
    return static_cast<uint64_t>(__builtin_popcountll(mask & old));
  });
}

void DirtyBitmap::SetAll() {
  if (num_words_ == 0) return;
  std::memset(words_.get(), 0xff, num_words_ * 8);
  ClearTailBits();
}

void DirtyBitmap::ClearAll() {
  if (num_words_ != 0) std::memset(words_.get(), 0, num_words_ * 8);
}

void DirtyBitmap::ClearTailBits() {
  if (npages_ % 64 != 0) {
    words_[num_words_ - 1] &= (uint64_t{1} << (npages_ % 64)) - 1;
  }
}

uint64_t DirtyBitmap::MergeFrom(const DirtyBitmap& other) {
  ABSL_RAW_CHECK(other.npages_ == npages_,
                 "DirtyBitmap::MergeFrom: bitmaps of different slots");
  return MergeFromWords(other.words());
}

uint64_t DirtyBitmap::MergeFromWords(absl::Span<const uint64_t> words) {
  ABSL_RAW_CHECK(words.size() == num_words_,
                 "DirtyBitmap::MergeFromWords: word count mismatch");
  const uint64_t added =
      HavePopcnt() ? Kernels<true>::Merge(words_.get(), words.data(), num_words_)
                   : Kernels<false>::Merge(words_.get(), words.data(), num_words_);
  // A kernel buffer may carry garbage past npages (it must not, but the
  // tail invariant is ours to keep). Bits there were never counted as
  // pages, so subtract any we just let in.
  if (npages_ % 64 != 0 && num_words_ != 0) {
    const uint64_t tail = ~((uint64_t{1} << (npages_ % 64)) - 1);
    const uint64_t old = __atomic_fetch_and(&words_[num_words_ - 1], ~tail,
                                            __ATOMIC_RELAXED);
    return added - static_cast<uint64_t>(__builtin_popcountll(old & tail));
  }
  return added;
}

uint64_t DirtyBitmap::TakeAndClear(DirtyBitmap* out) {
  ABSL_RAW_CHECK(out != nullptr && out->npages_ == npages_,
                 "DirtyBitmap::TakeAndClear: bitmaps of different slots");
  return HavePopcnt()
             ? Kernels<true>::Take(words_.get(), out->words_.get(), num_words_)
             : Kernels<false>::Take(words_.get(), out->words_.get(), num_words_);
}

uint64_t DirtyBitmap::Count() const {
  return HavePopcnt() ? Kernels<true>::Count(words_.get(), num_words_)
                      : Kernels<false>::Count(words_.get(), num_words_);
}

uint64_t DirtyBitmap::NextSetBit(uint64_t from) const {
  if (from >= npages_) return npages_;
  size_t w = from / 64;
  uint64_t bits = Load(w) & (~uint64_t{0} << (from % 64));
  if (bits == 0) {
    w = NextNonZeroWord(w + 1);
    if (w == num_words_) return npages_;
    bits = Load(w);
  }
  return std::min<uint64_t>(npages_,
                            uint64_t{w} * 64 + __builtin_ctzll(bits));
}

uint64_t DirtyBitmap::NextClearBit(uint64_t from) const {
  if (from >= npages_) return npages_;
  size_t w = from / 64;
  uint64_t zeros = ~Load(w) & (~uint64_t{0} << (from % 64));
  while (zeros == 0) {
    if (++w == num_words_) return npages_;
    zeros = ~Load(w);
  }
  // Tail bits read as zero, so a run that reaches the end stops at npages.
  return std::min<uint64_t>(npages_,
                            uint64_t{w} * 64 + __builtin_ctzll(zeros));
}

bool operator==(const DirtyBitmap& a, const DirtyBitmap& b) {
  if (a.npages_ != b.npages_) return false;
  for (size_t i = 0; i < a.num_words_; ++i) {
    if (a.Load(i) != b.Load(i)) return false;
  }
  return true;
}

}  // namespace ferry::mmu
