#include "kmod/caps.h"

#include <vector>

namespace ferry::kmod {
namespace {

struct CapInfo {
  Cap cap;
  const char* name;
};

#define FERRY_CAP(enumerator, macro) \
  { Cap::enumerator, #macro }
constexpr CapInfo kCapInfo[] = {
    FERRY_CAP(kIrqchip, KVM_CAP_IRQCHIP),
    FERRY_CAP(kUserMemory, KVM_CAP_USER_MEMORY),
    FERRY_CAP(kSetTssAddr, KVM_CAP_SET_TSS_ADDR),
    FERRY_CAP(kExtCpuid, KVM_CAP_EXT_CPUID),
    FERRY_CAP(kNrVcpus, KVM_CAP_NR_VCPUS),
    FERRY_CAP(kNrMemslots, KVM_CAP_NR_MEMSLOTS),
    FERRY_CAP(kMpState, KVM_CAP_MP_STATE),
    FERRY_CAP(kCoalescedMmio, KVM_CAP_COALESCED_MMIO),
    FERRY_CAP(kSyncMmu, KVM_CAP_SYNC_MMU),
    FERRY_CAP(kPit2, KVM_CAP_PIT2),
    FERRY_CAP(kPitState2, KVM_CAP_PIT_STATE2),
    FERRY_CAP(kSetIdentityMapAddr, KVM_CAP_SET_IDENTITY_MAP_ADDR),
    FERRY_CAP(kAdjustClock, KVM_CAP_ADJUST_CLOCK),
    FERRY_CAP(kVcpuEvents, KVM_CAP_VCPU_EVENTS),
    FERRY_CAP(kDebugregs, KVM_CAP_DEBUGREGS),
    FERRY_CAP(kXsave, KVM_CAP_XSAVE),
    FERRY_CAP(kXcrs, KVM_CAP_XCRS),
    FERRY_CAP(kTscControl, KVM_CAP_TSC_CONTROL),
    FERRY_CAP(kGetTscKhz, KVM_CAP_GET_TSC_KHZ),
    FERRY_CAP(kMaxVcpus, KVM_CAP_MAX_VCPUS),
    FERRY_CAP(kReadonlyMem, KVM_CAP_READONLY_MEM),
    FERRY_CAP(kEnableCapVm, KVM_CAP_ENABLE_CAP_VM),
    FERRY_CAP(kCheckExtensionVm, KVM_CAP_CHECK_EXTENSION_VM),
    FERRY_CAP(kMaxVcpuId, KVM_CAP_MAX_VCPU_ID),
    FERRY_CAP(kImmediateExit, KVM_CAP_IMMEDIATE_EXIT),
    FERRY_CAP(kGetMsrFeatures, KVM_CAP_GET_MSR_FEATURES),
    FERRY_CAP(kCoalescedPio, KVM_CAP_COALESCED_PIO),
    FERRY_CAP(kManualDirtyLogProtect2, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2),
    FERRY_CAP(kDirtyLogRing, KVM_CAP_DIRTY_LOG_RING),
    FERRY_CAP(kSregs2, KVM_CAP_SREGS2),
    FERRY_CAP(kXsave2, KVM_CAP_XSAVE2),
    FERRY_CAP(kDirtyLogRingAcqRel, KVM_CAP_DIRTY_LOG_RING_ACQ_REL),
};
#undef FERRY_CAP

}  // namespace

absl::string_view CapName(Cap cap) {
  if (cap == Cap::kBaseline) return "baseline (API 12)";
  for (const CapInfo& info : kCapInfo) {
    if (info.cap == cap) return info.name;
  }
  return "KVM_CAP_<unknown>";
}

absl::Span<const Cap> AllCaps() {
  static const std::vector<Cap>* const kCaps = [] {
    auto* caps = new std::vector<Cap>();
    for (const CapInfo& info : kCapInfo) caps->push_back(info.cap);
    return caps;
  }();
  return *kCaps;
}

}  // namespace ferry::kmod
