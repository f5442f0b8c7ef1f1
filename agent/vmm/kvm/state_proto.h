// kmod::VcpuState <-> ferry.v1.VcpuState. Register sets map field by field;
// the kernel structs the VMM never interprets (xsave, lapic) travel as
// bytes, length-checked on the way back.
#ifndef FERRY_AGENT_VMM_KVM_STATE_PROTO_H_
#define FERRY_AGENT_VMM_KVM_STATE_PROTO_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "kmod/vcpu_state.h"
#include "proto/vm.pb.h"

namespace ferry::vmm {

v1::VcpuState VcpuStateToProto(uint32_t index, const kmod::VcpuState& state);
absl::StatusOr<kmod::VcpuState> VcpuStateFromProto(const v1::VcpuState& proto);

}  // namespace ferry::vmm

#endif  // FERRY_AGENT_VMM_KVM_STATE_PROTO_H_
