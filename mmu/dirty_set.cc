#include "mmu/dirty_set.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ferry::mmu {

DirtySet DirtySet::ForSlots(absl::Span<const Memslot> slots) {
  DirtySet set;
  set.entries_.reserve(slots.size());
  for (const Memslot& s : slots) {
    set.entries_.push_back(Entry{s.slot, s.gpa, DirtyBitmap(s.npages())});
  }
  return set;
}

absl::StatusOr<DirtyBitmap*> DirtySet::Get(uint32_t slot) {
  for (Entry& e : entries_) {
    if (e.slot == slot) return &e.bitmap;
  }
  return absl::NotFoundError(absl::StrCat("dirty set has no slot ", slot));
}

absl::StatusOr<const DirtyBitmap*> DirtySet::Get(uint32_t slot) const {
  for (const Entry& e : entries_) {
    if (e.slot == slot) return &e.bitmap;
  }
  return absl::NotFoundError(absl::StrCat("dirty set has no slot ", slot));
}

bool DirtySet::SameLayout(const DirtySet& other) const {
  if (entries_.size() != other.entries_.size()) return false;
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& a = entries_[i];
    const Entry& b = other.entries_[i];
    if (a.slot != b.slot || a.gpa != b.gpa ||
        a.bitmap.npages() != b.bitmap.npages()) {
      return false;
    }
  }
  return true;
}

absl::StatusOr<uint64_t> DirtySet::MergeFrom(const DirtySet& other) {
  if (!SameLayout(other)) {
    return absl::FailedPreconditionError(
        "merging dirty sets built from different memslot layouts");
  }
  uint64_t added = 0;
  for (size_t i = 0; i < entries_.size(); ++i) {
    added += entries_[i].bitmap.MergeFrom(other.entries_[i].bitmap);
  }
  return added;
}

absl::StatusOr<uint64_t> DirtySet::MarkGpaRange(uint64_t gpa, uint64_t len) {
  if (len == 0) return 0;
  if (gpa + len < gpa) {
    return absl::InvalidArgumentError(
        absl::StrFormat("gpa range 0x%x + 0x%x overflows", gpa, len));
  }
  const uint64_t first_gfn = GpaToGfn(gpa);
  const uint64_t end_gfn = GpaToGfn(gpa + len - 1) + 1;
  // Validate first so a bad range marks nothing.
  for (uint64_t gfn = first_gfn; gfn < end_gfn;) {
    auto it = std::find_if(entries_.begin(), entries_.end(), [&](const Entry& e) {
      return gfn >= GpaToGfn(e.gpa) && gfn - GpaToGfn(e.gpa) < e.bitmap.npages();
    });
    if (it == entries_.end()) {
      return absl::NotFoundError(absl::StrFormat(
          "gpa 0x%x (in range [0x%x, +0x%x)) is not backed by any memslot",
          GfnToGpa(gfn), gpa, len));
    }
    gfn = GpaToGfn(it->gpa) + it->bitmap.npages();
  }
  uint64_t added = 0;
  for (Entry& e : entries_) {
    const uint64_t base = GpaToGfn(e.gpa);
    const uint64_t lo = std::max(first_gfn, base);
    const uint64_t hi = std::min(end_gfn, base + e.bitmap.npages());
    if (lo < hi) added += e.bitmap.SetRange(lo - base, hi - lo);
  }
  return added;
}

uint64_t DirtySet::Count() const {
  uint64_t n = 0;
  for (const Entry& e : entries_) n += e.bitmap.Count();
  return n;
}

bool DirtySet::Empty() const {
  for (const Entry& e : entries_) {
    if (!e.bitmap.Empty()) return false;
  }
  return true;
}

void DirtySet::ClearAll() {
  for (Entry& e : entries_) e.bitmap.ClearAll();
}

}  // namespace ferry::mmu
