// SoftBackend: runs guests without /dev/kvm. Each vCPU is a host thread
// stepping the shared workload core (soft_vcpu.h); guest memory accesses
// and dirty tracking go through the SoftMemoryPort the factory makes (the
// software MMU in production, a direct test port in tests).
#ifndef FERRY_AGENT_VMM_SOFT_SOFT_BACKEND_H_
#define FERRY_AGENT_VMM_SOFT_SOFT_BACKEND_H_

#include <memory>
#include <vector>

#include "agent/vmm/backend.h"
#include "agent/vmm/soft/memory_port.h"
#include "agent/vmm/soft/soft_vcpu.h"

namespace ferry::vmm {

class SoftMachine : public Machine {
 public:
  SoftMachine(std::unique_ptr<SoftMemoryPort> port, uint32_t vcpu_count);

  // Machine
  uint32_t vcpu_count() const override;
  Vcpu& vcpu(uint32_t index) override { return *vcpus_[index]; }
  absl::Status Boot() override;
  absl::Status Save(v1::VmState* state) override;
  absl::Status Restore(const v1::VmState& state) override;
  absl::StatusOr<std::unique_ptr<mmu::DirtyTracker>> CreateDirtyTracker(
      mmu::DirtyTrackingMode mode) override;
  uint64_t GuestTicks() const override { return clock_.Now(); }

 private:
  SoftClock clock_;
  std::unique_ptr<SoftMemoryPort> port_;  // outlives vcpus_
  std::vector<std::unique_ptr<SoftVcpu>> vcpus_;
};

class SoftBackend : public Backend {
 public:
  explicit SoftBackend(SoftMemoryPortFactory port_factory);

  absl::string_view name() const override { return "soft"; }
  v1::VmBackend kind() const override { return v1::VM_BACKEND_SOFT; }
  absl::Status Probe() const override;
  absl::StatusOr<uint32_t> MaxVcpus() const override;
  absl::StatusOr<uint64_t> GuestTscHz() const override;
  absl::StatusOr<std::unique_ptr<Machine>> CreateMachine(
      const GuestConfig& config, mmu::GuestMemory& memory) override;

 private:
  SoftMemoryPortFactory port_factory_;
};

}  // namespace ferry::vmm

#endif  // FERRY_AGENT_VMM_SOFT_SOFT_BACKEND_H_
