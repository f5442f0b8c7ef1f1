#include "kmod/dirty_ring.h"

#include <sys/mman.h>

#include <utility>

#include "absl/strings/str_cat.h"

namespace ferry::kmod {

absl::StatusOr<DirtyRing> DirtyRing::Create(const Fd& vcpu_fd, uint32_t bytes,
                                            absl::string_view what) {
  // KVM only accepts power-of-two sizes; Harvest relies on it for indexing.
  if (bytes < sizeof(kvm_dirty_gfn) || (bytes & (bytes - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("dirty ring ", what, ": ", bytes,
                     " bytes is not a power of two of at least one entry"));
  }
  // KVM refuses private or executable mappings of the ring; MAP_SHARED is
  // what makes our RESET stores visible to the kernel.
  const off_t offset =
      static_cast<off_t>(KVM_DIRTY_LOG_PAGE_OFFSET) * HostPageSize();
  absl::StatusOr<Mmap> map =
      Mmap::Create(vcpu_fd.get(), bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
                   offset, absl::StrCat("dirty ring ", what));
  if (!map.ok()) return map.status();
  return DirtyRing(*std::move(map), bytes / sizeof(kvm_dirty_gfn));
}

size_t DirtyRing::Harvest(absl::FunctionRef<void(const DirtyGfn&)> visit,
                          size_t max_entries) {
  size_t collected = 0;
  kvm_dirty_gfn* ring = gfns();
  // Never look further than one lap past the last reset: those slots cannot
  // have been refilled yet, and reading them would see our own RESET marks.
  while (collected < max_entries && harvested_since_reset_ < entries_) {
    kvm_dirty_gfn* gfn = &ring[fetch_index_ & (entries_ - 1)];
    // SAFETY: `gfn` is inside the shared ring. The acquire load pairs with
    // the kernel's release store of DIRTY, so slot/offset read after it are
    // the values the kernel wrote for this entry.
    uint32_t flags = __atomic_load_n(&gfn->flags, __ATOMIC_ACQUIRE);
    if ((flags & KVM_DIRTY_GFN_F_DIRTY) == 0) break;
    DirtyGfn entry{gfn->slot, gfn->offset};
    // SAFETY: release so our reads of slot/offset complete before the kernel
    // may see RESET and recycle the entry.
    __atomic_store_n(&gfn->flags, static_cast<uint32_t>(KVM_DIRTY_GFN_F_RESET),
                     __ATOMIC_RELEASE);
    ++fetch_index_;
    ++harvested_since_reset_;
    ++collected;
    visit(entry);
  }
  return collected;
}

size_t DirtyRing::Harvest(std::vector<DirtyGfn>* out, size_t max_entries) {
  return Harvest([out](const DirtyGfn& gfn) { out->push_back(gfn); },
                 max_entries);
}

}  // namespace ferry::kmod
