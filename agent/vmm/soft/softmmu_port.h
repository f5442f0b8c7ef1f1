// The production SoftMemoryPort: every guest access of a soft vCPU goes
// through the software MMU (mmu/softmmu/), exactly as a KVM vCPU's goes
// through the kernel's shadow MMU. Each vCPU owns a SoftVcpu (its own
// software TLB) in direct mode — the soft backend's counterpart of TDP:
// gpa == gva, no guest page tables — so a write through a writable spte is
// a TLB hit of a few ns, and a write to a write-protected (dirty-logged)
// page faults into the MMU, which logs it and restores write access.
// Dirty tracking is the MMU's own write-protection log (mode kSoftMmu).
#ifndef FERRY_AGENT_VMM_SOFT_SOFTMMU_PORT_H_
#define FERRY_AGENT_VMM_SOFT_SOFTMMU_PORT_H_

#include "agent/vmm/soft/memory_port.h"
#include "mmu/softmmu/shadow_mmu.h"

namespace ferry::vmm {

// Ports over a fresh ShadowMmu of the machine's memory slots.
SoftMemoryPortFactory SoftMmuPortFactory(
    mmu::softmmu::MmuOptions options = {});

}  // namespace ferry::vmm

#endif  // FERRY_AGENT_VMM_SOFT_SOFTMMU_PORT_H_
