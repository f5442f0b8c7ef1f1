// ShadowMmu: the access slow path, page faults (shadow and direct), and the
// handling of guest writes to shadowed page tables.
#include <algorithm>
#include <cstring>

#include "mmu/softmmu/shadow_mmu.h"
#include "mmu/softmmu/shadow_mmu_internal.h"
#include "mmu/softmmu/soft_vcpu.h"
#include "mmu/softmmu/spte.h"

namespace ferry::mmu::softmmu {
namespace {

AccessResult PageFault(uint32_t error_code, uint64_t gva) {
  return AccessResult{AccessStatus::kPageFault, error_code, gva};
}
AccessResult Unmapped(uint64_t gpa) {
  return AccessResult{AccessStatus::kUnmappedGpa, 0, gpa};
}

// Shadow entries of `sp` derived from guest entry `j` of its gfn's table.
int ShadowIndexes(const ShadowPage* sp, int j, int out[2]) {
  if (sp->role.gpte_size() == 8) {
    out[0] = j;
    return 1;
  }
  const int q = sp->role.quadrant();
  if (sp->level() == 1) {  // 1024 guest ptes, 512 per quadrant
    if (j / 512 != q) return 0;
    out[0] = j % 512;
    return 1;
  }
  // Level 2: 256 guest PDEs (4 MiB each) per quadrant, two sptes each.
  if (j / 256 != q) return 0;
  out[0] = (j % 256) * 2;
  out[1] = out[0] + 1;
  return 2;
}

}  // namespace

ShadowMmu::LeafRef ShadowMmu::LookupLeaf(ShadowPage* root,
                                         uint64_t addr) const {
  ShadowPage* sp = root;
  for (int level = root->level(); level > 1; --level) {
    const uint64_t s = sp->spt[SptIndex(addr, level)];
    if (!IsPresent(s)) return {};
    sp = OwnerOf(SpteChildTable(s));
  }
  const int i = SptIndex(addr, 1);
  if (!IsPresent(sp->spt[i])) return {};
  return {sp, i};
}

AccessResult ShadowMmu::SlowAccess(SoftVcpu* v, uint64_t gva, uint8_t* buf,
                                   size_t len, bool write, bool user) {
  MmuLock lock(this);
  const uint32_t off = static_cast<uint32_t>(gva & 4095);
  for (;;) {
    LeafRef leaf = LookupLeaf(v->root_, gva);
    bool emulate = false;
    if (leaf.sp != nullptr) {
      const uint64_t s = *leaf.sptep();
      const bool user_ok = !user || IsUser(s);
      if (user_ok && (!write || IsWritable(s))) {
        ++stats_.tlb_refills;  // the "hardware" walk found it
      } else if (user_ok && write && IsMmuWritable(s)) {
        ++v->faults_;  // dirty-log write fault, fixed without a guest walk
        ++stats_.fast_fixes;
        MarkDirty(leaf.sp->EntryGfn(leaf.index));
        *leaf.sptep() |= kSpteWritable;
      } else {
        leaf.sp = nullptr;
      }
    }
    if (leaf.sp == nullptr) {
      ++v->faults_;
      ++stats_.faults;
      FaultOutcome f = v->mode_ == PagingMode::kDirect
                           ? DirectFault(v, gva, write)
                           : ShadowFault(v, gva, write, user);
      if (f.retry) continue;
      if (!f.result.ok()) return f.result;
      leaf = f.leaf;
      emulate = write && !IsWritable(*leaf.sptep());
    }
    const uint64_t s = *leaf.sptep();
    const uint64_t gfn = leaf.sp->EntryGfn(leaf.index);
    if (emulate) {
      EmulateWrite(gfn, off, buf, static_cast<uint32_t>(len));
    } else if (write) {
      std::memcpy(SpteHva(s) + off, buf, len);
    } else {
      std::memcpy(buf, SpteHva(s) + off, len);
    }
    // Emulation may have re-shaped the tree (even freed leaf.sp): look again.
    FlushIfNeeded();
    const LeafRef again = LookupLeaf(v->root_, gva);
    if (again.sp != nullptr && again.sp->EntryGfn(again.index) == gfn) {
      const uint64_t now = *again.sptep();
      const uint32_t perm = (IsWritable(now) ? kAccWrite : 0) |
                            (IsUser(now) ? kAccUser : 0);
      v->Fill(gva, SpteHva(now), gfn, FindSlotIndex(gfn), perm,
              gen_.load(std::memory_order_relaxed));
    }
    return AccessResult{};
  }
}

ShadowMmu::FaultOutcome ShadowMmu::DirectFault(SoftVcpu* v, uint64_t gpa,
                                               bool write) {
  FaultOutcome out;
  const uint64_t gfn = gpa >> kPageShift;
  if (FindSlotIndex(gfn) < 0) {
    out.result = Unmapped(gpa);
    return out;
  }
  ShadowPage* sp = v->root_;
  for (int level = sp->level(); level > 1; --level) {
    uint64_t* p = &sp->spt[SptIndex(gpa, level)];
    if (IsPresent(*p)) {
      sp = OwnerOf(SpteChildTable(*p));
      continue;
    }
    // The child covers PagesPerSpte(level) pages starting at its gfn.
    const uint64_t child_gfn = gfn & ~(PagesPerSpte(level) - 1);
    bool created;
    ShadowPage* child = GetPage(
        child_gfn, PageRole::Make(level - 1, 0, 0, true, kAccAll), &created);
    LinkChild(p, child);
    sp = child;
  }
  const int i = SptIndex(gpa, 1);
  InstallLeaf(sp, i, gfn, kAccAll, /*gpte_dirty=*/true, write);
  out.leaf = {sp, i};
  out.gfn = gfn;
  return out;
}

PageRole ShadowMmu::ChildRole(const ShadowPage* parent, const GuestWalk& w,
                              uint64_t gva, uint64_t* child_gfn) const {
  const int cl = parent->level() - 1;
  if (cl >= w.leaf_level) {  // shadows the guest table of level cl
    *child_gfn = w.table_gfn[cl];
    int quadrant = 0;
    if (w.levels == 2) {
      quadrant = cl == 1 ? static_cast<int>((gva >> 21) & 1)
                         : static_cast<int>((gva >> 30) & 3);
    }
    return PageRole::Make(cl, w.levels, quadrant, false, w.access[cl + 1]);
  }
  // A guest large page mapped with 4 KiB sptes: a direct page for the
  // 2 MiB of it this spte covers. Direct pages are shared by every PDE
  // mapping the same frame with the same access, so a clean PDE must not
  // share a writable one: its writes must fault to set the PDE's D bit.
  *child_gfn = w.gfn & ~uint64_t{511};
  uint32_t access = w.final_access();
  if ((w.gpte[w.leaf_level] & kGpteDirty) == 0) access &= ~kAccWrite;
  return PageRole::Make(1, w.levels, 0, true, access);
}

ShadowMmu::FaultOutcome ShadowMmu::ShadowFault(SoftVcpu* v, uint64_t gva,
                                               bool write, bool user) {
  FaultOutcome out;
  Phys phys(this);
  const GuestWalk w = WalkGuest(phys, v->mode_, v->cr3_, gva, write, user);
  if (w.result == GuestWalk::Result::kPageFault) {
    out.result = PageFault(w.error_code, gva);
    return out;
  }
  if (w.result == GuestWalk::Result::kUnmappedTable) {
    out.result = Unmapped(w.fault_gpa);
    return out;
  }
  ShadowPage* sp = v->root_;
  bool shadowed_new = false;
  for (int level = sp->level(); level > 1; --level) {
    const int i = SptIndex(gva, level);
    uint64_t* p = &sp->spt[i];
    uint64_t child_gfn;
    const PageRole role = ChildRole(sp, w, gva, &child_gfn);
    if (IsPresent(*p)) {
      ShadowPage* child = OwnerOf(SpteChildTable(*p));
      if (child->gfn == child_gfn && child->role == role) {
        sp = child;
        continue;
      }
      DropSpte(sp, i);  // KVM's validate_direct_spte: wrong direct child
    }
    bool created;
    ShadowPage* child = GetPage(child_gfn, role, &created);
    shadowed_new |= created && !role.direct();
    LinkChild(p, child);
    if (!sp->role.direct()) sp->gfns[i] = child_gfn;
    sp = child;
  }
  if (shadowed_new) {
    // The new tables are write-protected only from this flush on: re-read
    // the gptes in case a write slipped in (FNAME(gpte_changed)).
    FlushIfNeeded();
    int level;
    if (GptesChanged(phys, w, gva, &level)) {
      const int size = w.levels == 4 ? 8 : 4;
      for (int l = w.levels; l >= w.leaf_level; --l) {
        GuestWroteGfn(w.table_gfn[l],
                      GpteIndex(w.levels, gva, l) * size, size);
      }
      ++stats_.fault_retries;
      out.retry = true;
      return out;
    }
  }
  const int i = SptIndex(gva, 1);
  const bool dirty = (w.gpte[w.leaf_level] & kGpteDirty) != 0;
  if (!InstallLeaf(sp, i, w.gfn, w.final_access(), dirty, write)) {
    out.result = Unmapped((w.gfn << kPageShift) | (gva & 4095));
    return out;
  }
  out.leaf = {sp, i};
  out.gfn = w.gfn;
  return out;
}

bool ShadowMmu::InstallLeaf(ShadowPage* sp, int index, uint64_t gfn,
                            uint32_t access, bool gpte_dirty,
                            bool write_fault) {
  const int si = FindSlotIndex(gfn);
  if (si < 0) {
    DropSpte(sp, index);
    return false;
  }
  SlotState& s = *slots_[si];
  const uint64_t page = gfn - s.base_gfn;
  const bool mmu_writable =
      (access & kAccWrite) && gpte_dirty && !IsShadowed(gfn);
  if (write_fault && mmu_writable && s.logging) s.dirty.Set(page);
  const bool writable = mmu_writable && !(s.logging && !s.dirty.Test(page));
  SetLeafSpte(sp, index, gfn, si,
              MakeLeafSpte(s.m.hva + (page << kPageShift), writable,
                           (access & kAccUser) != 0, mmu_writable));
  return true;
}

void ShadowMmu::EmulateWrite(uint64_t gfn, uint32_t offset,
                             const uint8_t* src, uint32_t len) {
  std::memcpy(GfnToHva(gfn) + offset, src, len);
  MarkDirty(gfn);
  if (IsShadowed(gfn)) {
    ++stats_.emulated_writes;
    GuestWroteGfn(gfn, offset, len);
  }
}

void ShadowMmu::GuestWroteGfn(uint64_t gfn, uint32_t offset, uint32_t len) {
  auto it = page_hash_.find(gfn);
  if (it == page_hash_.end() || len == 0) return;
  // Zapping may free pages of this very gfn: go by role, look each up again.
  absl::InlinedVector<PageRole, 4> roles;
  for (const ShadowPage* sp : it->second) {
    if (!sp->role.direct()) roles.push_back(sp->role);
  }
  const uint8_t* table = GfnToHva(gfn);
  for (const PageRole role : roles) {
    ShadowPage* sp = FindPage(gfn, role);
    if (sp == nullptr) continue;
    const int size = role.gpte_size();
    const int first = static_cast<int>(offset) / size;
    const int last = static_cast<int>(offset + len - 1) / size;
    for (int j = first; j <= last; ++j) {
      int idx[2];
      const int n = ShadowIndexes(sp, j, idx);
      for (int k = 0; k < n; ++k) {
        if (options_.zap_on_gpte_write || sp->level() > 1) {
          if (IsPresent(sp->spt[idx[k]])) ++stats_.gpte_zaps;
          DropSpte(sp, idx[k]);
        } else {
          UpdateFromGpte(sp, idx[k], ReadGpte(table, size, j));
        }
      }
    }
  }
}

// KVM's FNAME(update_pte)/prefetch_gpte: re-derive a leaf spte of an
// indirect page from its (new) gpte; not present or not accessed -> drop.
void ShadowMmu::UpdateFromGpte(ShadowPage* sp, int index, uint64_t gpte) {
  ++stats_.gpte_updates;
  if ((gpte & kGptePresent) == 0 || (gpte & kGpteAccessed) == 0) {
    DropSpte(sp, index);
    return;
  }
  const uint64_t gfn = GpteFrameGfn(gpte, sp->role.gpte_size());
  const uint32_t access = sp->role.access() & GpteAccess(gpte);
  InstallLeaf(sp, index, gfn, access, (gpte & kGpteDirty) != 0,
              /*write_fault=*/false);
}

void ShadowMmu::AfterRacyWrite(uint32_t slot_index, uint64_t gfn,
                               uint32_t offset, uint32_t len) {
  racy_writes_.fetch_add(1, std::memory_order_relaxed);
  MmuLock lock(this);
  (void)slot_index;
  MarkDirty(gfn);
  if (IsShadowed(gfn)) GuestWroteGfn(gfn, offset, len);
}

}  // namespace ferry::mmu::softmmu
