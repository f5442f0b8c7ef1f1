#include "agent/service/soft_port.h"

#include "agent/vmm/soft/testing/direct_memory_port.h"

namespace ferry::service {

vmm::SoftMemoryPortFactory MakeSoftMemoryPortFactory() {
  // Stand-in until mmu/softmmu is integrated: direct memory access plus a
  // bitmap (testonly). Its trackers report DirtyTrackingMode::kFake.
  return vmm::testing::DirectMemoryPortFactory();
}

}  // namespace ferry::service
