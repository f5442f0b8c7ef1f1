// Helpers for tests and benchmarks that run real ferry-agent processes:
// starting one (port 0 + --port_file, its own data dir), waiting for it,
// stopping or killing it, and reading its logs. No gtest dependency (the
// benchmark uses it too): failures come back as absl::Status.
#ifndef FERRY_TESTS_AGENT_PROCESS_UTIL_H_
#define FERRY_TESTS_AGENT_PROCESS_UTIL_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/agent.grpc.pb.h"

namespace ferry::agent_test {

std::string ReadFile(const std::string& path);
bool Exists(const std::string& path);

// The ferry-agent binary: $TEST_SRCDIR/<workspace>/agent/ferry-agent in a
// test, else from the runfiles ($RUNFILES_DIR, or <argv0>.runfiles when
// SetArgv0 was called), else ./agent/ferry-agent (bazel run's cwd).
std::string AgentBinary();
// Any binary or file of the workspace, found the same way (`rel` as
// "controller/ferry-controller").
std::string RunfilePath(const std::string& rel);
void SetArgv0(const char* argv0);

// Starts `args` (args[0] a path) with stdin from /dev/null and stdout/stderr
// written to the two files. Returns the pid, or an error naming args[0].
absl::StatusOr<pid_t> SpawnLogged(const std::vector<std::string>& args,
                                  const std::string& stdout_path,
                                  const std::string& stderr_path);

// $TEST_TMPDIR, else /tmp.
std::string TmpDir();

// Processes whose parent is `pid` (from /proc/*/stat).
std::vector<int> ChildrenOf(int pid);

// A deadline'd client context (default 10s).
std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration timeout = absl::Seconds(10));

struct AgentConfig {
  std::string name;
  std::string data_dir;
  // Where the port file and stdout/stderr logs go; default TmpDir().
  std::string log_dir;
  std::string binary;  // default AgentBinary()
  // Appended after the defaults (--memory_capacity=512MiB,
  // --vcpu_capacity=4, --stats_interval=250ms, --backend=auto); a later
  // flag overrides an earlier one.
  std::vector<std::string> extra;
};

// One ferry-agent process. Output goes to files (Log() shows them); the
// destructor SIGKILLs a process that was not stopped.
class Agent {
 public:
  explicit Agent(AgentConfig config);
  Agent(const std::string& name, const std::string& data_dir,
        std::vector<std::string> extra = {});
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Waits for the port file; an error with the log if the agent exited or
  // timed out.
  absl::Status WaitReady(absl::Duration timeout = absl::Seconds(10));
  // Waits for exit; the exit code, or -1 (signal or timeout).
  int WaitExit(absl::Duration timeout = absl::Seconds(15));
  int Terminate();  // SIGTERM + WaitExit
  void Kill();      // SIGKILL + reap
  bool Poll();      // exited?

  std::string Log() const;
  std::string Stdout() const;
  std::string Stderr() const;

  int pid() const { return pid_; }
  const std::string& name() const { return config_.name; }
  const std::string& address() const { return address_; }
  const std::string& port_file() const { return port_file_; }
  v1::AgentService::Stub& stub() { return *stub_; }

 private:
  AgentConfig config_;
  std::string port_file_, stdout_, stderr_, address_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int exit_code_ = -1;
  std::string spawn_error_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AgentService::Stub> stub_;
};

}  // namespace ferry::agent_test

#endif  // FERRY_TESTS_AGENT_PROCESS_UTIL_H_
