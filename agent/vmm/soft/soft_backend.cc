#include "agent/vmm/soft/soft_backend.h"

#include <cstddef>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"

namespace ferry::vmm {
namespace {

#define STATUS_OFFSET(field) offsetof(ferry_guest_status, field)

void SaveSoftVcpu(const SoftVcpu& vcpu, v1::SoftVcpuState* out) {
  out->set_vcpu_index(vcpu.index());
  // Informational: the workload core's real state (position, RNG, pacing
  // credit) is in the status page's private half and travels with memory.
  out->set_iterations(vcpu.LoadStatus(STATUS_OFFSET(iterations)));
  out->set_pages_written(vcpu.LoadStatus(STATUS_OFFSET(pages_written)));
  out->set_pages_verified(vcpu.LoadStatus(STATUS_OFFSET(pages_verified)));
  out->set_stamp(vcpu.LoadStatus(STATUS_OFFSET(last_stamp)));
}

}  // namespace

SoftMachine::SoftMachine(std::unique_ptr<SoftMemoryPort> port,
                         uint32_t vcpu_count)
    : port_(std::move(port)) {
  vcpus_.reserve(vcpu_count);
  for (uint32_t i = 0; i < vcpu_count; ++i) {
    vcpus_.push_back(std::make_unique<SoftVcpu>(i, port_.get(), &clock_));
  }
}

uint32_t SoftMachine::vcpu_count() const {
  return static_cast<uint32_t>(vcpus_.size());
}

absl::Status SoftMachine::Boot() {
  clock_.Set(0);
  for (auto& v : vcpus_) v->set_needs_init(true);
  return absl::OkStatus();
}

absl::Status SoftMachine::Save(v1::VmState* state) {
  v1::SoftVcpuStates* soft = state->mutable_soft();
  for (const auto& v : vcpus_) SaveSoftVcpu(*v, soft->add_vcpus());
  v1::ClockState* clock = state->mutable_clock();
  clock->set_clock_ns(clock_.Now());
  clock->set_realtime_ns(absl::GetCurrentTimeNanos());
  return absl::OkStatus();
}

absl::Status SoftMachine::Restore(const v1::VmState& state) {
  if (!state.has_soft()) {
    return absl::FailedPreconditionError(
        "VmState holds KVM vCPU state; it can only be restored into the kvm "
        "backend");
  }
  if (state.soft().vcpus_size() != static_cast<int>(vcpus_.size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "VmState has ", state.soft().vcpus_size(), " soft vCPUs but the spec "
        "says ", vcpus_.size()));
  }
  // The guest clock continues from the saved reading; time in transit does
  // not count (the workload's token bucket never catches up a pause).
  clock_.Set(state.clock().clock_ns());
  for (auto& v : vcpus_) {
    // A vCPU saved before its first step starts from scratch.
    v->set_needs_init(v->LoadStatus(STATUS_OFFSET(magic)) !=
                      FERRY_GUEST_STATUS_MAGIC);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<mmu::DirtyTracker>>
SoftMachine::CreateDirtyTracker(mmu::DirtyTrackingMode mode) {
  return port_->CreateDirtyTracker(mode);
}

#undef STATUS_OFFSET

SoftBackend::SoftBackend(SoftMemoryPortFactory port_factory)
    : port_factory_(std::move(port_factory)) {}

absl::Status SoftBackend::Probe() const {
  if (!port_factory_) {
    return absl::FailedPreconditionError(
        "soft backend built without a memory port factory");
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> SoftBackend::MaxVcpus() const {
  return uint32_t{FERRY_GUEST_MAX_VCPUS};
}

absl::StatusOr<uint64_t> SoftBackend::GuestTscHz() const {
  return kSoftGuestTscHz;
}

absl::StatusOr<std::unique_ptr<Machine>> SoftBackend::CreateMachine(
    const GuestConfig& config, mmu::GuestMemory& memory) {
  RETURN_IF_ERROR(Probe());
  ASSIGN_OR_RETURN(std::unique_ptr<SoftMemoryPort> port,
                   port_factory_(memory, config.vcpu_count));
  return std::unique_ptr<Machine>(
      std::make_unique<SoftMachine>(std::move(port), config.vcpu_count));
}

}  // namespace ferry::vmm
