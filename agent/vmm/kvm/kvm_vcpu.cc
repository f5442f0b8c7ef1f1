#include "agent/vmm/kvm/kvm_vcpu.h"

#include <cstdio>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/str_format.h"
#include "agent/guest/abi.h"
#include "agent/vmm/kvm/kick.h"
#include "common/status_macros.h"

namespace ferry::vmm {

KvmVcpu::KvmVcpu(uint32_t index, kmod::VcpuFd fd)
    : index_(index), fd_(std::move(fd)) {}

void KvmVcpu::BindToCurrentThread() {
  InstallKickSignalHandler();
  thread_ = pthread_self();
  bound_.store(true, std::memory_order_release);
}

void KvmVcpu::Kick() {
  fd_.set_immediate_exit(true);
  if (bound_.load(std::memory_order_acquire)) SendKickSignal(thread_);
}

absl::StatusOr<VcpuExit> KvmVcpu::Run() {
  for (;;) {
    ASSIGN_OR_RETURN(kmod::VcpuFd::RunResult result, fd_.Run());
    if (result == kmod::VcpuFd::RunResult::kInterrupted) {
      // Consume the kick. A kick racing with this store was announced by a
      // flag the Vm checks next (vm.h, "Parking protocol").
      fd_.set_immediate_exit(false);
      return VcpuExit{VcpuExit::Kind::kKicked};
    }
    ASSIGN_OR_RETURN(std::optional<VcpuExit> exit, HandleExit());
    if (exit) return *std::move(exit);
  }
}

absl::StatusOr<std::optional<VcpuExit>> KvmVcpu::HandleExit() {
  const uint32_t reason = fd_.exit_reason();
  exit_pending_ = reason == KVM_EXIT_IO || reason == KVM_EXIT_MMIO;
  switch (reason) {
    case KVM_EXIT_IO: {
      ASSIGN_OR_RETURN(kmod::IoExit io, fd_.io());
      return HandleIo(io);
    }
    case KVM_EXIT_MMIO: {
      ASSIGN_OR_RETURN(kmod::MmioExit mmio, fd_.mmio());
      if (!mmio.write) std::memset(mmio.data.data(), 0xff, mmio.data.size());
      return std::nullopt;  // no MMIO devices: open bus
    }
    case KVM_EXIT_DIRTY_RING_FULL:
      return VcpuExit{VcpuExit::Kind::kDirtyRingFull};
    case KVM_EXIT_SHUTDOWN:
      return Fatal("guest triple-faulted (KVM_EXIT_SHUTDOWN)");
    default:
      return Fatal(absl::StrCat("unexpected exit ",
                                kmod::ExitReasonName(reason)));
  }
}

std::optional<VcpuExit> KvmVcpu::HandleIo(const kmod::IoExit& io) {
  if (io.out && io.port == FERRY_GUEST_EVENT_PORT && io.size == 4 &&
      io.count == 1) {
    uint32_t value;
    std::memcpy(&value, io.data.data(), 4);
    VcpuExit exit{VcpuExit::Kind::kGuestEvent};
    exit.event_code = value & 0xff;
    exit.event_arg = value >> 8;
    return exit;
  }
  if (!io.out) std::memset(io.data.data(), 0xff, io.data.size());
  if (!warned_unknown_io_) {
    warned_unknown_io_ = true;
    std::fprintf(stderr, "ferry vmm: vCPU %u: %s to unknown port 0x%x ignored\n",
                 index_, io.out ? "out" : "in", io.port);
  }
  return std::nullopt;
}

VcpuExit KvmVcpu::Fatal(absl::string_view what) {
  VcpuExit exit{VcpuExit::Kind::kShutdown};
  exit.detail = std::string(what);
  absl::StatusOr<kvm_regs> regs = fd_.GetRegs();
  absl::StatusOr<kvm_sregs> sregs = fd_.GetSregs();
  if (regs.ok()) {
    absl::StrAppendFormat(&exit.detail,
                          " rip=0x%x rsp=0x%x rflags=0x%x rax=0x%x rdi=0x%x",
                          regs->rip, regs->rsp, regs->rflags, regs->rax,
                          regs->rdi);
  }
  if (sregs.ok()) {
    absl::StrAppendFormat(&exit.detail, " cr0=0x%x cr2=0x%x cr3=0x%x cs=0x%x",
                          sregs->cr0, sregs->cr2, sregs->cr3,
                          sregs->cs.selector);
  }
  return exit;
}

absl::Status KvmVcpu::Quiesce() {
  if (!exit_pending_) return absl::OkStatus();
  exit_pending_ = false;
  return fd_.CompletePendingExit();
}

}  // namespace ferry::vmm
