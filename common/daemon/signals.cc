#include "common/daemon/signals.h"

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace ferry::daemon {

int BlockShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  if (pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) return -1;
  // A peer that closes its socket must not kill the daemon mid-write.
  signal(SIGPIPE, SIG_IGN);
  return signalfd(-1, &set, SFD_CLOEXEC);
}

int WaitForShutdownSignal(int signal_fd) {
  for (;;) {
    signalfd_siginfo info;
    const ssize_t n = read(signal_fd, &info, sizeof(info));
    if (n == sizeof(info)) return static_cast<int>(info.ssi_signo);
    if (n < 0 && errno == EINTR) continue;
    std::fprintf(stderr, "signalfd read failed (%s); shutting down\n",
                 n < 0 ? std::strerror(errno) : "short read");
    return SIGTERM;
  }
}

}  // namespace ferry::daemon
