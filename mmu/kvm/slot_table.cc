#include "mmu/kvm/slot_table.h"

#include <time.h>

#include "absl/strings/str_cat.h"

namespace ferry::mmu::kvm {

absl::StatusOr<SlotTable> SlotTable::Create(absl::Span<const Memslot> slots,
                                            absl::string_view who) {
  if (slots.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": no memslots"));
  }
  SlotTable table;
  for (const Memslot& s : slots) {
    if (s.slot >> 16 != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          who, ": slot 0x", absl::Hex(s.slot),
          " names address space ", s.slot >> 16, "; only as 0 is tracked"));
    }
    if (s.size == 0 || s.size % kPageSize != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          who, ": slot ", s.slot, " size ", s.size,
          " is not a non-zero multiple of ", kPageSize));
    }
    if (!table.index_.emplace(s.slot, static_cast<int>(table.slots_.size()))
             .second) {
      return absl::InvalidArgumentError(
          absl::StrCat(who, ": slot ", s.slot, " listed twice"));
    }
    table.slots_.push_back(s);
  }
  return table;
}

absl::Status SlotTable::CheckShape(const DirtySet& out,
                                   absl::string_view who) const {
  bool same = out.size() == slots_.size();
  for (size_t i = 0; same && i < slots_.size(); ++i) {
    const DirtySet::Entry& e = out.entries()[i];
    same = e.slot == slots_[i].slot && e.bitmap.npages() == slots_[i].npages();
  }
  if (!same) {
    return absl::InvalidArgumentError(absl::StrCat(
        who, ": Collect needs a DirtySet made by DirtySet::ForSlots of the "
             "slots given to Start"));
  }
  return absl::OkStatus();
}

int64_t MonotonicNowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

}  // namespace ferry::mmu::kvm
