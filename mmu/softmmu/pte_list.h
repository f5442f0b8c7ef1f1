// PteList: a set of spte pointers in one word while it holds one entry and
// in a chain of fixed-size descriptor blocks once it holds more (KVM's
// pte_list_desc). Used for a shadow page's parent sptes and for the rmap
// (gfn -> leaf sptes mapping it), where nearly every list has 0 or 1 entry.
//
// Representation of head_:
//   0                   empty
//   ptr, bit 0 clear    exactly one entry: the spte pointer itself
//   ptr | 1             a PteListDesc chain
// Chain invariant: only the head descriptor may be partly full (count in
// [1, kExt]); every descriptor after it is full; a chain holds >= 2 entries
// (removing down to one entry folds it back into the single-pointer form).
// Order of entries is unspecified. Not thread-safe: callers hold the mmu lock.
#ifndef FERRY_MMU_SOFTMMU_PTE_LIST_H_
#define FERRY_MMU_SOFTMMU_PTE_LIST_H_

#include <cstddef>
#include <cstdint>

namespace ferry::mmu::softmmu {

struct PteListDesc {
  static constexpr int kExt = 14;  // KVM's PTE_LIST_EXT: 128-byte blocks
  uint32_t count = 0;
  PteListDesc* more = nullptr;
  uint64_t* sptes[kExt] = {};
};
static_assert(sizeof(PteListDesc) == 128, "two cache lines per block");

class PteList {
 public:
  PteList() = default;
  PteList(const PteList&) = delete;
  PteList& operator=(const PteList&) = delete;
  PteList(PteList&& other) noexcept : head_(other.head_) { other.head_ = 0; }
  PteList& operator=(PteList&& other) noexcept;
  ~PteList() { Clear(); }

  bool empty() const { return head_ == 0; }
  void Add(uint64_t* sptep);
  // Returns false if `sptep` is not in the list.
  bool Remove(uint64_t* sptep);
  bool Contains(const uint64_t* sptep) const;
  size_t Count() const;
  // Any one entry, or nullptr if empty.
  uint64_t* First() const;
  void Clear();
  // Descriptor blocks currently allocated (memory accounting).
  size_t NumDescs() const;

  // fn(uint64_t* sptep) for every entry; fn must not modify the list.
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    if (head_ == 0) return;
    if ((head_ & 1) == 0) {
      fn(reinterpret_cast<uint64_t*>(head_));
      return;
    }
    for (const PteListDesc* d = desc(); d != nullptr; d = d->more) {
      for (uint32_t i = 0; i < d->count; ++i) fn(d->sptes[i]);
    }
  }

 private:
  PteListDesc* desc() const {
    return reinterpret_cast<PteListDesc*>(head_ & ~uintptr_t{1});
  }
  void set_desc(PteListDesc* d) {
    head_ = d == nullptr ? 0 : (reinterpret_cast<uintptr_t>(d) | 1);
  }

  uintptr_t head_ = 0;
};
static_assert(sizeof(PteList) == sizeof(void*), "one word per rmap head");

}  // namespace ferry::mmu::softmmu

#endif  // FERRY_MMU_SOFTMMU_PTE_LIST_H_
