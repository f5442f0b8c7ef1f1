// Private pieces of ShadowMmu shared by its .cc files.
#ifndef FERRY_MMU_SOFTMMU_SHADOW_MMU_INTERNAL_H_
#define FERRY_MMU_SOFTMMU_SHADOW_MMU_INTERNAL_H_

#include <cstdint>
#include <vector>

#include "mmu/dirty_bitmap.h"
#include "mmu/memslot.h"
#include "mmu/softmmu/guest_walker.h"
#include "mmu/softmmu/pte_list.h"
#include "mmu/softmmu/shadow_mmu.h"

namespace ferry::mmu::softmmu {

struct ShadowMmu::SlotState {
  explicit SlotState(const Memslot& slot)
      : m(slot),
        base_gfn(slot.base_gfn()),
        npages(slot.npages()),
        rmap(slot.npages()),
        dirty(slot.npages()) {}
  bool ContainsHva(const uint8_t* hva) const {
    return hva >= m.hva && hva < m.hva + m.size;
  }

  const Memslot m;
  const uint64_t base_gfn;
  const uint64_t npages;
  std::vector<PteList> rmap;  // per page: leaf sptes mapping it
  DirtyBitmap dirty;          // atomic words
  bool logging = false;
};

// GuestPhys over the memslots; MarkWritten feeds dirty logging. Used with
// the mmu lock held.
class ShadowMmu::Phys : public GuestPhys {
 public:
  explicit Phys(ShadowMmu* mmu) : mmu_(mmu) {}
  uint8_t* GfnToHva(uint64_t gfn) override { return mmu_->GfnToHva(gfn); }
  void MarkWritten(uint64_t gfn) override { mmu_->MarkDirty(gfn); }

 private:
  ShadowMmu* mmu_;
};

}  // namespace ferry::mmu::softmmu

#endif  // FERRY_MMU_SOFTMMU_SHADOW_MMU_INTERNAL_H_
