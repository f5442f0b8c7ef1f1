// ShadowMmu::CheckInvariants: I1..I5 of shadow_mmu.h, exhaustively.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "mmu/softmmu/shadow_mmu.h"
#include "mmu/softmmu/shadow_mmu_internal.h"
#include "mmu/softmmu/spte.h"

namespace ferry::mmu::softmmu {
namespace {

absl::Status Broken(const char* inv, const ShadowPage* sp, int i,
                    const std::string& what) {
  return absl::InternalError(absl::StrFormat(
      "%s: page gfn=%#x role=%#x entry %d: %s", inv, sp->gfn,
      sp->role.word(), i, what));
}

}  // namespace

absl::Status ShadowMmu::CheckInvariants() const {
  MmuLock lock(this);
  size_t pages = 0;
  for (const auto& [gfn, bucket] : page_hash_) {
    for (size_t a = 0; a < bucket.size(); ++a) {
      const ShadowPage* sp = bucket[a];
      ++pages;
      if (sp->gfn != gfn) return Broken("I3", sp, -1, "in the wrong bucket");
      for (size_t b = a + 1; b < bucket.size(); ++b) {
        if (bucket[b]->role == sp->role) {
          return Broken("I3", sp, -1, "(gfn, role) twice");
        }
      }
      if (sp->active_index >= active_.size() ||
          active_[sp->active_index] != sp) {
        return Broken("I3", sp, -1, "active list index");
      }
      auto it = spt_owner_.find(sp->spt.get());
      if (it == spt_owner_.end() || it->second != sp) {
        return Broken("I3", sp, -1, "spt owner map");
      }
      if (sp->root_count == 0 && sp->parent_ptes.empty()) {
        return Broken("I3", sp, -1, "unreachable non-root");
      }
    }
  }
  if (pages != active_.size() || pages != spt_owner_.size()) {
    return absl::InternalError("I3: hash, active list, owner map sizes");
  }
  uint64_t leaves = 0;
  for (const ShadowPage* sp : active_) {
    absl::Status s = CheckPage(sp, &leaves);
    if (!s.ok()) return s;
  }
  uint64_t rmapped = 0;
  for (const auto& slot : slots_) {
    for (uint64_t page = 0; page < slot->npages; ++page) {
      absl::Status st;
      slot->rmap[page].ForEach([&](uint64_t* p) {
        ++rmapped;
        const ShadowPage* sp = OwnerOf(p);
        if (!st.ok()) return;
        if (sp == nullptr || sp->level() != 1 || !IsPresent(*p) ||
            sp->EntryGfn(static_cast<int>(p - sp->spt.get())) !=
                slot->base_gfn + page) {
          st = absl::InternalError(
              absl::StrCat("I1: bad rmap entry for gfn ",
                           slot->base_gfn + page));
        }
      });
      if (!st.ok()) return st;
    }
  }
  if (rmapped != leaves) {
    return absl::InternalError(
        absl::StrCat("I1: ", leaves, " leaf sptes but ", rmapped, " rmaps"));
  }
  return absl::OkStatus();
}

absl::Status ShadowMmu::CheckPage(const ShadowPage* sp,
                                  uint64_t* leaves) const {
  if ((sp->gfns == nullptr) != sp->role.direct()) {
    return Broken("I3", sp, -1, "gfns array iff indirect");
  }
  absl::Status st;
  sp->parent_ptes.ForEach([&](uint64_t* p) {
    const ShadowPage* parent = OwnerOf(p);
    if (st.ok() && (parent == nullptr || parent->level() != sp->level() + 1 ||
                    !IsPresent(*p) || SpteChildTable(*p) != sp->spt.get())) {
      st = Broken("I2", sp, -1, "parent pte does not point here");
    }
  });
  if (!st.ok()) return st;
  for (int i = 0; i < kSptEntries; ++i) {
    const uint64_t s = sp->spt[i];
    if (!IsPresent(s)) {
      if (s != 0) return Broken("I4", sp, i, "bits in a non-present spte");
      continue;
    }
    if (sp->level() == 1) {
      ++*leaves;
      {
        absl::Status ls = CheckLeaf(sp, i);
        if (!ls.ok()) return ls;
      }
    } else {
      auto it = spt_owner_.find(SpteChildTable(s));
      if (it == spt_owner_.end()) return Broken("I2", sp, i, "no child");
      const ShadowPage* child = it->second;
      if (child->level() != sp->level() - 1 ||
          !child->parent_ptes.Contains(&sp->spt[i])) {
        return Broken("I2", sp, i, "child level or parent link");
      }
      if (!sp->role.direct() && sp->gfns[i] != child->gfn) {
        return Broken("I2", sp, i, "gfns[] != child gfn");
      }
    }
    if (!sp->role.direct()) {
      absl::Status ms = CheckMirror(sp, i);
      if (!ms.ok()) return ms;
    }
  }
  return absl::OkStatus();
}

absl::Status ShadowMmu::CheckLeaf(const ShadowPage* sp, int i) const {
  const uint64_t s = sp->spt[i];
  const uint64_t gfn = sp->EntryGfn(i);
  const int si = FindSlotIndex(gfn);
  if (si < 0) return Broken("I1", sp, i, "maps a gfn outside every slot");
  const SlotState& slot = *slots_[si];
  if (SpteHva(s) != GfnToHva(gfn)) return Broken("I1", sp, i, "wrong hva");
  if (!slot.rmap[gfn - slot.base_gfn].Contains(&sp->spt[i])) {
    return Broken("I1", sp, i, "not in the rmap of its gfn");
  }
  if ((sp->slot_bitmap & (uint64_t{1} << si)) == 0) {
    return Broken("I1", sp, i, "slot_bitmap misses its slot");
  }
  if (IsWritable(s) && !IsMmuWritable(s)) {
    return Broken("I4", sp, i, "W without mmu-writable");
  }
  if (IsMmuWritable(s) && IsShadowed(gfn)) {
    return Broken("I4", sp, i, "writable spte maps a shadowed gfn");
  }
  if (IsWritable(s) && slot.logging && !slot.dirty.Test(gfn - slot.base_gfn)) {
    return Broken("I4", sp, i, "writable spte maps a clean logged page");
  }
  return absl::OkStatus();
}

// I5: the spte agrees with the gpte it was derived from.
absl::Status ShadowMmu::CheckMirror(const ShadowPage* sp, int i) const {
  const uint8_t* table = GfnToHva(sp->gfn);
  if (table == nullptr) return Broken("I5", sp, i, "table gfn unmapped");
  const int size = sp->role.gpte_size();
  const int q = sp->role.quadrant();
  int j = i;
  if (size == 4) j = sp->level() == 1 ? q * 512 + i : q * 256 + i / 2;
  const uint64_t gpte = ReadGpte(table, size, j);
  if ((gpte & kGptePresent) == 0 || (gpte & kGpteAccessed) == 0) {
    return Broken("I5", sp, i, "gpte not present or not accessed");
  }
  const uint32_t access = sp->role.access() & GpteAccess(gpte);
  const uint64_t s = sp->spt[i];
  if (sp->level() == 1) {
    if (GpteFrameGfn(gpte, size) != sp->gfns[i]) {
      return Broken("I5", sp, i, "frame differs from the gpte");
    }
    if ((IsUser(s) && !(access & kAccUser)) ||
        (IsMmuWritable(s) &&
         (!(access & kAccWrite) || !(gpte & kGpteDirty)))) {
      return Broken("I5", sp, i, "spte allows more than the gpte");
    }
    return absl::OkStatus();
  }
  const ShadowPage* child = spt_owner_.at(SpteChildTable(s));
  const bool large = sp->level() == 2 && (gpte & kGptePs) != 0;
  uint64_t want_gfn = GpteFrameGfn(gpte, size);
  if (large) {
    want_gfn = size == 8 ? (gpte & 0x000FFFFFFFE00000ull) >> 12
                         : ((gpte & 0xFFC00000ull) >> 12) + (i & 1) * 512;
  }
  // A large page's direct child drops W while the PDE is clean; it may
  // keep the read-only role after the walker sets D (conservative).
  const uint32_t ca = child->role.access();
  const bool access_ok =
      large ? (ca == (access & ~kAccWrite) ||
               (ca == access && (gpte & kGpteDirty) != 0))
            : ca == access;
  if (child->gfn != want_gfn || child->role.direct() != large || !access_ok ||
      (size == 4 && !large && child->role.quadrant() != (i & 1))) {
    return Broken("I5", sp, i, "child does not match the gpte");
  }
  return absl::OkStatus();
}

}  // namespace ferry::mmu::softmmu
