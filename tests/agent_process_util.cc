#include "tests/agent_process_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

extern char** environ;

namespace ferry::agent_test {
namespace {
std::string& Argv0() {
  static std::string* argv0 = new std::string();
  return *argv0;
}
}  // namespace

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

void SetArgv0(const char* argv0) { Argv0() = argv0 ? argv0 : ""; }

std::string AgentBinary() { return RunfilePath("agent/ferry-agent"); }

absl::StatusOr<pid_t> SpawnLogged(const std::vector<std::string>& args,
                                  const std::string& stdout_path,
                                  const std::string& stderr_path) {
  if (args.empty()) return absl::InvalidArgumentError("SpawnLogged: no program");
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, stdout_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, stderr_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("posix_spawn ", args[0], ": ", strerror(rc)));
  }
  return pid;
}

std::string RunfilePath(const std::string& rel) {
  const char* workspace = std::getenv("TEST_WORKSPACE");
  const std::string ws = workspace ? workspace : "ferry";
  if (const char* srcdir = std::getenv("TEST_SRCDIR")) {
    return absl::StrCat(srcdir, "/", ws, "/", rel);
  }
  if (const char* runfiles = std::getenv("RUNFILES_DIR")) {
    const std::string p = absl::StrCat(runfiles, "/", ws, "/", rel);
    if (Exists(p)) return p;
  }
  if (!Argv0().empty()) {
    const std::string p = absl::StrCat(Argv0(), ".runfiles/", ws, "/", rel);
    if (Exists(p)) return p;
  }
  return rel;
}

std::string TmpDir() {
  const char* t = std::getenv("TEST_TMPDIR");
  return t ? t : "/tmp";
}

// Where agent logs go: Bazel keeps TEST_UNDECLARED_OUTPUTS_DIR (in
// test.outputs/) even when the test times out, so a hang leaves the agents'
// side of the story behind.
std::string LogDir() {
  const char* t = std::getenv("TEST_UNDECLARED_OUTPUTS_DIR");
  return t ? t : TmpDir();
}

std::vector<int> ChildrenOf(int pid) {
  std::vector<int> out;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return out;
  while (dirent* e = readdir(proc)) {
    const int child = std::atoi(e->d_name);
    if (child <= 0) continue;
    std::string stat = ReadFile(absl::StrCat("/proc/", child, "/stat"));
    // pid (comm) state ppid ...; comm may contain spaces, so parse after ')'.
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 1));
    std::string state;
    int ppid = 0;
    rest >> state >> ppid;
    if (ppid == pid) out.push_back(child);
  }
  closedir(proc);
  return out;
}

std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return ctx;
}

Agent::Agent(const std::string& name, const std::string& data_dir,
             std::vector<std::string> extra)
    : Agent(AgentConfig{name, data_dir, "", "", std::move(extra)}) {}

Agent::Agent(AgentConfig config) : config_(std::move(config)) {
  if (config_.log_dir.empty()) config_.log_dir = LogDir();
  if (config_.binary.empty()) config_.binary = AgentBinary();
  const std::string base = absl::StrCat(config_.log_dir, "/", config_.name);
  port_file_ = base + ".port";
  stdout_ = base + ".stdout";
  stderr_ = base + ".stderr";
  unlink(port_file_.c_str());
  std::vector<std::string> args = {
      config_.binary, "--listen=127.0.0.1:0", "--port_file=" + port_file_,
      "--data_dir=" + config_.data_dir, "--name=" + config_.name,
      "--backend=auto", "--memory_capacity=512MiB", "--vcpu_capacity=4",
      "--stats_interval=250ms"};
  args.insert(args.end(), config_.extra.begin(), config_.extra.end());
  absl::StatusOr<pid_t> pid = SpawnLogged(args, stdout_, stderr_);
  if (pid.ok()) {
    pid_ = *pid;
  } else {
    spawn_error_ = std::string(pid.status().message());
    pid_ = -1;
  }
}

Agent::~Agent() {
  if (pid_ > 0 && !exited_) Kill();
}

void Agent::Kill() {
  if (pid_ <= 0 || exited_) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  exited_ = true;
  exit_code_ = -1;
}

absl::Status Agent::WaitReady(absl::Duration timeout) {
  if (pid_ <= 0) return absl::InternalError(spawn_error_);
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    if (Exists(port_file_)) {
      address_ = std::string(absl::StripAsciiWhitespace(ReadFile(port_file_)));
      channel_ = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
      stub_ = v1::AgentService::NewStub(channel_);
      return absl::OkStatus();
    }
    if (Poll()) {
      return absl::InternalError(absl::StrCat(config_.name, " exited early with ",
                                              exit_code_, ":\n", Log()));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError(
      absl::StrCat(config_.name, " did not write ", port_file_, ":\n", Log()));
}

int Agent::WaitExit(absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    if (Poll()) return exit_code_;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return -1;
}

int Agent::Terminate() {
  if (pid_ <= 0) return -1;
  if (!exited_) kill(pid_, SIGTERM);
  return WaitExit();
}

bool Agent::Poll() {
  if (exited_) return true;
  if (pid_ <= 0) return true;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) != pid_) return false;
  exited_ = true;
  exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return true;
}

std::string Agent::Log() const {
  return absl::StrCat("--- stdout:\n", ReadFile(stdout_), "--- stderr:\n",
                      ReadFile(stderr_));
}
std::string Agent::Stdout() const { return ReadFile(stdout_); }
std::string Agent::Stderr() const { return ReadFile(stderr_); }

}  // namespace ferry::agent_test
