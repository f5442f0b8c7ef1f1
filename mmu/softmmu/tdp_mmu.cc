// ShadowMmu: range operations on the direct (TDP) tree, walked with TdpIter
// instead of the rmap (KVM's tdp_mmu.c: zap_gfn_range, wrprot_gfn_range,
// clear_dirty_gfn_range).
#include <cstdint>
#include <vector>

#include "mmu/softmmu/shadow_mmu.h"
#include "mmu/softmmu/spte.h"
#include "mmu/softmmu/tdp_iter.h"

namespace ferry::mmu::softmmu {
namespace {
constexpr PageRole kDirectRootRole = PageRole::Make(4, 0, 0, true, kAccAll);
}  // namespace

uint64_t ShadowMmu::TdpZapGfnRange(uint64_t start_gfn, uint64_t end_gfn) {
  MmuLock lock(this);
  ShadowPage* root = FindPage(0, kDirectRootRole);
  if (root == nullptr) return 0;
  uint64_t n = 0;
  for (TdpIter it(root->spt.get(), 4, start_gfn, end_gfn); it.valid();
       it.Next()) {
    if (!IsPresent(it.spte())) continue;
    const uint64_t span = PagesPerSpte(it.level());
    const bool inside = it.gfn() >= start_gfn && it.gfn() + span <= end_gfn;
    if (it.level() > 1 && !inside) continue;  // descend instead
    ShadowPage* sp = OwnerOf(it.sptep());
    DropSpte(sp, static_cast<int>(it.sptep() - sp->spt.get()));
    ++n;  // the iterator re-reads the spte and will not descend
  }
  return n;
}

uint64_t ShadowMmu::TdpWriteProtectGfnRange(uint64_t start_gfn,
                                            uint64_t end_gfn) {
  MmuLock lock(this);
  ShadowPage* root = FindPage(0, kDirectRootRole);
  if (root == nullptr) return 0;
  uint64_t n = 0;
  for (TdpIter it(root->spt.get(), 4, start_gfn, end_gfn); it.valid();
       it.Next()) {
    if (it.level() != 1 || !IsWritable(it.spte())) continue;
    *it.sptep() &= ~kSpteWritable;
    need_flush_ = true;
    ++n;
  }
  return n;
}

uint64_t ShadowMmu::TdpHarvestDirtyGfnRange(uint64_t start_gfn,
                                            uint64_t end_gfn,
                                            std::vector<uint64_t>* gfns) {
  MmuLock lock(this);
  ShadowPage* root = FindPage(0, kDirectRootRole);
  if (root == nullptr) return 0;
  uint64_t n = 0;
  for (TdpIter it(root->spt.get(), 4, start_gfn, end_gfn); it.valid();
       it.Next()) {
    if (it.level() != 1 || !IsWritable(it.spte())) continue;
    *it.sptep() &= ~kSpteWritable;
    need_flush_ = true;
    gfns->push_back(it.gfn());
    ++n;
  }
  return n;
}

}  // namespace ferry::mmu::softmmu
