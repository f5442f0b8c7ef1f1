// Shutdown signals for ferry's daemons: SIGTERM/SIGINT are blocked in every
// thread and read from a signalfd by the main thread, so no handler runs at
// an arbitrary point and shutdown happens in one place, in order.
#ifndef FERRY_COMMON_DAEMON_SIGNALS_H_
#define FERRY_COMMON_DAEMON_SIGNALS_H_

namespace ferry::daemon {

// Blocks SIGTERM and SIGINT in the calling thread and ignores SIGPIPE. Call
// it first in main(), before any other thread exists, so every thread
// inherits the mask and only the signalfd sees the signals. Returns the
// signalfd, or -1 with errno set.
int BlockShutdownSignals();

// Waits for one of them; returns its number (SIGTERM if the read fails).
int WaitForShutdownSignal(int signal_fd);

}  // namespace ferry::daemon

#endif  // FERRY_COMMON_DAEMON_SIGNALS_H_
