// SoftVcpu: a vCPU of the software backend. The "guest" is the workload
// core itself, called one step (batch) at a time on the vCPU's host thread;
// every bit of its state lives in guest memory (workload.h), so a vCPU is
// resumable from memory alone and stops only between steps.
//
// Time: the guest clock is CLOCK_MONOTONIC in ns plus a per-machine offset
// (SoftClock), i.e. params.tsc_hz = 1e9. Restore sets the offset so the
// guest clock continues from the saved reading, as KVM's kvmclock/TSC
// restore does. Waiting (pacing, idle) sleeps on a condition variable that
// Kick() signals, so a pause never waits for a whole pacing interval.
#ifndef FERRY_AGENT_VMM_SOFT_SOFT_VCPU_H_
#define FERRY_AGENT_VMM_SOFT_SOFT_VCPU_H_

#include <atomic>
#include <cstdint>
#include <deque>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "agent/guest/workload.h"
#include "agent/vmm/backend.h"
#include "agent/vmm/soft/memory_port.h"

namespace ferry::vmm {

inline constexpr uint64_t kSoftGuestTscHz = 1000000000;  // ticks are ns

class SoftClock {
 public:
  uint64_t Now() const;
  // Makes Now() read `ticks` at this instant.
  void Set(uint64_t ticks);

 private:
  std::atomic<int64_t> offset_ns_{0};
};

class SoftVcpu : public Vcpu {
 public:
  SoftVcpu(uint32_t index, SoftMemoryPort* port, const SoftClock* clock);

  // Fresh guest: run wl_vcpu_init before the first step. Restored guests
  // whose status page was never initialised get the same.
  void set_needs_init(bool value) { needs_init_ = value; }
  // The status-page word at byte `offset`, through the port (no dirtying).
  uint64_t LoadStatus(size_t offset) const;

  // Vcpu
  uint32_t index() const override { return index_; }
  absl::StatusOr<VcpuExit> Run() override;
  void Kick() override ABSL_LOCKS_EXCLUDED(wait_mu_);
  absl::Status Quiesce() override { return absl::OkStatus(); }

 private:
  static const wl_host_ops* Ops();
  static uint64_t OpLoad64(void* opaque, uint64_t gpa);
  static void OpStore64(void* opaque, uint64_t gpa, uint64_t value);
  static uint64_t OpNow(void* opaque);
  static void OpWaitUntil(void* opaque, uint64_t deadline);
  static void OpEvent(void* opaque, uint64_t vcpu, uint64_t code, uint64_t arg);

  // Returns at `deadline` (guest ticks) or as soon as a kick is pending.
  void WaitUntil(uint64_t deadline) ABSL_LOCKS_EXCLUDED(wait_mu_);
  bool GuestRunning() const;

  const uint32_t index_;
  SoftMemoryPort* const port_;
  const SoftClock* const clock_;
  wl_ctx ctx_;
  std::atomic<bool> kick_{false};
  // Touched only on the vCPU thread (or before it starts).
  bool needs_init_ = false;
  std::deque<VcpuExit> events_;

  absl::Mutex wait_mu_;
  absl::CondVar wait_cv_;
};

}  // namespace ferry::vmm

#endif  // FERRY_AGENT_VMM_SOFT_SOFT_VCPU_H_
