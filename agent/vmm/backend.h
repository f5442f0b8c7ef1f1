// The backend seam: what the VMM (agent/vmm/vm.h) needs from whatever runs
// a guest's vCPUs. Two implementations:
//
//   kvm/   KvmBackend: /dev/kvm through kmod/. The embedded payload runs at
//          CPL3 in long mode; guest events arrive as port I/O exits.
//   soft/  SoftBackend: host threads run the same workload core
//          (agent/guest/workload.h) step by step; guest memory is reached
//          through a SoftMemoryPort (the software MMU in production).
//
// Object model, one level per kernel object as in kvm-ioctls:
//   Backend  (≈ /dev/kvm)  probes, validates limits, creates Machines.
//   Machine  (≈ VM fd)     owns the vCPUs of one VM, saves/restores the
//                          whole non-memory state, creates dirty trackers.
//   Vcpu     (≈ vCPU fd)   Run() on its own thread; Kick() from any thread.
//
// Guest memory is NOT owned here: the Vm owns the GuestMemory and outlives
// its Machine, so the same memfd can be handed to a migration receiver.
#ifndef FERRY_AGENT_VMM_BACKEND_H_
#define FERRY_AGENT_VMM_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/vmm/guest_config.h"
#include "mmu/dirty_tracker.h"
#include "mmu/guest_memory.h"
#include "proto/vm.pb.h"

namespace ferry::vmm {

// Why Vcpu::Run() returned.
struct VcpuExit {
  enum class Kind {
    // A Kick() was pending or arrived; consumed by this return.
    kKicked,
    // The guest reported an event on FERRY_GUEST_EVENT_PORT.
    kGuestEvent,
    // KVM_EXIT_DIRTY_RING_FULL: harvest, then Run() again.
    kDirtyRingFull,
    // The guest cannot continue (triple fault, fatal exit). `detail` says
    // why, with registers where the backend has them.
    kShutdown,
  };
  Kind kind = Kind::kKicked;
  uint64_t event_code = 0;  // kGuestEvent: FERRY_GUEST_EVENT_*
  uint64_t event_arg = 0;
  std::string detail;
};

absl::string_view VcpuExitKindName(VcpuExit::Kind kind);

class Vcpu {
 public:
  virtual ~Vcpu() = default;

  virtual uint32_t index() const = 0;

  // Runs guest code until something needs the VMM. Called only on this
  // vCPU's own thread. An error status means the backend itself failed
  // (an ioctl error), not the guest.
  virtual absl::StatusOr<VcpuExit> Run() = 0;

  // Makes the current or next Run() return kKicked soon. Thread-safe and
  // sticky: a kick that lands between two Run() calls is not lost.
  virtual void Kick() = 0;

  // Brings the vCPU to a state that Save() captures exactly (KVM: completes
  // an I/O or MMIO instruction left half done by the last exit,
  // KVM-FACTS.md). Called on the vCPU's thread before it parks.
  virtual absl::Status Quiesce() = 0;

  // Registers the thread that calls Run() (KVM kicks it with a signal).
  // Called once, first thing on that thread.
  virtual void BindToCurrentThread() {}
};

class Machine {
 public:
  virtual ~Machine() = default;

  virtual uint32_t vcpu_count() const = 0;
  virtual Vcpu& vcpu(uint32_t index) = 0;

  // Puts every vCPU at the payload's entry (fresh VM). Exactly one of
  // Boot() and Restore() is called, before any Run().
  virtual absl::Status Boot() = 0;

  // Fills state->kvm or state->soft, state->clock and state->devices.
  // All vCPUs must be parked (after Quiesce()).
  virtual absl::Status Save(v1::VmState* state) = 0;
  // The inverse, into a machine that has never run. FAILED_PRECONDITION if
  // the state was saved by the other backend.
  virtual absl::Status Restore(const v1::VmState& state) = 0;

  // A tracker of the given mode for this machine's memory (the caller
  // Start()s it with GuestMemory::slots()). kUnspecified = the best the
  // backend has. Must be destroyed before the Machine.
  virtual absl::StatusOr<std::unique_ptr<mmu::DirtyTracker>>
  CreateDirtyTracker(mmu::DirtyTrackingMode mode) = 0;

  // The guest clock the payload paces itself by, in ticks of
  // GuestConfig::tsc_hz, as the VMM can best read it (stats only).
  virtual uint64_t GuestTicks() const = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  // "kvm" or "soft".
  virtual absl::string_view name() const = 0;
  virtual v1::VmBackend kind() const = 0;

  // OK if this backend can create machines on this host; otherwise the
  // reason (e.g. UNAVAILABLE "no /dev/kvm ...").
  virtual absl::Status Probe() const = 0;

  // Most vCPUs one machine may have (KVM: KVM_CAP_MAX_VCPUS, capped by the
  // guest ABI's FERRY_GUEST_MAX_VCPUS).
  virtual absl::StatusOr<uint32_t> MaxVcpus() const = 0;

  // The TSC frequency the payload is told to pace by (params.tsc_hz).
  virtual absl::StatusOr<uint64_t> GuestTscHz() const = 0;

  // A machine for `config` over `memory` (whose params page and payload the
  // VMM has already written). `memory` must outlive the machine.
  virtual absl::StatusOr<std::unique_ptr<Machine>> CreateMachine(
      const GuestConfig& config, mmu::GuestMemory& memory) = 0;
};

}  // namespace ferry::vmm

#endif  // FERRY_AGENT_VMM_BACKEND_H_
