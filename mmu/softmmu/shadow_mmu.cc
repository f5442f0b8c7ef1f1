// ShadowMmu: construction, slots, shadow page lifecycle, rmap, dirty
// logging, zapping, accounting. Faults live in shadow_fault.cc, range walks
// of the direct tree in tdp_mmu.cc, CheckInvariants in invariants.cc.
#include "mmu/softmmu/shadow_mmu.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "mmu/softmmu/shadow_mmu_internal.h"
#include "mmu/softmmu/spte.h"

namespace ferry::mmu::softmmu {
namespace {

absl::Status ValidateSlots(const std::vector<Memslot>& slots) {
  if (slots.size() > kMaxSlots) {
    return absl::InvalidArgumentError("too many memslots");
  }
  for (size_t i = 0; i < slots.size(); ++i) {
    const Memslot& s = slots[i];
    if (s.size == 0 || s.size % kPageSize != 0 || s.gpa % kPageSize != 0 ||
        s.hva == nullptr || reinterpret_cast<uintptr_t>(s.hva) % kPageSize ||
        s.gpa + s.size > (uint64_t{1} << 48) || s.gpa + s.size < s.gpa) {
      return absl::InvalidArgumentError(absl::StrCat("bad memslot ", s.slot));
    }
    if (i > 0 && (slots[i - 1].gpa + slots[i - 1].size > s.gpa ||
                  slots[i - 1].slot == s.slot)) {
      return absl::InvalidArgumentError("memslots overlap or repeat ids");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ShadowMmu>> ShadowMmu::Create(
    std::vector<Memslot> slots, MmuOptions options) {
  std::sort(slots.begin(), slots.end(),
            [](const Memslot& a, const Memslot& b) { return a.gpa < b.gpa; });
  absl::Status s = ValidateSlots(slots);
  if (!s.ok()) return s;
  return std::unique_ptr<ShadowMmu>(new ShadowMmu(std::move(slots), options));
}

ShadowMmu::ShadowMmu(std::vector<Memslot> slots, MmuOptions options)
    : options_(options), memslots_(std::move(slots)) {
  for (const Memslot& m : memslots_) {
    slots_.push_back(std::make_unique<SlotState>(m));
  }
}

ShadowMmu::~ShadowMmu() {
  // vCPUs (root holders) must be gone; pages go without unlinking.
  for (ShadowPage* sp : active_) delete sp;
}

int ShadowMmu::FindSlotIndex(uint64_t gfn) const {
  int lo = 0, hi = static_cast<int>(slots_.size());
  while (lo < hi) {  // first slot with base_gfn > gfn
    const int mid = (lo + hi) / 2;
    if (slots_[mid]->base_gfn <= gfn) lo = mid + 1; else hi = mid;
  }
  if (lo == 0) return -1;
  const SlotState& s = *slots_[lo - 1];
  return gfn - s.base_gfn < s.npages ? lo - 1 : -1;
}

uint8_t* ShadowMmu::GfnToHva(uint64_t gfn) const {
  const int i = FindSlotIndex(gfn);
  if (i < 0) return nullptr;
  return slots_[i]->m.hva + ((gfn - slots_[i]->base_gfn) << kPageShift);
}

void ShadowMmu::MarkDirty(uint64_t gfn) {
  const int i = FindSlotIndex(gfn);
  if (i >= 0 && slots_[i]->logging) {
    slots_[i]->dirty.Set(gfn - slots_[i]->base_gfn);
  }
}

void ShadowMmu::FlushIfNeeded() {
  if (!need_flush_) return;
  need_flush_ = false;
  ++stats_.flushes;
  gen_.fetch_add(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

// ---------------------------------------------------------------------------
// Shadow pages

ShadowPage* ShadowMmu::FindPage(uint64_t gfn, PageRole role) const {
  auto it = page_hash_.find(gfn);
  if (it == page_hash_.end()) return nullptr;
  for (ShadowPage* sp : it->second) {
    if (sp->role == role) return sp;
  }
  return nullptr;
}

ShadowPage* ShadowMmu::GetPage(uint64_t gfn, PageRole role, bool* created) {
  *created = false;
  if (ShadowPage* sp = FindPage(gfn, role)) return sp;
  // Shadowing a guest table: protect it before any spte derives from it.
  if (!role.direct()) WriteProtectGfn(gfn, /*keep_mmu_writable=*/false);
  auto* sp = new ShadowPage(gfn, role);
  page_hash_[gfn].push_back(sp);
  sp->active_index = static_cast<uint32_t>(active_.size());
  active_.push_back(sp);
  spt_owner_[sp->spt.get()] = sp;
  ++stats_.pages_created;
  *created = true;
  return sp;
}

void ShadowMmu::FreePage(ShadowPage* sp) {
  DropAllSptes(sp);
  while (uint64_t* p = sp->parent_ptes.First()) {
    *p = 0;
    sp->parent_ptes.Remove(p);
    need_flush_ = true;
  }
  auto it = page_hash_.find(sp->gfn);
  auto& bucket = it->second;
  bucket.erase(std::find(bucket.begin(), bucket.end(), sp));
  if (bucket.empty()) page_hash_.erase(it);
  ShadowPage* last = active_.back();
  active_[sp->active_index] = last;
  last->active_index = sp->active_index;
  active_.pop_back();
  spt_owner_.erase(sp->spt.get());
  ++stats_.pages_freed;
  delete sp;
}

bool ShadowMmu::IsShadowed(uint64_t gfn) const {
  auto it = page_hash_.find(gfn);
  if (it == page_hash_.end()) return false;
  for (const ShadowPage* sp : it->second) {
    if (!sp->role.direct()) return true;
  }
  return false;
}

ShadowPage* ShadowMmu::OwnerOf(const uint64_t* sptep) const {
  const auto* base = reinterpret_cast<const uint64_t*>(
      reinterpret_cast<uintptr_t>(sptep) & ~uintptr_t{4095});
  auto it = spt_owner_.find(base);
  return it == spt_owner_.end() ? nullptr : it->second;
}

void ShadowMmu::LinkChild(uint64_t* sptep, ShadowPage* child) {
  *sptep = MakeNonLeafSpte(child->spt.get());
  child->parent_ptes.Add(sptep);
}

void ShadowMmu::DropSpte(ShadowPage* sp, int index) {
  uint64_t* p = &sp->spt[index];
  const uint64_t old = *p;
  if (!IsPresent(old)) return;
  *p = 0;
  need_flush_ = true;
  if (sp->level() == 1) {
    const uint64_t gfn = sp->EntryGfn(index);
    SlotState& s = *slots_[FindSlotIndex(gfn)];
    s.rmap[gfn - s.base_gfn].Remove(p);
    return;
  }
  ShadowPage* child = OwnerOf(SpteChildTable(old));
  child->parent_ptes.Remove(p);
  if (child->parent_ptes.empty() && child->root_count == 0) FreePage(child);
}

void ShadowMmu::DropAllSptes(ShadowPage* sp) {
  for (int i = 0; i < kSptEntries; ++i) DropSpte(sp, i);
}

void ShadowMmu::SetLeafSpte(ShadowPage* sp, int index, uint64_t gfn,
                            int slot_index, uint64_t spte) {
  uint64_t* p = &sp->spt[index];
  const uint64_t old = *p;
  SlotState& s = *slots_[slot_index];
  if (IsPresent(old)) {
    if (sp->EntryGfn(index) == gfn) {
      if ((old & (kSpteWritable | kSpteUser)) & ~spte) need_flush_ = true;
      *p = spte;
      return;
    }
    DropSpte(sp, index);
  }
  if (!sp->role.direct()) sp->gfns[index] = gfn;
  *p = spte;
  s.rmap[gfn - s.base_gfn].Add(p);
  sp->slot_bitmap |= uint64_t{1} << slot_index;
}

bool ShadowMmu::WriteProtectGfn(uint64_t gfn, bool keep_mmu_writable) {
  const int i = FindSlotIndex(gfn);
  if (i < 0) return false;
  const uint64_t clear =
      kSpteWritable | (keep_mmu_writable ? 0 : kSpteMmuWritable);
  bool flushed = false;
  slots_[i]->rmap[gfn - slots_[i]->base_gfn].ForEach([&](uint64_t* p) {
    if (IsWritable(*p)) flushed = true;
    *p &= ~clear;
  });
  if (flushed) need_flush_ = true;
  return flushed;
}

ShadowPage* ShadowMmu::AcquireRoot(PagingMode mode, uint64_t cr3) {
  MmuLock lock(this);
  PageRole role;
  uint64_t gfn = 0;
  switch (mode) {
    case PagingMode::kDirect:
      role = PageRole::Make(4, 0, 0, true, kAccAll);
      break;
    case PagingMode::kLongMode:
      role = PageRole::Make(4, 4, 0, false, kAccAll);
      gfn = GpteFrameGfn(cr3, 8);
      break;
    case PagingMode::kLegacy32:
      // PAE-style root: 4 used entries, one per quadrant of the guest PD.
      role = PageRole::Make(3, 2, 0, true, kAccAll);
      gfn = GpteFrameGfn(cr3, 4);
      break;
  }
  bool created;
  ShadowPage* sp = GetPage(gfn, role, &created);
  ++sp->root_count;
  return sp;
}

void ShadowMmu::ReleaseRoot(ShadowPage* root) {
  MmuLock lock(this);
  if (--root->root_count == 0 && root->parent_ptes.empty()) FreePage(root);
}

// ---------------------------------------------------------------------------
// Host-side guest-physical access

absl::Status ShadowMmu::WriteGpa(uint64_t gpa, const void* src, size_t len) {
  MmuLock lock(this);
  for (uint64_t a = gpa; a < gpa + len; a = (a | 4095) + 1) {
    if (GfnToHva(a >> kPageShift) == nullptr) {
      return absl::NotFoundError(absl::StrCat("gpa ", a, " is unmapped"));
    }
  }
  const auto* p = static_cast<const uint8_t*>(src);
  while (len > 0) {
    const uint32_t off = static_cast<uint32_t>(gpa & 4095);
    const uint32_t n = static_cast<uint32_t>(std::min<size_t>(len, 4096 - off));
    EmulateWrite(gpa >> kPageShift, off, p, n);
    gpa += n;
    p += n;
    len -= n;
  }
  return absl::OkStatus();
}

absl::Status ShadowMmu::ReadGpa(uint64_t gpa, void* dst, size_t len) const {
  auto* p = static_cast<uint8_t*>(dst);
  while (len > 0) {
    const uint32_t off = static_cast<uint32_t>(gpa & 4095);
    const size_t n = std::min<size_t>(len, 4096 - off);
    const uint8_t* hva = GfnToHva(gpa >> kPageShift);
    if (hva == nullptr) {
      return absl::NotFoundError(absl::StrCat("gpa ", gpa, " is unmapped"));
    }
    std::memcpy(p, hva + off, n);
    gpa += n;
    p += n;
    len -= n;
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Dirty logging

namespace {
int SlotIndexById(absl::Span<const Memslot> slots, uint32_t id) {
  for (size_t i = 0; i < slots.size(); ++i) {
    if (slots[i].slot == id) return static_cast<int>(i);
  }
  return -1;
}
}  // namespace

absl::Status ShadowMmu::EnableDirtyLogging(uint32_t slot) {
  const int si = SlotIndexById(memslots_, slot);
  if (si < 0) return absl::NotFoundError(absl::StrCat("no slot ", slot));
  MmuLock lock(this);
  SlotState& s = *slots_[si];
  s.logging = true;
  s.dirty.ClearRange(0, s.npages);
  const uint64_t bit = uint64_t{1} << si;
  for (ShadowPage* sp : active_) {
    if (sp->level() != 1) continue;
    if (options_.slot_bitmap_filter && (sp->slot_bitmap & bit) == 0) continue;
    uint64_t* spt = sp->spt.get();
    for (int i = 0; i < kSptEntries; ++i) {
      if (IsWritable(spt[i]) && s.ContainsHva(SpteHva(spt[i]))) {
        spt[i] &= ~kSpteWritable;
        need_flush_ = true;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ShadowMmu::DisableDirtyLogging(uint32_t slot) {
  const int si = SlotIndexById(memslots_, slot);
  if (si < 0) return absl::NotFoundError(absl::StrCat("no slot ", slot));
  MmuLock lock(this);
  slots_[si]->logging = false;
  return absl::OkStatus();
}

bool ShadowMmu::dirty_logging(uint32_t slot) const {
  const int si = SlotIndexById(memslots_, slot);
  MmuLock lock(this);
  return si >= 0 && slots_[si]->logging;
}

absl::StatusOr<uint64_t> ShadowMmu::GetDirtyLog(uint32_t slot,
                                                DirtyBitmap* out,
                                                bool clear_and_protect) {
  const int si = SlotIndexById(memslots_, slot);
  if (si < 0) return absl::NotFoundError(absl::StrCat("no slot ", slot));
  MmuLock lock(this);
  SlotState& s = *slots_[si];
  if (!s.logging) {
    return absl::FailedPreconditionError("dirty logging is off");
  }
  if (out->npages() != s.npages) *out = DirtyBitmap(s.npages);
  if (!clear_and_protect) {
    out->ClearAll();
    return out->MergeFrom(s.dirty);
  }
  const uint64_t n = s.dirty.TakeAndClear(out);
  out->ForEachSetBit([&](uint64_t page) {
    WriteProtectGfn(s.base_gfn + page, /*keep_mmu_writable=*/true);
  });
  return n;
}

absl::StatusOr<uint64_t> ShadowMmu::ClearDirtyLog(uint32_t slot,
                                                  uint64_t first_page,
                                                  uint64_t npages) {
  const int si = SlotIndexById(memslots_, slot);
  if (si < 0) return absl::NotFoundError(absl::StrCat("no slot ", slot));
  MmuLock lock(this);
  SlotState& s = *slots_[si];
  if (!s.logging) {
    return absl::FailedPreconditionError("dirty logging is off");
  }
  if (first_page > s.npages || npages > s.npages - first_page) {
    return absl::OutOfRangeError("range beyond the slot");
  }
  uint64_t n = 0;
  const uint64_t end = first_page + npages;
  for (uint64_t p = s.dirty.NextSetBit(first_page); p < end;
       p = s.dirty.NextSetBit(p + 1)) {
    s.dirty.Clear(p);
    WriteProtectGfn(s.base_gfn + p, /*keep_mmu_writable=*/true);
    ++n;
  }
  return n;
}

// ---------------------------------------------------------------------------
// Zapping

void ShadowMmu::ZapAll() {
  MmuLock lock(this);
  std::vector<ShadowPage*> roots;
  for (ShadowPage* sp : active_) {
    if (sp->root_count > 0) roots.push_back(sp);
  }
  for (ShadowPage* root : roots) DropAllSptes(root);
}

uint64_t ShadowMmu::ZapGfnRange(uint64_t start_gfn, uint64_t end_gfn) {
  MmuLock lock(this);
  uint64_t n = 0;
  for (auto& sp_slot : slots_) {
    SlotState& s = *sp_slot;
    const uint64_t lo = std::max(start_gfn, s.base_gfn);
    const uint64_t hi = std::min(end_gfn, s.base_gfn + s.npages);
    for (uint64_t gfn = lo; gfn < hi; ++gfn) {
      PteList& rmap = s.rmap[gfn - s.base_gfn];
      while (uint64_t* p = rmap.First()) {
        ShadowPage* sp = OwnerOf(p);
        DropSpte(sp, static_cast<int>(p - sp->spt.get()));
        ++n;
      }
    }
  }
  return n;
}

// ---------------------------------------------------------------------------
// Accounting

MmuStats ShadowMmu::stats() const {
  MmuLock lock(this);
  MmuStats s = stats_;
  s.racy_writes = racy_writes_.load(std::memory_order_relaxed);
  return s;
}

size_t ShadowMmu::num_shadow_pages() const {
  MmuLock lock(this);
  return active_.size();
}

std::vector<PageRole> ShadowMmu::RolesOf(uint64_t gfn) const {
  MmuLock lock(this);
  std::vector<PageRole> roles;
  auto it = page_hash_.find(gfn);
  if (it != page_hash_.end()) {
    for (const ShadowPage* sp : it->second) roles.push_back(sp->role);
  }
  return roles;
}

MmuMemory ShadowMmu::memory() const {
  MmuLock lock(this);
  MmuMemory m;
  uint64_t descs = 0;
  for (const ShadowPage* sp : active_) {
    (sp->role.direct() ? m.direct_pages : m.indirect_pages)++;
    m.shadow_page_bytes += sp->Bytes();
    descs += sp->parent_ptes.NumDescs();
  }
  for (const auto& s : slots_) {
    m.rmap_head_bytes += s->rmap.size() * sizeof(PteList);
    for (const PteList& l : s->rmap) {
      if (l.empty()) continue;
      descs += l.NumDescs();
      m.leaf_sptes += l.Count();
    }
  }
  m.pte_list_desc_bytes = descs * sizeof(PteListDesc);
  return m;
}

}  // namespace ferry::mmu::softmmu
