// Choosing the dirty-tracking mode for a VM.
//
// Configuration: a string, "auto" | "bitmap" | "clear-log" | "ring" |
// "softmmu" (ParseDirtyTrackingRequest). "auto" picks the best mode the
// kernel and the VM allow:
//   ring       if the VM has the dirty ring and the VMM created its vCPUs'
//              rings (cost per dirty page, per-vCPU rates);
//   clear-log  else if the kernel has KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2
//              (fast Start with INITIALLY_SET, re-protect just before copy);
//   bitmap     otherwise;
//   softmmu    when there is no /dev/kvm at all.
// An explicit mode the VM cannot do is an error saying why, never a silent
// fallback.
//
// The ring must be enabled before the first vCPU exists, so the VMM asks
// ShouldEnableDirtyRing at VM creation, before it knows whether a migration
// will ever happen; the rest is decided when tracking starts.
#ifndef FERRY_MMU_KVM_SELECT_H_
#define FERRY_MMU_KVM_SELECT_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kmod/dirty_ring.h"
#include "kmod/vm.h"
#include "mmu/dirty_tracker.h"
#include "mmu/kvm/clear_log_tracker.h"

namespace ferry::mmu::kvm {

// kUnspecified means "auto".
absl::StatusOr<DirtyTrackingMode> ParseDirtyTrackingRequest(
    absl::string_view text);

// What the kernel and this VM offer; ProbeDirtyTrackingCaps fills it, tests
// write it by hand.
struct DirtyTrackingCaps {
  bool kvm = true;                   // false: no /dev/kvm (softmmu backend)
  uint64_t manual_protect_bits = 0;  // KVM_CHECK_EXTENSION(MANUAL_..._PROTECT2)
  bool manual_protect_enabled = false;  // already on for this VM
  uint32_t ring_bytes = 0;           // VmFd::dirty_ring_bytes(): 0 = off
  bool rings_available = false;      // the VMM handed every vCPU's ring
};

absl::StatusOr<DirtyTrackingCaps> ProbeDirtyTrackingCaps(
    const kmod::VmFd& vm, bool rings_available);

// The mode to use for `requested` (kUnspecified = auto), or
// FAILED_PRECONDITION naming what is missing. Pure.
absl::StatusOr<DirtyTrackingMode> ChooseDirtyTrackingMode(
    DirtyTrackingMode requested, const DirtyTrackingCaps& caps);

// Ring bytes to pass to VmFd::EnableDirtyRing at VM creation, or 0 to leave
// the ring off: on for "ring" and "auto" when the kernel offers it
// (`max_ring_bytes` = KVM_CHECK_EXTENSION(DIRTY_LOG_RING[_ACQ_REL])).
// 4096 entries (64 KiB) as QEMU recommends: a RING_FULL exit per ~4K first
// writes, a short harvest. Requested "ring" without kernel support is an
// error.
inline constexpr uint32_t kDefaultDirtyRingBytes = 4096 * 16;
absl::StatusOr<uint32_t> ShouldEnableDirtyRing(DirtyTrackingMode requested,
                                               uint64_t max_ring_bytes);

// Builds the tracker for a KVM mode (kBitmap, kClearLog, kRing; kRing needs
// `rings`, one per vCPU in id order). `vm` and the rings must outlive it.
absl::StatusOr<std::unique_ptr<DirtyTracker>> CreateKvmDirtyTracker(
    DirtyTrackingMode mode, kmod::VmFd* vm,
    std::vector<kmod::DirtyRing*> rings = {},
    const ClearLogTracker::Options& clear_log_options = {});

}  // namespace ferry::mmu::kvm

#endif  // FERRY_MMU_KVM_SELECT_H_
