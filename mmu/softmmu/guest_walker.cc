#include "mmu/softmmu/guest_walker.h"

#include "mmu/softmmu/role.h"

namespace ferry::mmu::softmmu {
namespace {

constexpr uint64_t kLongFrameMask = 0x000FFFFFFFFFF000ull;
constexpr uint64_t kLong2MFrameMask = 0x000FFFFFFFE00000ull;
constexpr uint64_t kLong2MRsvdMask = 0x1FE000ull;  // PDE bits 13..20
constexpr uint64_t kLegacyFrameMask = 0xFFFFF000ull;
constexpr uint64_t kLegacy4MFrameMask = 0xFFC00000ull;

void SetBits(uint8_t* pte, int size, uint64_t bits) {
  if (size == 8) {
    __atomic_fetch_or(reinterpret_cast<uint64_t*>(pte), bits,
                      __ATOMIC_SEQ_CST);
  } else {
    __atomic_fetch_or(reinterpret_cast<uint32_t*>(pte),
                      static_cast<uint32_t>(bits), __ATOMIC_SEQ_CST);
  }
}

// Sets A on every gpte of the walk and D on the leaf for writes.
void UpdateAccessedDirty(GuestPhys& phys, GuestWalk& w, uint64_t gva,
                         bool write) {
  const int size = w.levels == 4 ? 8 : 4;
  for (int l = w.levels; l >= w.leaf_level; --l) {
    uint64_t want = kGpteAccessed;
    if (write && l == w.leaf_level) want |= kGpteDirty;
    if ((w.gpte[l] & want) == want) continue;
    uint8_t* table = phys.GfnToHva(w.table_gfn[l]);
    const int index = GpteIndex(w.levels, gva, l);
    SetBits(table + index * size, size, want);
    w.gpte[l] |= want;
    phys.MarkWritten(w.table_gfn[l]);
  }
}

}  // namespace

int GpteIndex(int guest_levels, uint64_t gva, int level) {
  if (guest_levels == 2) {
    return static_cast<int>((gva >> (12 + 10 * (level - 1))) & 1023);
  }
  return static_cast<int>((gva >> (12 + 9 * (level - 1))) & 511);
}

uint64_t ReadGpte(const uint8_t* table_hva, int gpte_size, int index) {
  if (gpte_size == 8) {
    return __atomic_load_n(
        reinterpret_cast<const uint64_t*>(table_hva) + index,
        __ATOMIC_RELAXED);
  }
  return __atomic_load_n(reinterpret_cast<const uint32_t*>(table_hva) + index,
                         __ATOMIC_RELAXED);
}

uint32_t GpteAccess(uint64_t gpte) {
  uint32_t acc = 0;
  if (gpte & kGpteWrite) acc |= kAccWrite;
  if (gpte & kGpteUser) acc |= kAccUser;
  return acc;
}

uint64_t GpteFrameGfn(uint64_t gpte, int gpte_size) {
  return (gpte & (gpte_size == 8 ? kLongFrameMask : kLegacyFrameMask)) >> 12;
}

GuestWalk WalkGuest(GuestPhys& phys, PagingMode mode, uint64_t cr3,
                    uint64_t gva, bool write, bool user) {
  GuestWalk w;
  w.levels = GuestLevels(mode);
  const int size = w.levels == 4 ? 8 : 4;
  for (int l = 0; l < 6; ++l) w.access[l] = kAccAll;
  uint64_t table_gfn = GpteFrameGfn(cr3, size);
  uint32_t access = kAccAll;
  bool rsvd = false;
  for (int level = w.levels; level >= 1; --level) {
    const int index = GpteIndex(w.levels, gva, level);
    const uint8_t* table = phys.GfnToHva(table_gfn);
    if (table == nullptr) {
      w.result = GuestWalk::Result::kUnmappedTable;
      w.fault_gpa = (table_gfn << 12) + uint64_t(index) * size;
      return w;
    }
    const uint64_t gpte = ReadGpte(table, size, index);
    w.table_gfn[level] = table_gfn;
    w.gpte[level] = gpte;
    if ((gpte & kGptePresent) == 0) {
      w.result = GuestWalk::Result::kPageFault;
      w.error_code = (write ? kPfWrite : 0) | (user ? kPfUser : 0);
      return w;
    }
    access &= GpteAccess(gpte);
    w.access[level] = access;
    const bool ps = (gpte & kGptePs) != 0;
    if (level == 1 || (ps && level == 2)) {
      w.leaf_level = level;
      if (level == 1) {
        w.gfn = GpteFrameGfn(gpte, size);
      } else if (size == 8) {
        rsvd = (gpte & kLong2MRsvdMask) != 0;
        w.gfn = ((gpte & kLong2MFrameMask) >> 12) + ((gva >> 12) & 511);
      } else {
        w.gfn = ((gpte & kLegacy4MFrameMask) >> 12) + ((gva >> 12) & 1023);
      }
      break;
    }
    if (ps) {  // PS in a PML4E/PDPTE: reserved here
      rsvd = true;
      break;
    }
    table_gfn = GpteFrameGfn(gpte, size);
  }
  uint32_t ec = (write ? kPfWrite : 0) | (user ? kPfUser : 0);
  if (rsvd) ec |= kPfRsvd | kPfPresent;
  if ((write && !(access & kAccWrite)) || (user && !(access & kAccUser))) {
    ec |= kPfPresent;
  }
  if (ec & kPfPresent) {
    w.result = GuestWalk::Result::kPageFault;
    w.error_code = ec;
    return w;
  }
  UpdateAccessedDirty(phys, w, gva, write);
  return w;
}

bool GptesChanged(GuestPhys& phys, const GuestWalk& walk, uint64_t gva,
                  int* changed_level) {
  const int size = walk.levels == 4 ? 8 : 4;
  for (int l = walk.levels; l >= walk.leaf_level; --l) {
    const uint8_t* table = phys.GfnToHva(walk.table_gfn[l]);
    if (table == nullptr ||
        ReadGpte(table, size, GpteIndex(walk.levels, gva, l)) !=
            walk.gpte[l]) {
      *changed_level = l;
      return true;
    }
  }
  return false;
}

}  // namespace ferry::mmu::softmmu
