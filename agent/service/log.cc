#include "agent/service/log.h"

#include <unistd.h>

#include <cerrno>

#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace ferry::service {

void LogLine(LogLevel level, absl::string_view message) {
  const char tag = level == LogLevel::kInfo      ? 'I'
                   : level == LogLevel::kWarning ? 'W'
                                                 : 'E';
  std::string line = absl::StrCat(
      absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::Now(), absl::UTCTimeZone()),
      " ", std::string(1, tag), " ferry-agent: ", message, "\n");
  // One write per line; a short write to stderr is not worth a retry loop
  // beyond EINTR.
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace ferry::service
