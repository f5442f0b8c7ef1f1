// Small helpers the KVM trackers share: the tracked slots, checks that a
// caller's DirtySet matches them, and a monotonic stopwatch for CollectStats.
#ifndef FERRY_MMU_KVM_SLOT_TABLE_H_
#define FERRY_MMU_KVM_SLOT_TABLE_H_

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "mmu/dirty_set.h"
#include "mmu/memslot.h"

namespace ferry::mmu::kvm {

// The slots a tracker was started on, in Start's order (which is the order
// of DirtySet::ForSlots entries), with an id → index map.
class SlotTable {
 public:
  SlotTable() = default;
  // INVALID_ARGUMENT on an empty list, a duplicate id, an address-space id
  // in the upper 16 bits (ferry registers none), or a size that is not a
  // non-zero multiple of kPageSize. `who` prefixes errors.
  static absl::StatusOr<SlotTable> Create(absl::Span<const Memslot> slots,
                                          absl::string_view who);

  absl::Span<const Memslot> slots() const { return slots_; }
  size_t size() const { return slots_.size(); }
  // Index of slot id `slot`, or -1.
  int IndexOf(uint32_t slot) const {
    auto it = index_.find(slot);
    return it == index_.end() ? -1 : it->second;
  }
  // `out` has one entry per slot, same ids and page counts, same order.
  absl::Status CheckShape(const DirtySet& out, absl::string_view who) const;

 private:
  std::vector<Memslot> slots_;
  absl::flat_hash_map<uint32_t, int> index_;
};

// Nanoseconds on CLOCK_MONOTONIC.
int64_t MonotonicNowNs();

}  // namespace ferry::mmu::kvm

#endif  // FERRY_MMU_KVM_SLOT_TABLE_H_
