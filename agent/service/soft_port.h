// The one place that decides which SoftMemoryPort backs soft-backend VMs.
//
// It is the software MMU's port (vmm::SoftMmuPortFactory, mmu/softmmu):
// production code, so neither :soft_port nor //agent:ferry-agent is testonly.
#ifndef FERRY_AGENT_SERVICE_SOFT_PORT_H_
#define FERRY_AGENT_SERVICE_SOFT_PORT_H_

#include "agent/vmm/soft/memory_port.h"

namespace ferry::service {

vmm::SoftMemoryPortFactory MakeSoftMemoryPortFactory();

}  // namespace ferry::service

#endif  // FERRY_AGENT_SERVICE_SOFT_PORT_H_
