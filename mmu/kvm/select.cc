#include "mmu/kvm/select.h"

#include "kmod/kvm_abi.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kmod/caps.h"
#include "mmu/kvm/bitmap_tracker.h"
#include "mmu/kvm/ring_tracker.h"

namespace ferry::mmu::kvm {

absl::StatusOr<DirtyTrackingMode> ParseDirtyTrackingRequest(
    absl::string_view text) {
  const std::string t = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  if (t == "auto" || t.empty()) return DirtyTrackingMode::kUnspecified;
  if (t == "bitmap") return DirtyTrackingMode::kBitmap;
  if (t == "clear-log") return DirtyTrackingMode::kClearLog;
  if (t == "ring") return DirtyTrackingMode::kRing;
  if (t == "softmmu") return DirtyTrackingMode::kSoftMmu;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown dirty tracking mode \"", text,
      "\"; expected one of auto, bitmap, clear-log, ring, softmmu"));
}

absl::StatusOr<DirtyTrackingCaps> ProbeDirtyTrackingCaps(
    const kmod::VmFd& vm, bool rings_available) {
  DirtyTrackingCaps caps;
  ASSIGN_OR_RETURN(int bits,
                   vm.CheckExtension(kmod::Cap::kManualDirtyLogProtect2));
  caps.manual_protect_bits = bits > 0 ? static_cast<uint64_t>(bits) : 0;
  caps.manual_protect_enabled = vm.manual_dirty_log_protect();
  caps.ring_bytes = vm.dirty_ring_bytes();
  caps.rings_available = rings_available;
  return caps;
}

namespace {

absl::Status Unavailable(DirtyTrackingMode mode, absl::string_view why) {
  return absl::FailedPreconditionError(absl::StrCat(
      "dirty tracking mode ", DirtyTrackingModeName(mode), ": ", why));
}

}  // namespace

absl::StatusOr<DirtyTrackingMode> ChooseDirtyTrackingMode(
    DirtyTrackingMode requested, const DirtyTrackingCaps& caps) {
  using M = DirtyTrackingMode;
  const bool ring_on = caps.ring_bytes != 0;
  const bool manual =
      (caps.manual_protect_bits & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) != 0;
  switch (requested) {
    case M::kUnspecified:
      if (!caps.kvm) return M::kSoftMmu;
      if (ring_on) {
        if (!caps.rings_available) {
          return Unavailable(M::kRing,
                             "the VM has the dirty ring on (so the bitmap "
                             "modes cannot work) but no vCPU rings were given");
        }
        return M::kRing;
      }
      if (manual) return M::kClearLog;
      return M::kBitmap;
    case M::kSoftMmu:
      return M::kSoftMmu;
    case M::kRing:
      if (!caps.kvm) return Unavailable(requested, "needs /dev/kvm");
      if (!ring_on) {
        return Unavailable(requested,
                           "the dirty ring must be enabled on the VM before "
                           "its first vCPU is created (ShouldEnableDirtyRing)");
      }
      if (!caps.rings_available) {
        return Unavailable(requested, "no vCPU rings were given");
      }
      return M::kRing;
    case M::kClearLog:
    case M::kBitmap:
      if (!caps.kvm) return Unavailable(requested, "needs /dev/kvm");
      if (ring_on) {
        return Unavailable(requested,
                           "the VM has the dirty ring on, and KVM then "
                           "refuses KVM_GET_DIRTY_LOG (ENXIO); use ring");
      }
      if (requested == M::kClearLog && !manual) {
        return Unavailable(requested,
                           "the kernel lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2");
      }
      if (requested == M::kBitmap && caps.manual_protect_enabled) {
        return Unavailable(requested,
                           "manual dirty-log protect is already on for this "
                           "VM, so KVM_GET_DIRTY_LOG would not re-protect");
      }
      return requested;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "dirty tracking mode ", DirtyTrackingModeName(requested),
          " cannot be requested"));
  }
}

absl::StatusOr<uint32_t> ShouldEnableDirtyRing(DirtyTrackingMode requested,
                                               uint64_t max_ring_bytes) {
  if (requested == DirtyTrackingMode::kRing) {
    if (max_ring_bytes == 0) {
      return Unavailable(requested,
                         "the kernel lacks KVM_CAP_DIRTY_LOG_RING(_ACQ_REL)");
    }
  } else if (requested != DirtyTrackingMode::kUnspecified ||
             max_ring_bytes == 0) {
    return 0;
  }
  return static_cast<uint32_t>(
      std::min<uint64_t>(kDefaultDirtyRingBytes, max_ring_bytes));
}

absl::StatusOr<std::unique_ptr<DirtyTracker>> CreateKvmDirtyTracker(
    DirtyTrackingMode mode, kmod::VmFd* vm, std::vector<kmod::DirtyRing*> rings,
    const ClearLogTracker::Options& clear_log_options) {
  switch (mode) {
    case DirtyTrackingMode::kBitmap:
      return std::unique_ptr<DirtyTracker>(new BitmapTracker(vm));
    case DirtyTrackingMode::kClearLog: {
      ASSIGN_OR_RETURN(std::unique_ptr<ClearLogTracker> t,
                       ClearLogTracker::Create(vm, clear_log_options));
      return std::unique_ptr<DirtyTracker>(std::move(t));
    }
    case DirtyTrackingMode::kRing: {
      ASSIGN_OR_RETURN(std::unique_ptr<RingTracker> t,
                       RingTracker::Create(vm, std::move(rings)));
      return std::unique_ptr<DirtyTracker>(std::move(t));
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "CreateKvmDirtyTracker: ", DirtyTrackingModeName(mode),
          " is not a KVM mode (the softmmu backend builds its own tracker)"));
  }
}

}  // namespace ferry::mmu::kvm
