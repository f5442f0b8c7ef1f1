// Everything KVM knows about one x86 vCPU, as a plain aggregate, and the
// ordered save/restore that migration needs.
//
// Order (the reasons are the kernel's side effects; Firecracker's
// vstate/vcpu and QEMU's kvm_arch_put_registers follow the same rules):
// Save:    MP_STATE first: KVM_GET_MP_STATE runs kvm_apic_accept_events(),
//          which can change LAPIC and vCPU state, so it must precede the
//          rest. Then REGS, SREGS, XSAVE, XCRS, DEBUGREGS, LAPIC, MSRS.
//          VCPU_EVENTS last: it captures the pending exception/interrupt/NMI
//          state that the other reads could still see change.
// Restore: CPUID first (XCR0, EFER.LME, MSR validity all check the guest
//          CPUID). MP_STATE, REGS (clears any pending exception — so it must
//          precede VCPU_EVENTS), SREGS (restores APIC_BASE, so before
//          LAPIC; also needs CPUID for EFER), XSAVE, XCRS, DEBUGREGS,
//          LAPIC (before MSRS: the TSC-deadline MSR only sticks once the
//          LAPIC is in TSC-deadline mode), MSRS, and VCPU_EVENTS last so
//          nothing above clobbers the injected events it restores.
// The selftests' vcpu_load_state() uses another order (sregs, msrs, xcrs,
// xsave, events, mp_state, debugregs, regs) that works for their guests
// without an in-kernel LAPIC; ours also handles LAPIC and TSC deadline.
//
// Before SaveVcpuState after an IN or MMIO-read exit, call
// VcpuFd::CompletePendingExit(), or the guest resumes with the instruction
// half done. The vCPU must not be running.
#ifndef FERRY_KMOD_VCPU_STATE_H_
#define FERRY_KMOD_VCPU_STATE_H_

#include "kmod/kvm_abi.h"

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kmod/vcpu.h"

namespace ferry::kmod {

struct VcpuState {
  std::vector<kvm_cpuid_entry2> cpuid;
  kvm_mp_state mp_state{};
  kvm_regs regs{};
  kvm_sregs sregs{};
  std::vector<uint32_t> xsave;  // includes the legacy FPU/SSE state
  kvm_xcrs xcrs{};
  kvm_debugregs debugregs{};
  std::optional<kvm_lapic_state> lapic;  // only with an in-kernel irqchip
  std::vector<MsrEntry> msrs;
  kvm_vcpu_events events{};
};

struct SaveOptions {
  // The MSRs to read: normally Kvm::GetMsrIndexList().
  std::vector<uint32_t> msr_indices;
  // Leave out MSRs KVM lists but will not read for this guest, instead of
  // failing (their indices go to `skipped_msrs` if non-null).
  bool skip_unreadable_msrs = false;
  std::vector<uint32_t>* skipped_msrs = nullptr;
};

struct RestoreOptions {
  // Skip MSRs KVM refuses (e.g. 0x4b564d06 without an irqchip, KVM-FACTS)
  // instead of failing; their indices go to `refused_msrs` if non-null.
  bool skip_refused_msrs = false;
  std::vector<uint32_t>* refused_msrs = nullptr;
};

absl::StatusOr<VcpuState> SaveVcpuState(const VcpuFd& vcpu,
                                        const SaveOptions& options);
absl::Status RestoreVcpuState(const VcpuFd& vcpu, const VcpuState& state,
                              const RestoreOptions& options = {});

}  // namespace ferry::kmod

#endif  // FERRY_KMOD_VCPU_STATE_H_
