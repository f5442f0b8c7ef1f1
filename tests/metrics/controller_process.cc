#include "tests/metrics/controller_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "tests/agent_process_util.h"

extern char** environ;

namespace ferry::metrics_test {

using agent_test::Ctx;
using agent_test::Exists;
using agent_test::ReadFile;
using agent_test::RunfilePath;
using agent_test::TmpDir;

namespace {

// Spawns argv with stdout/stderr to files; -1 when the spawn failed.

}  // namespace

std::string MetricsAddressIn(const std::string& text, const std::string& prefix) {
  const size_t at = text.find(prefix);
  if (at == std::string::npos) return "";
  const size_t end = text.find("/metrics", at);
  if (end == std::string::npos) return "";
  return text.substr(at + prefix.size(), end - at - prefix.size());
}

ControllerProcess::ControllerProcess(const std::string& data_dir, const std::string& tag,
                                     std::vector<std::string> extra)
    : data_dir_(data_dir) {
  port_file_ = absl::StrCat(TmpDir(), "/controller-", tag, ".port");
  stdout_ = absl::StrCat(TmpDir(), "/controller-", tag, ".out");
  stderr_ = absl::StrCat(TmpDir(), "/controller-", tag, ".err");
  unlink(port_file_.c_str());
  std::vector<std::string> args = {RunfilePath("controller/ferry-controller"),
                                   "--listen=127.0.0.1:0", "--port_file=" + port_file_,
                                   "--data_dir=" + data_dir_,
                                   "--metrics_listen=127.0.0.1:0"};
  args.insert(args.end(), extra.begin(), extra.end());
  absl::StatusOr<pid_t> pid = agent_test::SpawnLogged(args, stdout_, stderr_);
  pid_ = pid.ok() ? *pid : -1;
}

ControllerProcess::~ControllerProcess() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status;
  waitpid(pid_, &status, 0);
}

std::string ControllerProcess::Log() const { return ReadFile(stdout_) + ReadFile(stderr_); }

absl::Status ControllerProcess::WaitReady(absl::Duration timeout) {
  if (pid_ <= 0) return absl::InternalError("could not spawn ferry-controller");
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    if (address_.empty() && Exists(port_file_)) {
      address_ = std::string(absl::StripSuffix(ReadFile(port_file_), "\n"));
    }
    if (metrics_address_.empty()) {
      metrics_address_ = MetricsAddressIn(Log(), "metrics on http://");
    }
    if (!address_.empty() && !metrics_address_.empty()) {
      stub_ = v1::ControllerService::NewStub(
          grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
      return absl::OkStatus();
    }
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(absl::StrCat("ferry-controller exited: ", Log()));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("ferry-controller not ready (port file and metrics line): ", Log()));
}

absl::Status ControllerProcess::WaitHostsReady(int ready, absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  int last = -1;
  while (absl::Now() < end) {
    v1::ListHostsResponse r;
    if (stub_->ListHosts(Ctx().get(), {}, &r).ok()) {
      last = 0;
      for (const v1::Host& h : r.hosts()) {
        last += h.readiness() == v1::HOST_READINESS_READY ? 1 : 0;
      }
      if (last == ready) return absl::OkStatus();
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError(
      absl::StrCat(last, " hosts ready, wanted ", ready, ": ", Log()));
}

CommandResult RunCommand(const std::vector<std::string>& argv) {
  static std::atomic<int> seq{0};
  const int n = seq++;
  const std::string out = absl::StrCat(TmpDir(), "/cmd-", getpid(), "-", n, ".out");
  const std::string err = absl::StrCat(TmpDir(), "/cmd-", getpid(), "-", n, ".err");
  CommandResult r;
  absl::StatusOr<pid_t> spawned = agent_test::SpawnLogged(argv, out, err);
  const pid_t pid = spawned.ok() ? *spawned : -1;
  if (pid <= 0) {
    r.err = absl::StrCat("cannot spawn ", argv[0]);
    return r;
  }
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadFile(out);
  r.err = ReadFile(err);
  return r;
}

}  // namespace ferry::metrics_test
