// KvmVcpu: one kmod::VcpuFd driven by the VMM. Run() loops over the exits
// it can finish itself (MMIO and port I/O to no device: reads return all
// ones, writes are dropped) and returns for everything the Vm decides on:
// kicks, guest events on FERRY_GUEST_EVENT_PORT, a full dirty ring, and
// shutdown / internal errors (with registers for the log).
#ifndef FERRY_AGENT_VMM_KVM_KVM_VCPU_H_
#define FERRY_AGENT_VMM_KVM_KVM_VCPU_H_

#include <pthread.h>

#include <atomic>
#include <cstdint>

#include "agent/vmm/backend.h"
#include "kmod/vcpu.h"

namespace ferry::vmm {

class KvmVcpu : public Vcpu {
 public:
  KvmVcpu(uint32_t index, kmod::VcpuFd fd);

  kmod::VcpuFd& fd() { return fd_; }

  uint32_t index() const override { return index_; }
  absl::StatusOr<VcpuExit> Run() override;
  void Kick() override;
  absl::Status Quiesce() override;
  void BindToCurrentThread() override;

 private:
  // nullopt: handled here, run again.
  absl::StatusOr<std::optional<VcpuExit>> HandleExit();
  std::optional<VcpuExit> HandleIo(const kmod::IoExit& io);
  VcpuExit Fatal(absl::string_view what);

  const uint32_t index_;
  kmod::VcpuFd fd_;
  std::atomic<bool> bound_{false};
  pthread_t thread_{};
  // The last exit was I/O or MMIO: the instruction completes on the next
  // KVM_RUN, so Quiesce() must run once more before a save.
  bool exit_pending_ = false;
  bool warned_unknown_io_ = false;
};

}  // namespace ferry::vmm

#endif  // FERRY_AGENT_VMM_KVM_KVM_VCPU_H_
