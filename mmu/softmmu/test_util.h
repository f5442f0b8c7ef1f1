// Test helpers: guest RAM for memslots, and a builder of guest page tables.
#ifndef FERRY_MMU_SOFTMMU_TEST_UTIL_H_
#define FERRY_MMU_SOFTMMU_TEST_UTIL_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "mmu/memslot.h"
#include "mmu/softmmu/guest_walker.h"

namespace ferry::mmu::softmmu {

// Anonymous zeroed host memory for a set of slots (MAP_NORESERVE, so huge
// sparse slots cost only the pages touched).
class GuestRam {
 public:
  struct SlotSpec {
    uint32_t id;
    uint64_t gpa;
    uint64_t npages;
  };
  explicit GuestRam(std::vector<SlotSpec> specs);
  ~GuestRam();
  GuestRam(const GuestRam&) = delete;
  GuestRam& operator=(const GuestRam&) = delete;

  const std::vector<Memslot>& slots() const { return slots_; }
  // Host address of `gpa`, or nullptr if no slot has it.
  uint8_t* Hva(uint64_t gpa) const;

 private:
  std::vector<Memslot> slots_;
};

// Builds guest page tables (long mode or 32-bit) by writing gptes through
// `write` (gpa, value, size), allocating tables from a pool of zeroed pages
// starting at `pool_gpa`. Non-leaf gptes are P|W|U|A.
class GuestPageTables {
 public:
  using WriteFn = std::function<void(uint64_t gpa, uint64_t value, int size)>;
  using ReadFn = std::function<uint64_t(uint64_t gpa, int size)>;
  GuestPageTables(PagingMode mode, WriteFn write, ReadFn read,
                  uint64_t pool_gpa);

  uint64_t cr3() const { return cr3_; }
  // Maps gva -> gpa with leaf flags (P is added). level 2 = large page.
  void Map(uint64_t gva, uint64_t gpa, uint64_t flags, int level = 1);
  // gpa of the gpte used at `level` for gva (the tables must exist).
  uint64_t GpteGpa(uint64_t gva, int level) const;
  uint64_t NewTable() { return next_table_ += 4096, next_table_ - 4096; }

 private:
  PagingMode mode_;
  WriteFn write_;
  ReadFn read_;
  uint64_t next_table_;
  uint64_t cr3_;
};

}  // namespace ferry::mmu::softmmu

#endif  // FERRY_MMU_SOFTMMU_TEST_UTIL_H_
