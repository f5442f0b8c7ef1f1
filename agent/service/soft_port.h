// The one place that decides which SoftMemoryPort backs soft-backend VMs.
//
// TODO(lead): swap DirectMemoryPortFactory for the software MMU's factory
// (mmu/softmmu) in soft_port.cc and drop `testonly` from :soft_port and
// //agent:ferry-agent in the BUILD files. Nothing else changes.
#ifndef FERRY_AGENT_SERVICE_SOFT_PORT_H_
#define FERRY_AGENT_SERVICE_SOFT_PORT_H_

#include "agent/vmm/soft/memory_port.h"

namespace ferry::service {

vmm::SoftMemoryPortFactory MakeSoftMemoryPortFactory();

}  // namespace ferry::service

#endif  // FERRY_AGENT_SERVICE_SOFT_PORT_H_
