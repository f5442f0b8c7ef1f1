// ferryctl as a library: Run() executes one command line against an Env
// (streams, environment, clock, interrupt flag) and returns the exit code,
// so tests drive every command in-process.
#ifndef FERRY_CLI_APP_H_
#define FERRY_CLI_APP_H_

#include <atomic>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "cli/config.h"

namespace ferry::cli {

inline constexpr char kFerryctlVersion[] = "0.1.0";

// Exit codes.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;        // Operation or server error.
inline constexpr int kExitUsage = 2;         // Bad command line.
inline constexpr int kExitUnreachable = 3;   // No connection to the server.
inline constexpr int kExitInterrupted = 130; // Ctrl-C while waiting.

struct Env {
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
  GetEnvFn getenv;
  // stdout is a terminal: progress bars redraw in place.
  bool out_is_tty = false;
  std::function<absl::Time()> now = [] { return absl::Now(); };
  // How often --watch polls lists and `drain`/`get` re-fetch.
  absl::Duration poll_interval = absl::Seconds(2);
  // Non-TTY progress: a line at least this often while nothing changes.
  absl::Duration plain_progress_interval = absl::Seconds(5);
  // Set by the SIGINT handler; watches and waits stop when it turns true.
  const std::atomic<bool>* interrupted = nullptr;
};

// `args` excludes argv[0].
int Run(const std::vector<std::string>& args, Env& env);

}  // namespace ferry::cli

#endif  // FERRY_CLI_APP_H_
