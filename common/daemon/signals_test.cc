#include "common/daemon/signals.h"

#include <signal.h>
#include <unistd.h>

#include <thread>

#include "gtest/gtest.h"

namespace ferry::daemon {
namespace {

TEST(Signals, ATermSentToTheProcessIsReadFromTheSignalfdInOrder) {
  const int fd = BlockShutdownSignals();
  ASSERT_GE(fd, 0);
  // A thread started after the mask inherits it: the signal is not
  // delivered to it as a default action (which would kill the test).
  std::thread other([] { usleep(20000); });
  ASSERT_EQ(kill(getpid(), SIGINT), 0);
  EXPECT_EQ(WaitForShutdownSignal(fd), SIGINT);
  ASSERT_EQ(kill(getpid(), SIGTERM), 0);
  EXPECT_EQ(WaitForShutdownSignal(fd), SIGTERM);
  other.join();
  close(fd);
}

TEST(Signals, AClosedFdCountsAsShutdown) {
  EXPECT_EQ(WaitForShutdownSignal(-1), SIGTERM);
}

}  // namespace
}  // namespace ferry::daemon
