// Vm: one guest's lifecycle over a Backend — memory, vCPU threads, exits,
// pause/resume, save/restore and stats.
//
// Threads: one host thread per vCPU runs Vcpu::Run() in a loop and parks
// between runs whenever the VM is paused, failed or stopping. Control calls
// (Pause, Resume, Save, Stats, destruction) come from any one thread at a
// time; Stats() may run concurrently with everything.
//
// Parking protocol (the "safe point"): a controller sets a flag under mu_,
// then kicks every vCPU. A vCPU thread re-checks the flags under mu_ after
// every Run() return; Vcpu::Run() consumes the kick before it returns, so a
// kick can only be lost if the flag it announces was already visible. A
// parking thread first calls Vcpu::Quiesce() (KVM: completes a half-done
// I/O instruction, KVM-FACTS.md), then counts itself in parked_.
//
// Throttle (SetThrottle, auto-converge): like QEMU's cpu-throttle, a timer
// thread kicks every vCPU once per ~10 ms timeslice and each vCPU thread
// then sleeps `percent` of the timeslice before it runs again (KVM: out of
// KVM_RUN; soft: between steps). Nothing of it lives in guest memory; it
// is not saved and a restored VM starts unthrottled.
//
// Teardown order: stop and join the threads, destroy the Machine (vCPU and
// VM fds, mappings), then the GuestMemory. Any DirtyTracker made by
// CreateDirtyTracker() must be destroyed before the Vm.
#ifndef FERRY_AGENT_VMM_VM_H_
#define FERRY_AGENT_VMM_VM_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/guest/workload.h"
#include "agent/vmm/backend.h"
#include "agent/vmm/guest_config.h"
#include "agent/vmm/guest_image.h"
#include "mmu/dirty_tracker.h"
#include "mmu/guest_memory.h"
#include "proto/vm.pb.h"

namespace ferry::vmm {

struct VmOptions {
  // Create/Restore leave the vCPUs parked; Resume() starts them. A
  // migration destination wants this.
  bool start_paused = false;
  // How long Pause() waits for every vCPU to park before giving up.
  absl::Duration pause_timeout = absl::Seconds(10);
  // Seed used when the spec's is 0 (0 here = pick a random one).
  uint64_t default_seed = 0;
};

struct VmStats {
  v1::VmPhase phase = v1::VM_PHASE_UNSPECIFIED;
  std::string message;   // why FAILED, or empty
  std::string backend;   // "kvm" / "soft"
  GuestTotals guest;     // from the status pages
  uint64_t guest_events = 0;     // events the guest sent (STARTED, ...)
  uint64_t ring_full_exits = 0;  // KVM_EXIT_DIRTY_RING_FULL handled
  uint64_t pause_count = 0;
  uint32_t throttle_percent = 0;  // SetThrottle
  uint64_t throttle_sleeps = 0;   // timeslices a vCPU slept for the throttle
};

class Vm {
 public:
  // Called on the vCPU's thread on KVM_EXIT_DIRTY_RING_FULL; must harvest
  // and reset the rings. An error fails the VM.
  using RingFullHandler = std::function<absl::Status(uint32_t vcpu)>;

  // A fresh VM: validates `spec` (INVALID_ARGUMENT naming the field; nothing
  // is allocated before that), allocates memfd-backed memory, loads the
  // payload, creates the machine and starts one thread per vCPU.
  static absl::StatusOr<std::unique_ptr<Vm>> Create(
      const v1::VmSpec& spec, Backend& backend, const VmOptions& options = {});

  // A VM that continues `state` over `memory` (a copy of the saved VM's
  // guest memory, same size). The vCPUs continue where they stopped.
  static absl::StatusOr<std::unique_ptr<Vm>> Restore(
      const v1::VmState& state, std::unique_ptr<mmu::GuestMemory> memory,
      Backend& backend, const VmOptions& options = {});

  // A migration destination's shell: validates `spec`, creates the machine
  // over `memory` (same size; it receives the guest's pages later) and
  // starts the vCPU threads parked, so that LoadState() — inside the
  // migration's downtime — only loads state. Paused whatever `options`
  // says; Resume() is refused until LoadState() succeeded.
  static absl::StatusOr<std::unique_ptr<Vm>> CreateIncoming(
      const v1::VmSpec& spec, std::unique_ptr<mmu::GuestMemory> memory,
      Backend& backend, const VmOptions& options = {});
  // Continues `state` (Save() of the source) in a CreateIncoming shell
  // whose memory now holds the guest's. Once; the VM stays paused.
  // FAILED_PRECONDITION for a VM that is not such a shell, a state whose
  // version, memory size or vCPU count do not fit, or the wrong backend.
  absl::Status LoadState(const v1::VmState& state) ABSL_LOCKS_EXCLUDED(mu_);

  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;
  ~Vm();

  // Stops every vCPU at a safe point and waits until all are parked.
  // Idempotent. DEADLINE_EXCEEDED names the vCPUs that did not park.
  absl::Status Pause() ABSL_LOCKS_EXCLUDED(mu_);
  // Lets parked vCPUs run again. FAILED_PRECONDITION if the VM failed.
  absl::Status Resume() ABSL_LOCKS_EXCLUDED(mu_);

  // Takes `percent` (0-99) of every vCPU's time away: each vCPU thread
  // sleeps percent% of every ~10 ms timeslice (QEMU's cpu-throttle). 0
  // turns it off. Works on any backend and any guest; takes effect within
  // a timeslice. INVALID_ARGUMENT above 99.
  absl::Status SetThrottle(uint32_t percent) ABSL_LOCKS_EXCLUDED(mu_);
  uint32_t throttle_percent() const ABSL_LOCKS_EXCLUDED(mu_);

  // The VM's whole non-memory state. The VM must be paused.
  absl::StatusOr<v1::VmState> Save() ABSL_LOCKS_EXCLUDED(mu_);

  // Read-only host check of the whole working set against the guest's
  // stamp table (wl_check_all). Meaningful while paused.
  absl::StatusOr<wl_check_result> CheckGuestMemory() const;

  VmStats Stats() const ABSL_LOCKS_EXCLUDED(mu_);
  v1::VmPhase phase() const ABSL_LOCKS_EXCLUDED(mu_);

  // Dirty tracking hooks.
  absl::StatusOr<std::unique_ptr<mmu::DirtyTracker>> CreateDirtyTracker(
      mmu::DirtyTrackingMode mode);
  // With a ring tracker (kRing) the Vm routes KVM_EXIT_DIRTY_RING_FULL to
  // its OnRingFull for as long as the tracker lives; other callers may set a
  // handler of their own (tests). Blocks until no vCPU runs the old one.
  void SetRingFullHandler(RingFullHandler handler) ABSL_LOCKS_EXCLUDED(ring_mu_);

  // The spec with everything resolved (e.g. the seed actually used).
  const v1::VmSpec& spec() const { return spec_; }
  const GuestConfig& config() const { return config_; }
  mmu::GuestMemory& memory() { return *memory_; }
  const mmu::GuestMemory& memory() const { return *memory_; }
  Backend& backend() { return backend_; }
  uint64_t guest_tsc_hz() const { return tsc_hz_; }

 private:
  Vm(v1::VmSpec spec, GuestConfig config, uint64_t tsc_hz,
     std::unique_ptr<mmu::GuestMemory> memory, Backend& backend,
     const VmOptions& options);

  // Creates the machine, runs `init` on it (Boot or Restore) and starts
  // the threads.
  absl::Status Start(const std::function<absl::Status(Machine&)>& init);

  void VcpuLoop(uint32_t index);
  // Parks while paused/failed; false once the VM is stopping.
  bool WaitUntilRunnable(Vcpu& vcpu) ABSL_LOCKS_EXCLUDED(mu_);
  void HandleExit(uint32_t index, const VcpuExit& exit)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Fail(const std::string& message) ABSL_LOCKS_EXCLUDED(mu_);
  void KickAll();
  void StopThreads() ABSL_LOCKS_EXCLUDED(mu_);
  // The throttle timer (started by the first SetThrottle > 0).
  void ThrottleLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // Sleeps this vCPU's share of a timeslice if the timer asked it to.
  void ThrottleSleep(uint32_t index) ABSL_LOCKS_EXCLUDED(mu_);
  bool Runnable() const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  // Fixed after construction, except in LoadState (before the VM ever ran,
  // with no other user yet).
  v1::VmSpec spec_;
  GuestConfig config_;
  uint64_t tsc_hz_;
  const VmOptions options_;
  Backend& backend_;
  std::unique_ptr<mmu::GuestMemory> memory_;
  std::unique_ptr<Machine> machine_;  // after memory_: destroyed first
  std::vector<std::thread> threads_;
  std::thread throttle_thread_;
  // Per vCPU: the throttle timer asks it to sleep once.
  std::unique_ptr<std::atomic<bool>[]> throttle_tick_;
  int64_t started_unix_ns_ = 0;

  mutable absl::Mutex mu_;
  bool pause_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool failed_ ABSL_GUARDED_BY(mu_) = false;
  std::string failure_ ABSL_GUARDED_BY(mu_);
  uint32_t parked_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t guest_events_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t ring_full_exits_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t pause_count_ ABSL_GUARDED_BY(mu_) = 0;
  // False for a CreateIncoming shell until LoadState.
  bool loaded_ ABSL_GUARDED_BY(mu_) = true;
  uint32_t throttle_percent_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t throttle_sleeps_ ABSL_GUARDED_BY(mu_) = 0;
  // Held shared while a vCPU thread runs the handler and exclusively while
  // it is replaced, so a tracker is never called after its owner destroyed
  // it (the ring tracker lease in vm.cc clears the handler first).
  mutable absl::Mutex ring_mu_ ABSL_ACQUIRED_AFTER(mu_);
  RingFullHandler ring_full_handler_ ABSL_GUARDED_BY(ring_mu_);
};

}  // namespace ferry::vmm

#endif  // FERRY_AGENT_VMM_VM_H_
