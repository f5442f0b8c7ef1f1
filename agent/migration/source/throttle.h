// VcpuThrottle: auto-converge's knob. QEMU steals vCPU time
// (cpu_throttle_set); our guest paces its own writes by the params page's
// target_dirty_pages_per_sec, which the VMM may change at run time (abi.h:
// store the rate, then bump config_seq with release order).
//
// ParamsPageThrottle writes that page directly and reports the write to
// the DirtyLog (a VMM write never faults through the tracker). The throttle
// lives in guest memory, so it would travel with the guest: Reset() puts
// the original rate back and MUST run before the final harvest.
// TODO(vmm): replace with a Vm::SetThrottle(percent) that steals vCPU time
// for any guest (KVM backend: a sleep in the vCPU loop, as QEMU does).
#ifndef FERRY_AGENT_MIGRATION_SOURCE_THROTTLE_H_
#define FERRY_AGENT_MIGRATION_SOURCE_THROTTLE_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/time/time.h"
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

class ParamsPageThrottle : public VcpuThrottle {
 public:
  // `log` may be null (then the write is not reported: only after tracking).
  ParamsPageThrottle(vmm::Vm* vm, mmu::DirtyLog* log);
  absl::Status Set(uint32_t percent) override;
  absl::Status Reset() override;

 private:
  absl::Status Write(uint64_t target_pages_per_s);

  vmm::Vm* const vm_;
  mmu::DirtyLog* const log_;
  uint64_t original_ = 0;  // params target at construction (0 = flat out)
  uint64_t start_pages_written_ = 0;
  absl::Time start_;
  uint64_t base_ = 0;  // pages/s that percent applies to, fixed on first Set
  bool changed_ = false;
};

}  // namespace ferry::migration

#endif  // FERRY_AGENT_MIGRATION_SOURCE_THROTTLE_H_
