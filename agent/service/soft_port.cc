#include "agent/service/soft_port.h"

#include "agent/vmm/soft/softmmu_port.h"

namespace ferry::service {

vmm::SoftMemoryPortFactory MakeSoftMemoryPortFactory() {
  // The production port: every soft-vCPU access goes through the software
  // MMU (mmu/softmmu); dirty tracking is the MMU's write-protection log.
  return vmm::SoftMmuPortFactory();
}

}  // namespace ferry::service
