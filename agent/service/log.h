// Daemon logging: one line per call to stderr,
//   2024-05-01T12:00:00.123456Z I ferry-agent: message
// written with a single write(2) so lines from different threads do not
// interleave. Abseil 20220623 has no absl/log yet; this is the stopgap.
#ifndef FERRY_AGENT_SERVICE_LOG_H_
#define FERRY_AGENT_SERVICE_LOG_H_

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace ferry::service {

enum class LogLevel { kInfo, kWarning, kError };

void LogLine(LogLevel level, absl::string_view message);

template <typename... Args>
void LogInfo(const Args&... args) {
  LogLine(LogLevel::kInfo, absl::StrCat(args...));
}
template <typename... Args>
void LogWarning(const Args&... args) {
  LogLine(LogLevel::kWarning, absl::StrCat(args...));
}
template <typename... Args>
void LogError(const Args&... args) {
  LogLine(LogLevel::kError, absl::StrCat(args...));
}

}  // namespace ferry::service

#endif  // FERRY_AGENT_SERVICE_LOG_H_
