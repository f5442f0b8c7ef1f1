#include "agent/vmm/kvm/kvm_backend.h"

#include <x86intrin.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/guest/abi.h"
#include "agent/vmm/kvm/long_mode.h"
#include "agent/vmm/kvm/state_proto.h"
#include "agent/vmm/tsc_calibration.h"
#include "common/status_macros.h"
#include "kmod/vcpu_state.h"
#include "mmu/kvm/select.h"

namespace ferry::vmm {
namespace {

// Intel VMX needs three pages for real-mode emulation outside every memslot
// (api.rst, KVM_SET_TSS_ADDR); just below 4 GiB like QEMU's default.
constexpr uint64_t kTssAddr = 0xfffbd000;

absl::Status RegisterMemslots(kmod::VmFd& vm, mmu::GuestMemory& memory) {
  for (const mmu::Memslot& s : memory.slots()) {
    RETURN_IF_ERROR(vm.SetUserMemoryRegion(s.slot, s.gpa, s.size, s.hva, 0));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::unique_ptr<KvmVcpu>>> CreateVcpus(
    const kmod::Kvm& kvm, kmod::VmFd& vm, uint32_t count) {
  ASSIGN_OR_RETURN(std::vector<kvm_cpuid_entry2> cpuid,
                   kvm.GetSupportedCpuid());
  std::vector<std::unique_ptr<KvmVcpu>> vcpus;
  for (uint32_t i = 0; i < count; ++i) {
    ASSIGN_OR_RETURN(kmod::VcpuFd fd, vm.CreateVcpu(i));
    RETURN_IF_ERROR(fd.SetCpuid2(cpuid));
    vcpus.push_back(std::make_unique<KvmVcpu>(i, std::move(fd)));
  }
  return vcpus;
}

// The ring must exist before the first vCPU, long before anyone asks for
// dirty tracking, so "auto" turns it on whenever the kernel offers it: it
// is the cheapest mode (cost per dirty page, per-vCPU rates) and costs
// nothing while logging is off. With the ring on, KVM_GET_DIRTY_LOG is
// refused (ENXIO), so such a VM tracks with mode ring only.
absl::Status MaybeEnableDirtyRing(kmod::VmFd& vm, mmu::DirtyTrackingMode tracking) {
  uint64_t max_bytes = 0;
  for (kmod::Cap cap :
       {kmod::Cap::kDirtyLogRingAcqRel, kmod::Cap::kDirtyLogRing}) {
    absl::StatusOr<int> v = vm.CheckExtension(cap);
    if (v.ok() && *v > 0) {
      max_bytes = static_cast<uint64_t>(*v);
      break;
    }
  }
  ASSIGN_OR_RETURN(uint32_t bytes,
                   mmu::kvm::ShouldEnableDirtyRing(tracking, max_bytes));
  if (bytes == 0) return absl::OkStatus();
  return vm.EnableDirtyRing(bytes);
}

}  // namespace

KvmMachine::KvmMachine(const kmod::Kvm& kvm, kmod::VmFd vm,
                       std::vector<std::unique_ptr<KvmVcpu>> vcpus)
    : kvm_(kvm), vm_(std::move(vm)), vcpus_(std::move(vcpus)) {}

uint32_t KvmMachine::vcpu_count() const {
  return static_cast<uint32_t>(vcpus_.size());
}

absl::Status KvmMachine::Boot() {
  for (auto& v : vcpus_) {
    ASSIGN_OR_RETURN(kvm_sregs sregs, v->fd().GetSregs());
    SetLongModeSregs(&sregs);
    RETURN_IF_ERROR(v->fd().SetSregs(sregs));
    RETURN_IF_ERROR(v->fd().SetRegs(EntryRegs(v->index())));
  }
  return absl::OkStatus();
}

absl::Status KvmMachine::Save(v1::VmState* state) {
  kmod::SaveOptions options;
  ASSIGN_OR_RETURN(options.msr_indices, kvm_.GetMsrIndexList());
  options.skip_unreadable_msrs = true;  // e.g. PVM's own MSRs, KVM-FACTS.md
  v1::KvmVcpuStates* out = state->mutable_kvm();
  for (auto& v : vcpus_) {
    ASSIGN_OR_RETURN(kmod::VcpuState s, kmod::SaveVcpuState(v->fd(), options));
    v1::VcpuState* p = out->add_vcpus();
    *p = VcpuStateToProto(v->index(), s);
    // Optional (KVM_CAP_GET_TSC_KHZ); 0 in the proto means "unknown".
    if (absl::StatusOr<uint32_t> khz = v->fd().GetTscKhz(); khz.ok()) {
      p->set_tsc_khz(*khz);
    }
  }
  ASSIGN_OR_RETURN(kvm_clock_data clock, vm_.GetClock());
  state->mutable_clock()->set_clock_ns(clock.clock);
  state->mutable_clock()->set_flags(clock.flags);
  state->mutable_clock()->set_realtime_ns(clock.realtime);
  state->mutable_clock()->set_host_tsc(clock.host_tsc);
  return absl::OkStatus();
}

namespace {

// The guest calibrated its pacing against the source's TSC rate: on a host
// whose TSC ticks at another rate the destination must scale it (TSC
// scaling, KVM_SET_TSC_KHZ) or guest time would change speed.
absl::Status MatchTscRate(const kmod::VcpuFd& vcpu, uint32_t source_khz) {
  if (source_khz == 0) return absl::OkStatus();  // source did not know
  absl::StatusOr<uint32_t> here = vcpu.GetTscKhz();
  if (here.ok() && *here == source_khz) return absl::OkStatus();
  absl::Status set = vcpu.SetTscKhz(source_khz);
  if (set.ok()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "the source guest's TSC runs at ", source_khz, " kHz and this host "
      "cannot match it (", set.message(), "); migrate to a host with the "
      "same TSC rate or with TSC scaling"));
}

}  // namespace

absl::Status KvmMachine::Restore(const v1::VmState& state) {
  if (!state.has_kvm()) {
    return absl::FailedPreconditionError(
        "VmState holds soft-backend vCPU state; it can only be restored into "
        "the soft backend");
  }
  if (state.kvm().vcpus_size() != static_cast<int>(vcpus_.size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "VmState has ", state.kvm().vcpus_size(), " KVM vCPUs but the spec "
        "says ", vcpus_.size()));
  }
  kmod::RestoreOptions options;
  options.skip_refused_msrs = true;  // 0x4b564d06 without irqchip
  for (const v1::VcpuState& p : state.kvm().vcpus()) {
    if (p.vcpu_index() >= vcpus_.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("VmState vCPU index ", p.vcpu_index(), " out of range"));
    }
    ASSIGN_OR_RETURN(kmod::VcpuState s, VcpuStateFromProto(p));
    RETURN_IF_ERROR(MatchTscRate(vcpus_[p.vcpu_index()]->fd(), p.tsc_khz()));
    RETURN_IF_ERROR(
        kmod::RestoreVcpuState(vcpus_[p.vcpu_index()]->fd(), s, options));
  }
  kvm_clock_data clock{};
  clock.clock = state.clock().clock_ns();
  return vm_.SetClock(clock);
}

absl::StatusOr<std::unique_ptr<mmu::DirtyTracker>>
KvmMachine::CreateDirtyTracker(mmu::DirtyTrackingMode mode) {
  std::vector<kmod::DirtyRing*> rings;
  for (auto& v : vcpus_) {
    if (kmod::DirtyRing* ring = v->fd().dirty_ring()) rings.push_back(ring);
  }
  const bool all_rings = !rings.empty() && rings.size() == vcpus_.size();
  ASSIGN_OR_RETURN(mmu::kvm::DirtyTrackingCaps caps,
                   mmu::kvm::ProbeDirtyTrackingCaps(vm_, all_rings));
  ASSIGN_OR_RETURN(mmu::DirtyTrackingMode chosen,
                   mmu::kvm::ChooseDirtyTrackingMode(mode, caps));
  if (!all_rings) rings.clear();
  return mmu::kvm::CreateKvmDirtyTracker(chosen, &vm_, std::move(rings));
}

uint64_t KvmMachine::GuestTicks() const { return __rdtsc(); }

KvmBackend::KvmBackend(std::string device_path, mmu::DirtyTrackingMode tracking)
    : path_(std::move(device_path)), tracking_(tracking) {}

absl::StatusOr<const kmod::Kvm*> KvmBackend::Device() const {
  absl::MutexLock lock(&mu_);
  if (kvm_) return &*kvm_;
  if (!open_error_.ok()) return open_error_;
  absl::StatusOr<kmod::Kvm> kvm = kmod::Kvm::Open(path_);
  if (!kvm.ok()) {
    open_error_ = absl::Status(
        kvm.status().code(),
        absl::StrCat("KVM backend unavailable: ", kvm.status().message()));
    return open_error_;
  }
  kvm_.emplace(*std::move(kvm));
  return &*kvm_;
}

absl::Status KvmBackend::Probe() const { return Device().status(); }

absl::StatusOr<uint32_t> KvmBackend::MaxVcpus() const {
  ASSIGN_OR_RETURN(const kmod::Kvm* kvm, Device());
  ASSIGN_OR_RETURN(int max, kvm->MaxVcpus());
  return static_cast<uint32_t>(std::min(max, FERRY_GUEST_MAX_VCPUS));
}

absl::StatusOr<uint64_t> KvmBackend::GuestTscHz() const {
  return CalibratedTscHz();
}

absl::StatusOr<std::unique_ptr<Machine>> KvmBackend::CreateMachine(
    const GuestConfig& config, mmu::GuestMemory& memory) {
  ASSIGN_OR_RETURN(const kmod::Kvm* kvm, Device());
  RETURN_IF_ERROR(WriteLongModeTables(memory));
  ASSIGN_OR_RETURN(kmod::VmFd vm, kvm->CreateVm());
  RETURN_IF_ERROR(MaybeEnableDirtyRing(vm, tracking_));
  RETURN_IF_ERROR(vm.SetTssAddr(kTssAddr));
  RETURN_IF_ERROR(RegisterMemslots(vm, memory));
  ASSIGN_OR_RETURN(std::vector<std::unique_ptr<KvmVcpu>> vcpus,
                   CreateVcpus(*kvm, vm, config.vcpu_count));
  return std::unique_ptr<Machine>(
      std::make_unique<KvmMachine>(*kvm, std::move(vm), std::move(vcpus)));
}

}  // namespace ferry::vmm
