// ShadowPage: one 512-entry shadow page table (KVM's struct kvm_mmu_page).
//
// Identity: (gfn, role). For an indirect page, gfn is the guest table it
// shadows (with role.quadrant saying which part, for 4-byte gptes); for a
// direct page, gfn is the first gfn of the range it maps, so entry i covers
// gfn + (i << 9 * (level - 1)) and direct pages need no per-entry gfn array
// (quadrant is always 0 for them: the gfn already says where the range
// starts). Indirect pages store gfns[i], the gfn that spte i maps (for
// non-leaf entries, the child table's gfn), because the guest chose it.
//
// Invariants (checked by ShadowMmu::CheckInvariants):
//   - gfns != nullptr iff !role.direct.
//   - parent_ptes holds exactly the non-leaf sptes pointing at spt; a page
//     with no parent is a root (root_count > 0) or is freed at once.
//   - slot_bitmap has bit s for every memslot index s that some leaf spte of
//     this page maps into (it may have more: bits are never cleared).
#ifndef FERRY_MMU_SOFTMMU_SHADOW_PAGE_H_
#define FERRY_MMU_SOFTMMU_SHADOW_PAGE_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "mmu/softmmu/pte_list.h"
#include "mmu/softmmu/role.h"
#include "mmu/softmmu/spte.h"

namespace ferry::mmu::softmmu {

inline constexpr int kSptEntries = 512;
inline constexpr int kMaxSlots = 64;  // slot_bitmap is one word

struct SptDeleter {
  void operator()(uint64_t* p) const;
};

struct ShadowPage {
  ShadowPage(uint64_t gfn, PageRole role);
  ShadowPage(const ShadowPage&) = delete;
  ShadowPage& operator=(const ShadowPage&) = delete;

  // The gfn spte `i` maps (leaf) or whose table it points to (non-leaf,
  // indirect pages only).
  uint64_t EntryGfn(int i) const {
    if (role.direct()) return gfn + (uint64_t{static_cast<uint32_t>(i)}
                                     << (9 * (role.level() - 1)));
    return gfns[i];
  }
  int level() const { return role.level(); }

  // Bytes this page costs: the object, its spt, and gfns when indirect.
  static size_t BytesFor(bool direct);
  size_t Bytes() const { return BytesFor(role.direct()); }

  const uint64_t gfn;
  const PageRole role;
  std::unique_ptr<uint64_t[], SptDeleter> spt;  // 4 KiB aligned, zeroed
  std::unique_ptr<uint64_t[]> gfns;             // indirect only
  PteList parent_ptes;
  uint64_t slot_bitmap = 0;
  int32_t root_count = 0;
  uint32_t active_index = 0;  // position in ShadowMmu's active list
};

}  // namespace ferry::mmu::softmmu

#endif  // FERRY_MMU_SOFTMMU_SHADOW_PAGE_H_
