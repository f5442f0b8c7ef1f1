// ReferenceModel (testonly): the trivially-correct oracle for the
// differential test. It owns a copy of guest memory and on every access
// walks the guest page tables from scratch — no shadow pages, no caches —
// setting A/D bits like the hardware; its dirty log is simply "pages written
// (by any means, A/D updates included) since the last get/clear".
// Written independently of guest_walker.cc on purpose.
#ifndef FERRY_MMU_SOFTMMU_REFERENCE_MODEL_H_
#define FERRY_MMU_SOFTMMU_REFERENCE_MODEL_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "mmu/memslot.h"
#include "mmu/softmmu/guest_walker.h"
#include "mmu/softmmu/shadow_mmu.h"

namespace ferry::mmu::softmmu {

class ReferenceModel {
 public:
  struct Cpu {
    PagingMode mode = PagingMode::kDirect;
    uint64_t cr3 = 0;
    bool user = false;
  };

  // Copies the contents of `slots` into memory of its own.
  explicit ReferenceModel(const std::vector<Memslot>& slots);

  // One access within one page.
  AccessResult Access(const Cpu& cpu, uint64_t gva, uint8_t* buf, size_t len,
                      bool write);
  bool WriteGpa(uint64_t gpa, const uint8_t* src, size_t len);

  void EnableLog(uint32_t slot);
  void DisableLog(uint32_t slot);
  // Sorted pages (indexes within the slot) dirty since the last clear.
  std::vector<uint64_t> GetLog(uint32_t slot, bool clear);
  void ClearLog(uint32_t slot, uint64_t first, uint64_t n);

  // Guest memory of `slot` (to compare with the real one).
  const std::vector<uint8_t>& memory(uint32_t slot) const {
    return mem_.at(slot);
  }

 private:
  uint8_t* Ptr(uint64_t gpa);
  void Written(uint64_t gpa);
  uint64_t Load(uint64_t gpa, int size);
  void Store(uint64_t gpa, uint64_t v, int size);

  std::vector<Memslot> slots_;
  std::map<uint32_t, std::vector<uint8_t>> mem_;
  std::map<uint32_t, bool> logging_;
  std::map<uint32_t, std::set<uint64_t>> dirty_;
};

}  // namespace ferry::mmu::softmmu

#endif  // FERRY_MMU_SOFTMMU_REFERENCE_MODEL_H_
