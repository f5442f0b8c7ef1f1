// Kicking a vCPU thread out of KVM_RUN: set kvm_run.immediate_exit (covers a
// thread about to enter KVM_RUN) and send it SIGUSR1 (covers one already
// inside). The handler is empty and installed without SA_RESTART, so the
// ioctl returns EINTR (api.rst, "KVM_CAP_IMMEDIATE_EXIT"; Firecracker and
// kvmtool do the same).
#ifndef FERRY_AGENT_VMM_KVM_KICK_H_
#define FERRY_AGENT_VMM_KVM_KICK_H_

#include <pthread.h>
#include <signal.h>

namespace ferry::vmm {

inline constexpr int kKickSignal = SIGUSR1;

// Installs the empty SIGUSR1 handler once per process (idempotent). A
// SIGUSR1 handler someone else installed is replaced; ferry owns SIGUSR1.
void InstallKickSignalHandler();

// pthread_kill(thread, kKickSignal); ESRCH (thread gone) is ignored.
void SendKickSignal(pthread_t thread);

}  // namespace ferry::vmm

#endif  // FERRY_AGENT_VMM_KVM_KICK_H_
