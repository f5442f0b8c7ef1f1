#include "mmu/softmmu/test_util.h"

#include <sys/mman.h>

#include <cstdlib>


namespace ferry::mmu::softmmu {

GuestRam::GuestRam(std::vector<SlotSpec> specs) {
  for (const SlotSpec& s : specs) {
    const uint64_t size = s.npages * kPageSize;
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) std::abort();
    Memslot m;
    m.slot = s.id;
    m.gpa = s.gpa;
    m.size = size;
    m.hva = static_cast<uint8_t*>(p);
    slots_.push_back(m);
  }
}

GuestRam::~GuestRam() {
  for (const Memslot& m : slots_) munmap(m.hva, m.size);
}

uint8_t* GuestRam::Hva(uint64_t gpa) const {
  for (const Memslot& m : slots_) {
    if (m.Contains(gpa)) return m.hva + (gpa - m.gpa);
  }
  return nullptr;
}

GuestPageTables::GuestPageTables(PagingMode mode, WriteFn write, ReadFn read,
                                 uint64_t pool_gpa)
    : mode_(mode),
      write_(std::move(write)),
      read_(std::move(read)),
      next_table_(pool_gpa) {
  cr3_ = NewTable();
}

uint64_t GuestPageTables::GpteGpa(uint64_t gva, int level) const {
  const int levels = GuestLevels(mode_);
  const int size = levels == 4 ? 8 : 4;
  uint64_t table = cr3_;
  for (int l = levels; l > level; --l) {
    const uint64_t gpte = read_(table + GpteIndex(levels, gva, l) * size, size);
    table = GpteFrameGfn(gpte, size) << 12;
  }
  return table + GpteIndex(levels, gva, level) * size;
}

void GuestPageTables::Map(uint64_t gva, uint64_t gpa, uint64_t flags,
                          int level) {
  const int levels = GuestLevels(mode_);
  const int size = levels == 4 ? 8 : 4;
  uint64_t table = cr3_;
  for (int l = levels; l > level; --l) {
    const uint64_t at = table + GpteIndex(levels, gva, l) * size;
    uint64_t gpte = read_(at, size);
    if ((gpte & kGptePresent) == 0) {
      gpte = NewTable() | kGptePresent | kGpteWrite | kGpteUser |
             kGpteAccessed;
      write_(at, gpte, size);
    }
    table = GpteFrameGfn(gpte, size) << 12;
  }
  uint64_t leaf = gpa | flags | kGptePresent;
  if (level == 2) leaf |= kGptePs;
  write_(table + GpteIndex(levels, gva, level) * size, leaf, size);
}

}  // namespace ferry::mmu::softmmu
