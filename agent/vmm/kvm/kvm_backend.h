// KvmBackend: guests on /dev/kvm through kmod/. The device is opened on
// first use (Probe) and kept; a missing or unusable device is reported by
// Probe() with kmod's NotFound/Unavailable/PermissionDenied and what to do.
#ifndef FERRY_AGENT_VMM_KVM_KVM_BACKEND_H_
#define FERRY_AGENT_VMM_KVM_KVM_BACKEND_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "agent/vmm/backend.h"
#include "agent/vmm/kvm/kvm_vcpu.h"
#include "kmod/kvm.h"
#include "kmod/vm.h"
#include "mmu/dirty_tracker.h"

namespace ferry::vmm {

class KvmMachine : public Machine {
 public:
  KvmMachine(const kmod::Kvm& kvm, kmod::VmFd vm,
             std::vector<std::unique_ptr<KvmVcpu>> vcpus);

  uint32_t vcpu_count() const override;
  Vcpu& vcpu(uint32_t index) override { return *vcpus_[index]; }
  absl::Status Boot() override;
  absl::Status Save(v1::VmState* state) override;
  absl::Status Restore(const v1::VmState& state) override;
  absl::StatusOr<std::unique_ptr<mmu::DirtyTracker>> CreateDirtyTracker(
      mmu::DirtyTrackingMode mode) override;
  uint64_t GuestTicks() const override;

 private:
  const kmod::Kvm& kvm_;
  kmod::VmFd vm_;
  std::vector<std::unique_ptr<KvmVcpu>> vcpus_;
};

class KvmBackend : public Backend {
 public:
  // `tracking` decides at VM creation whether the dirty ring is switched on
  // (mmu/kvm/select.h): kUnspecified ("auto") and kRing turn it on when the
  // kernel offers it; kBitmap and kClearLog keep it off, because with the
  // ring on KVM refuses KVM_GET_DIRTY_LOG.
  explicit KvmBackend(
      std::string device_path = kmod::Kvm::kDefaultPath,
      mmu::DirtyTrackingMode tracking = mmu::DirtyTrackingMode::kUnspecified);

  absl::string_view name() const override { return "kvm"; }
  v1::VmBackend kind() const override { return v1::VM_BACKEND_KVM; }
  absl::Status Probe() const override ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<uint32_t> MaxVcpus() const override;
  absl::StatusOr<uint64_t> GuestTscHz() const override;
  absl::StatusOr<std::unique_ptr<Machine>> CreateMachine(
      const GuestConfig& config, mmu::GuestMemory& memory) override;

 private:
  absl::StatusOr<const kmod::Kvm*> Device() const ABSL_LOCKS_EXCLUDED(mu_);

  const std::string path_;
  const mmu::DirtyTrackingMode tracking_;
  mutable absl::Mutex mu_;
  // Opened once; never reset while machines may hold a reference.
  mutable std::optional<kmod::Kvm> kvm_ ABSL_GUARDED_BY(mu_);
  mutable absl::Status open_error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::vmm

#endif  // FERRY_AGENT_VMM_KVM_KVM_BACKEND_H_
