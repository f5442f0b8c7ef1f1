#include "kmod/vcpu_state.h"

#include <utility>

#include "common/status_macros.h"

namespace ferry::kmod {
namespace {

// Reads `indices`, dropping (and reporting) the ones KVM will not read.
absl::StatusOr<std::vector<MsrEntry>> GetMsrsSkipping(
    const VcpuFd& vcpu, absl::Span<const uint32_t> indices,
    std::vector<uint32_t>* skipped) {
  std::vector<MsrEntry> wanted;
  for (uint32_t index : indices) wanted.push_back(MsrEntry{index, 0});
  std::vector<MsrEntry> read;
  size_t next = 0;
  while (next < wanted.size()) {
    absl::Span<MsrEntry> rest = absl::MakeSpan(wanted).subspan(next);
    ASSIGN_OR_RETURN(size_t done, vcpu.GetMsrsPrefix(rest));
    read.insert(read.end(), rest.begin(), rest.begin() + done);
    next += done;
    if (next < wanted.size()) {
      if (skipped != nullptr) skipped->push_back(wanted[next].index);
      ++next;
    }
  }
  return read;
}

absl::Status SetMsrsSkipping(const VcpuFd& vcpu,
                             absl::Span<const MsrEntry> msrs,
                             std::vector<uint32_t>* refused) {
  size_t next = 0;
  while (next < msrs.size()) {
    ASSIGN_OR_RETURN(size_t done, vcpu.SetMsrsPrefix(msrs.subspan(next)));
    next += done;
    if (next < msrs.size()) {
      if (refused != nullptr) refused->push_back(msrs[next].index);
      ++next;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<VcpuState> SaveVcpuState(const VcpuFd& vcpu,
                                        const SaveOptions& options) {
  VcpuState state;
  // Order matters; see the header.
  ASSIGN_OR_RETURN(state.mp_state, vcpu.GetMpState());
  ASSIGN_OR_RETURN(state.cpuid, vcpu.GetCpuid2());
  ASSIGN_OR_RETURN(state.regs, vcpu.GetRegs());
  ASSIGN_OR_RETURN(state.sregs, vcpu.GetSregs());
  ASSIGN_OR_RETURN(state.xsave, vcpu.GetXsave());
  ASSIGN_OR_RETURN(state.xcrs, vcpu.GetXcrs());
  ASSIGN_OR_RETURN(state.debugregs, vcpu.GetDebugRegs());
  if (vcpu.config().has_irqchip) {
    ASSIGN_OR_RETURN(state.lapic, vcpu.GetLapic());
  }
  if (options.skip_unreadable_msrs) {
    ASSIGN_OR_RETURN(state.msrs, GetMsrsSkipping(vcpu, options.msr_indices,
                                                 options.skipped_msrs));
  } else {
    ASSIGN_OR_RETURN(state.msrs, vcpu.GetMsrs(options.msr_indices));
  }
  ASSIGN_OR_RETURN(state.events, vcpu.GetVcpuEvents());
  return state;
}

absl::Status RestoreVcpuState(const VcpuFd& vcpu, const VcpuState& state,
                              const RestoreOptions& options) {
  // Order matters; see the header.
  if (!state.cpuid.empty()) RETURN_IF_ERROR(vcpu.SetCpuid2(state.cpuid));
  RETURN_IF_ERROR(vcpu.SetMpState(state.mp_state));
  RETURN_IF_ERROR(vcpu.SetRegs(state.regs));
  RETURN_IF_ERROR(vcpu.SetSregs(state.sregs));
  RETURN_IF_ERROR(vcpu.SetXsave(state.xsave));
  RETURN_IF_ERROR(vcpu.SetXcrs(state.xcrs));
  RETURN_IF_ERROR(vcpu.SetDebugRegs(state.debugregs));
  if (state.lapic.has_value()) RETURN_IF_ERROR(vcpu.SetLapic(*state.lapic));
  if (options.skip_refused_msrs) {
    RETURN_IF_ERROR(SetMsrsSkipping(vcpu, state.msrs, options.refused_msrs));
  } else {
    RETURN_IF_ERROR(vcpu.SetMsrs(state.msrs));
  }
  RETURN_IF_ERROR(vcpu.SetVcpuEvents(state.events));
  return absl::OkStatus();
}

}  // namespace ferry::kmod
