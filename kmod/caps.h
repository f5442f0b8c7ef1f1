// KVM capabilities kmod knows by name. Values are the kernel's KVM_CAP_*
// numbers (taken from <linux/kvm.h>, never retyped), so a Cap can be passed
// straight to KVM_CHECK_EXTENSION / KVM_ENABLE_CAP.
//
// What KVM_CHECK_EXTENSION returns is capability-specific: 0 = absent, 1 =
// present, or a value (a size, a bit mask, a count); see each comment and
// Documentation/virt/kvm/api.rst section 8.
#ifndef FERRY_KMOD_CAPS_H_
#define FERRY_KMOD_CAPS_H_

#include "kmod/kvm_abi.h"

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace ferry::kmod {

enum class Cap : int {
  // Not a capability: marks ioctls present in every KVM with API version 12.
  kBaseline = -1,

  kIrqchip = KVM_CAP_IRQCHIP,         // in-kernel PIC/IOAPIC/LAPIC
  kUserMemory = KVM_CAP_USER_MEMORY,  // KVM_SET_USER_MEMORY_REGION
  kSetTssAddr = KVM_CAP_SET_TSS_ADDR,
  kExtCpuid = KVM_CAP_EXT_CPUID,      // KVM_GET_SUPPORTED_CPUID, *_CPUID2
  kNrVcpus = KVM_CAP_NR_VCPUS,        // value: recommended max vCPUs
  kNrMemslots = KVM_CAP_NR_MEMSLOTS,  // value: max memslots per VM
  kMpState = KVM_CAP_MP_STATE,
  kCoalescedMmio = KVM_CAP_COALESCED_MMIO,  // value: ring page offset
  kSyncMmu = KVM_CAP_SYNC_MMU,
  kPit2 = KVM_CAP_PIT2,
  kPitState2 = KVM_CAP_PIT_STATE2,
  kSetIdentityMapAddr = KVM_CAP_SET_IDENTITY_MAP_ADDR,
  kAdjustClock = KVM_CAP_ADJUST_CLOCK,  // value: KVM_CLOCK_* flags supported
  kVcpuEvents = KVM_CAP_VCPU_EVENTS,
  kDebugregs = KVM_CAP_DEBUGREGS,
  kXsave = KVM_CAP_XSAVE,
  kXcrs = KVM_CAP_XCRS,
  kTscControl = KVM_CAP_TSC_CONTROL,
  kGetTscKhz = KVM_CAP_GET_TSC_KHZ,
  kMaxVcpus = KVM_CAP_MAX_VCPUS,  // value: hard max vCPUs per VM
  kReadonlyMem = KVM_CAP_READONLY_MEM,
  kEnableCapVm = KVM_CAP_ENABLE_CAP_VM,  // KVM_ENABLE_CAP on a VM fd
  kCheckExtensionVm = KVM_CAP_CHECK_EXTENSION_VM,
  kMaxVcpuId = KVM_CAP_MAX_VCPU_ID,  // value: max vCPU id + 1
  kImmediateExit = KVM_CAP_IMMEDIATE_EXIT,
  kGetMsrFeatures = KVM_CAP_GET_MSR_FEATURES,
  kCoalescedPio = KVM_CAP_COALESCED_PIO,
  // Value: mask of KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | _INITIALLY_SET.
  kManualDirtyLogProtect2 = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
  kDirtyLogRing = KVM_CAP_DIRTY_LOG_RING,  // value: max ring size in bytes
  kSregs2 = KVM_CAP_SREGS2,
  kXsave2 = KVM_CAP_XSAVE2,  // value: KVM_GET_XSAVE2 buffer size in bytes
  // Value: max ring size; the ring needs acquire/release accesses (we always
  // do them, so this is preferred when present).
  kDirtyLogRingAcqRel = KVM_CAP_DIRTY_LOG_RING_ACQ_REL,
};

// "KVM_CAP_DIRTY_LOG_RING".
absl::string_view CapName(Cap cap);

// Every named capability (not kBaseline), for probes and reports.
absl::Span<const Cap> AllCaps();

}  // namespace ferry::kmod

#endif  // FERRY_KMOD_CAPS_H_
