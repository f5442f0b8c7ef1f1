#include "agent/vmm/kvm/kick.h"

#include <signal.h>

namespace ferry::vmm {
namespace {

void OnKick(int) {}  // interrupting KVM_RUN is the whole point

}  // namespace

void InstallKickSignalHandler() {
  static const bool kInstalled = [] {
    struct sigaction action {};
    action.sa_handler = OnKick;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return EINTR
    sigaction(kKickSignal, &action, nullptr);
    return true;
  }();
  (void)kInstalled;
}

void SendKickSignal(pthread_t thread) { pthread_kill(thread, kKickSignal); }

}  // namespace ferry::vmm
