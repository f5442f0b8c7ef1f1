// One vCPU's dirty ring (KVM_CAP_DIRTY_LOG_RING, api.rst §8.29): an array of
// struct kvm_dirty_gfn shared with the kernel, mmapped from the vCPU fd at
// page offset KVM_DIRTY_LOG_PAGE_OFFSET.
//
// Protocol (include/uapi/linux/kvm.h, "KVM dirty GFN flags"):
//   kernel:  writes slot/offset, then store-release flags = DIRTY
//   us:      load-acquire flags; if DIRTY, read slot/offset, then
//            store-release flags = RESET; advance our fetch index.
//   us:      KVM_RESET_DIRTY_RINGS (VmFd) — the kernel re-protects every
//            RESET entry and zeroes its flags, freeing the slot.
// Entries must be harvested strictly in order (never skip one).
//
// Resets are what re-arm write protection, and each costs a syscall plus a
// TLB flush: batch them (harvest everything, then reset once). Resetting
// after every entry livelocks a busy guest (KVM-FACTS.md).
//
// KVM_EXIT_DIRTY_RING_FULL: the vCPU exits when its ring reaches
// size - reserved entries. The caller must harvest (all rings), reset, then
// re-enter KVM_RUN; re-entering without a reset exits again at once.
//
// Thread safety: one harvester per ring. Harvesting may run while the vCPU
// runs (that is the point); the kernel only appends.
#ifndef FERRY_KMOD_DIRTY_RING_H_
#define FERRY_KMOD_DIRTY_RING_H_

#include "kmod/kvm_abi.h"

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kmod/fd.h"

namespace ferry::kmod {

// One harvested entry. `slot` packs address space (bits 16..31) and slot id;
// `offset` is the page index within that memslot (not a gfn).
struct DirtyGfn {
  uint32_t slot = 0;
  uint64_t offset = 0;

  friend bool operator==(const DirtyGfn& a, const DirtyGfn& b) {
    return a.slot == b.slot && a.offset == b.offset;
  }
};

class DirtyRing {
 public:
  // Maps `bytes` of ring (the size given to VmFd::EnableDirtyRing) from
  // `vcpu_fd`. `what` names it in errors ("vcpu 3").
  static absl::StatusOr<DirtyRing> Create(const Fd& vcpu_fd, uint32_t bytes,
                                          absl::string_view what);

  DirtyRing(DirtyRing&&) = default;
  DirtyRing& operator=(DirtyRing&&) = default;

  // Collects, in ring order, up to `max_entries` entries KVM has published,
  // marking each for reset. Returns how many it collected. Does not call
  // KVM_RESET_DIRTY_RINGS: do that once per batch, via the VmFd.
  size_t Harvest(absl::FunctionRef<void(const DirtyGfn&)> visit,
                 size_t max_entries = std::numeric_limits<size_t>::max());
  // Same, appending to `out`.
  size_t Harvest(std::vector<DirtyGfn>* out,
                 size_t max_entries = std::numeric_limits<size_t>::max());

  // Entries in the ring.
  uint32_t entries() const { return entries_; }
  // Free-running count of entries harvested (next index to look at, mod
  // entries()).
  uint32_t fetch_index() const { return fetch_index_; }
  // Entries harvested since the last MarkReset(): what the next
  // KVM_RESET_DIRTY_RINGS should reset for this ring.
  uint64_t harvested_since_reset() const { return harvested_since_reset_; }
  // Called by VmFd::ResetDirtyRingsAndCheck once the kernel has reset.
  void MarkReset() { harvested_since_reset_ = 0; }

 private:
  DirtyRing(Mmap map, uint32_t entries)
      : map_(std::move(map)), entries_(entries) {}

  kvm_dirty_gfn* gfns() const {
    // SAFETY: map_ is a live MAP_SHARED mapping of entries_ * 16 bytes that
    // KVM laid out as an array of struct kvm_dirty_gfn (page aligned, so
    // aligned for it); it stays mapped for this object's lifetime.
    return static_cast<kvm_dirty_gfn*>(map_.data());
  }

  Mmap map_;
  uint32_t entries_ = 0;
  uint32_t fetch_index_ = 0;
  uint64_t harvested_since_reset_ = 0;
};

}  // namespace ferry::kmod

#endif  // FERRY_KMOD_DIRTY_RING_H_
