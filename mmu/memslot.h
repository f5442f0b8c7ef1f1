// Memslot: one contiguous range of guest-physical memory backed by host
// memory, the unit KVM dirty-logs (KVM_SET_USER_MEMORY_REGION, one dirty
// bitmap per slot). Kept free of any mmap/memfd code so bitmaps and trackers
// can name slots without depending on how guest RAM is allocated.
#ifndef FERRY_MMU_MEMSLOT_H_
#define FERRY_MMU_MEMSLOT_H_

#include <cstdint>

namespace ferry::mmu {

// ferry tracks dirtiness at 4 KiB granularity, like KVM's dirty log on x86,
// even where the host backs a slot with huge pages.
inline constexpr uint64_t kPageShift = 12;
inline constexpr uint64_t kPageSize = uint64_t{1} << kPageShift;

inline constexpr uint64_t GpaToGfn(uint64_t gpa) { return gpa >> kPageShift; }
inline constexpr uint64_t GfnToGpa(uint64_t gfn) { return gfn << kPageShift; }

struct Memslot {
  uint32_t slot = 0;    // KVM slot id (as_id in bits 16..31 stays 0 here)
  uint64_t gpa = 0;     // guest-physical base, page aligned
  uint64_t size = 0;    // bytes, a non-zero multiple of kPageSize
  uint8_t* hva = nullptr;  // host mapping of [gpa, gpa + size)
  uint64_t memfd_offset = 0;  // where the slot starts in the backing memfd

  uint64_t npages() const { return size >> kPageShift; }
  uint64_t base_gfn() const { return gpa >> kPageShift; }
  bool Contains(uint64_t addr) const { return addr >= gpa && addr - gpa < size; }
};

// A run of consecutive pages of one slot: the sender's (gpa, length) unit.
struct PageRun {
  uint32_t slot = 0;
  uint64_t first_page = 0;  // page index within the slot
  uint64_t npages = 0;
  uint64_t gpa = 0;         // slot gpa + first_page * kPageSize

  uint64_t length() const { return npages << kPageShift; }
  friend bool operator==(const PageRun& a, const PageRun& b) {
    return a.slot == b.slot && a.first_page == b.first_page &&
           a.npages == b.npages && a.gpa == b.gpa;
  }
};

}  // namespace ferry::mmu

#endif  // FERRY_MMU_MEMSLOT_H_
