// VcpuThrottle: auto-converge's knob. Like QEMU's cpu-throttle it takes
// vCPU time away (Vm::SetThrottle: each vCPU thread sleeps `percent` of
// every ~10 ms timeslice), so it works for any guest on both backends and
// never touches guest memory: nothing of it travels with the guest.
#ifndef FERRY_AGENT_MIGRATION_SOURCE_THROTTLE_H_
#define FERRY_AGENT_MIGRATION_SOURCE_THROTTLE_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "agent/vmm/vm.h"
#include "mmu/dirty_log.h"

namespace ferry::migration {

class VcpuThrottle {
 public:
  virtual ~VcpuThrottle() = default;
  // Takes `percent` (0..99) of the guest's write rate away.
  virtual absl::Status Set(uint32_t percent) = 0;
  // Back to the guest's own setting. Idempotent.
  virtual absl::Status Reset() = 0;
};

// The production throttle: Vm::SetThrottle.
class VmThrottle : public VcpuThrottle {
 public:
  explicit VmThrottle(vmm::Vm* vm) : vm_(vm) {}
  absl::Status Set(uint32_t percent) override;
  absl::Status Reset() override;

 private:
  vmm::Vm* const vm_;
  bool changed_ = false;
};

}  // namespace ferry::migration

#endif  // FERRY_AGENT_MIGRATION_SOURCE_THROTTLE_H_
