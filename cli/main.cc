// ferryctl: wires the process (argv, stdio, SIGINT, environment) to the
// library in cli/app.h, where everything else lives.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <iostream>

#include "cli/app.h"

namespace {

std::atomic<bool> g_interrupted{false};

void OnSigint(int) {
  // A second Ctrl-C kills at once, for when a call hangs somewhere the
  // flag is not watched.
  if (g_interrupted.exchange(true)) _exit(130);
}

}  // namespace

int main(int argc, char** argv) {
  struct sigaction sa = {};
  sa.sa_handler = OnSigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);

  ferry::cli::Env env;
  env.out = &std::cout;
  env.err = &std::cerr;
  env.getenv = [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
  env.out_is_tty = isatty(STDOUT_FILENO) == 1;
  env.interrupted = &g_interrupted;
  std::vector<std::string> args(argv + 1, argv + argc);
  int code = ferry::cli::Run(args, env);
  std::cout.flush();
  return code;
}
