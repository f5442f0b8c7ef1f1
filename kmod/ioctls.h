// The one table of every KVM ioctl ferry issues: which fd it goes to and the
// capability that must be reported before using it (the kvm-ioctls
// kvm_ioctls.rs idea). Source of truth: Documentation/virt/kvm/api.rst §4.
// Request numbers and argument structs come from <linux/kvm.h>; Ioctl<>()
// in ioctl_call.h checks at compile time that the argument type matches the
// size encoded in the request number.
#ifndef FERRY_KMOD_IOCTLS_H_
#define FERRY_KMOD_IOCTLS_H_

#include "kmod/kvm_abi.h"

#include "kmod/caps.h"

namespace ferry::kmod {

// Which KVM object an ioctl is issued on.
enum class FdKind { kSystem, kVm, kVcpu };

struct IoctlSpec {
  unsigned long request;
  const char* name;
  FdKind fd;
  Cap cap;  // Cap::kBaseline: always there with API version 12.
};

#define FERRY_KVM_IOCTL(var, req, kind, needs) \
  inline constexpr IoctlSpec var { req, #req, FdKind::kind, Cap::needs }

// --- /dev/kvm (system) ---
FERRY_KVM_IOCTL(kGetApiVersion, KVM_GET_API_VERSION, kSystem, kBaseline);
FERRY_KVM_IOCTL(kCheckExtension, KVM_CHECK_EXTENSION, kSystem, kBaseline);
FERRY_KVM_IOCTL(kCreateVm, KVM_CREATE_VM, kSystem, kBaseline);
FERRY_KVM_IOCTL(kGetVcpuMmapSize, KVM_GET_VCPU_MMAP_SIZE, kSystem, kBaseline);
FERRY_KVM_IOCTL(kGetSupportedCpuid, KVM_GET_SUPPORTED_CPUID, kSystem,
                kExtCpuid);
FERRY_KVM_IOCTL(kGetMsrIndexList, KVM_GET_MSR_INDEX_LIST, kSystem, kBaseline);

// --- VM fd ---
FERRY_KVM_IOCTL(kVmCheckExtension, KVM_CHECK_EXTENSION, kVm, kCheckExtensionVm);
FERRY_KVM_IOCTL(kSetUserMemoryRegion, KVM_SET_USER_MEMORY_REGION, kVm,
                kUserMemory);
FERRY_KVM_IOCTL(kGetDirtyLog, KVM_GET_DIRTY_LOG, kVm, kBaseline);
FERRY_KVM_IOCTL(kClearDirtyLog, KVM_CLEAR_DIRTY_LOG, kVm,
                kManualDirtyLogProtect2);
// Both KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 and KVM_CAP_DIRTY_LOG_RING(_ACQ_REL)
// are switched on with this one.
FERRY_KVM_IOCTL(kVmEnableCap, KVM_ENABLE_CAP, kVm, kEnableCapVm);
FERRY_KVM_IOCTL(kResetDirtyRings, KVM_RESET_DIRTY_RINGS, kVm, kDirtyLogRing);
FERRY_KVM_IOCTL(kCreateIrqchip, KVM_CREATE_IRQCHIP, kVm, kIrqchip);
FERRY_KVM_IOCTL(kGetIrqchip, KVM_GET_IRQCHIP, kVm, kIrqchip);
FERRY_KVM_IOCTL(kSetIrqchip, KVM_SET_IRQCHIP, kVm, kIrqchip);
FERRY_KVM_IOCTL(kCreatePit2, KVM_CREATE_PIT2, kVm, kPit2);
FERRY_KVM_IOCTL(kGetPit2, KVM_GET_PIT2, kVm, kPitState2);
FERRY_KVM_IOCTL(kSetPit2, KVM_SET_PIT2, kVm, kPitState2);
FERRY_KVM_IOCTL(kGetClock, KVM_GET_CLOCK, kVm, kAdjustClock);
FERRY_KVM_IOCTL(kSetClock, KVM_SET_CLOCK, kVm, kAdjustClock);
FERRY_KVM_IOCTL(kSetTssAddr, KVM_SET_TSS_ADDR, kVm, kSetTssAddr);
FERRY_KVM_IOCTL(kSetIdentityMapAddr, KVM_SET_IDENTITY_MAP_ADDR, kVm,
                kSetIdentityMapAddr);
// PIO zones (pio=1) additionally need KVM_CAP_COALESCED_PIO.
FERRY_KVM_IOCTL(kRegisterCoalescedMmio, KVM_REGISTER_COALESCED_MMIO, kVm,
                kCoalescedMmio);
FERRY_KVM_IOCTL(kUnregisterCoalescedMmio, KVM_UNREGISTER_COALESCED_MMIO, kVm,
                kCoalescedMmio);
FERRY_KVM_IOCTL(kCreateVcpu, KVM_CREATE_VCPU, kVm, kBaseline);

// --- vCPU fd ---
FERRY_KVM_IOCTL(kRun, KVM_RUN, kVcpu, kBaseline);
FERRY_KVM_IOCTL(kGetRegs, KVM_GET_REGS, kVcpu, kBaseline);
FERRY_KVM_IOCTL(kSetRegs, KVM_SET_REGS, kVcpu, kBaseline);
FERRY_KVM_IOCTL(kGetSregs, KVM_GET_SREGS, kVcpu, kBaseline);
FERRY_KVM_IOCTL(kSetSregs, KVM_SET_SREGS, kVcpu, kBaseline);
FERRY_KVM_IOCTL(kGetFpu, KVM_GET_FPU, kVcpu, kBaseline);
FERRY_KVM_IOCTL(kSetFpu, KVM_SET_FPU, kVcpu, kBaseline);
FERRY_KVM_IOCTL(kGetMsrs, KVM_GET_MSRS, kVcpu, kBaseline);
FERRY_KVM_IOCTL(kSetMsrs, KVM_SET_MSRS, kVcpu, kBaseline);
// Needs an in-kernel irqchip on the VM (KVM_CREATE_IRQCHIP), else EINVAL/ENXIO.
FERRY_KVM_IOCTL(kGetLapic, KVM_GET_LAPIC, kVcpu, kIrqchip);
FERRY_KVM_IOCTL(kSetLapic, KVM_SET_LAPIC, kVcpu, kIrqchip);
FERRY_KVM_IOCTL(kSetCpuid2, KVM_SET_CPUID2, kVcpu, kExtCpuid);
FERRY_KVM_IOCTL(kGetCpuid2, KVM_GET_CPUID2, kVcpu, kExtCpuid);
FERRY_KVM_IOCTL(kGetMpState, KVM_GET_MP_STATE, kVcpu, kMpState);
FERRY_KVM_IOCTL(kSetMpState, KVM_SET_MP_STATE, kVcpu, kMpState);
FERRY_KVM_IOCTL(kGetVcpuEvents, KVM_GET_VCPU_EVENTS, kVcpu, kVcpuEvents);
FERRY_KVM_IOCTL(kSetVcpuEvents, KVM_SET_VCPU_EVENTS, kVcpu, kVcpuEvents);
FERRY_KVM_IOCTL(kGetDebugregs, KVM_GET_DEBUGREGS, kVcpu, kDebugregs);
FERRY_KVM_IOCTL(kSetDebugregs, KVM_SET_DEBUGREGS, kVcpu, kDebugregs);
FERRY_KVM_IOCTL(kGetXsave, KVM_GET_XSAVE, kVcpu, kXsave);
FERRY_KVM_IOCTL(kSetXsave, KVM_SET_XSAVE, kVcpu, kXsave);
FERRY_KVM_IOCTL(kGetXsave2, KVM_GET_XSAVE2, kVcpu, kXsave2);
FERRY_KVM_IOCTL(kGetXcrs, KVM_GET_XCRS, kVcpu, kXcrs);
FERRY_KVM_IOCTL(kSetXcrs, KVM_SET_XCRS, kVcpu, kXcrs);
// The guest TSC rate must follow the VM across hosts with a different TSC.
FERRY_KVM_IOCTL(kGetTscKhz, KVM_GET_TSC_KHZ, kVcpu, kGetTscKhz);
FERRY_KVM_IOCTL(kSetTscKhz, KVM_SET_TSC_KHZ, kVcpu, kTscControl);

#undef FERRY_KVM_IOCTL

}  // namespace ferry::kmod

#endif  // FERRY_KMOD_IOCTLS_H_
