// Cross-process test of the agent daemon: starts real //agent:ferry-agent
// binaries (port 0 + --port_file, a data dir each under TEST_TMPDIR), drives
// them over gRPC, and checks start-up refusals and the SIGTERM shutdown
// (exit 0, VMs destroyed, nothing left behind).
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "proto/agent.grpc.pb.h"

extern char** environ;

namespace ferry {
namespace {

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

std::string AgentBinary() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  return absl::StrCat(srcdir ? srcdir : ".", "/", workspace ? workspace : "ferry",
                      "/agent/ferry-agent");
}

std::string TmpDir() {
  const char* t = std::getenv("TEST_TMPDIR");
  return t ? t : "/tmp";
}

// Processes whose parent is `pid` (from /proc/*/stat).
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

// One ferry-agent process. Output goes to files in TEST_TMPDIR (shown on
// failure); the destructor SIGKILLs a process the test did not stop.
class Agent {
 public:
  Agent(const std::string& name, const std::string& data_dir,
        std::vector<std::string> extra = {})
      : name_(name), data_dir_(data_dir) {
    const std::string base = absl::StrCat(TmpDir(), "/", name);
    port_file_ = base + ".port";
    stdout_ = base + ".stdout";
    stderr_ = base + ".stderr";
    unlink(port_file_.c_str());
    std::vector<std::string> args = {
        AgentBinary(), "--listen=127.0.0.1:0", "--port_file=" + port_file_,
        "--data_dir=" + data_dir_, "--name=" + name_, "--backend=auto",
        "--memory_capacity=512MiB", "--vcpu_capacity=4",
        "--stats_interval=250ms"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, stdout_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, stderr_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int rc = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(),
                               environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      ADD_FAILURE() << "posix_spawn " << argv[0] << ": " << strerror(rc);
      pid_ = -1;
    }
  }

  ~Agent() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  // Waits for the port file; false (with the log) if the agent exited.
  bool WaitReady(absl::Duration timeout = absl::Seconds(10)) {
    const absl::Time end = absl::Now() + timeout;
    while (absl::Now() < end) {
      if (Exists(port_file_)) {
        address_ = std::string(absl::StripAsciiWhitespace(ReadFile(port_file_)));
        channel_ = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
        stub_ = v1::AgentService::NewStub(channel_);
        return true;
      }
      if (Poll()) {
        ADD_FAILURE() << name_ << " exited early with " << exit_code_ << ":\n"
                      << Log();
        return false;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    ADD_FAILURE() << name_ << " did not write " << port_file_ << ":\n" << Log();
    return false;
  }

  // Waits for exit; returns the exit code, or -1 (signal/timeout).
  int WaitExit(absl::Duration timeout = absl::Seconds(15)) {
    const absl::Time end = absl::Now() + timeout;
    while (absl::Now() < end) {
      if (Poll()) return exit_code_;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return -1;
  }

  int Terminate() {
    kill(pid_, SIGTERM);
    return WaitExit();
  }

  bool Poll() {
    if (exited_) return true;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) != pid_) return false;
    exited_ = true;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return true;
  }

  std::string Log() const {
    return absl::StrCat("--- stdout:\n", ReadFile(stdout_), "--- stderr:\n",
                        ReadFile(stderr_));
  }
  std::string Stdout() const { return ReadFile(stdout_); }
  std::string Stderr() const { return ReadFile(stderr_); }

  int pid() const { return pid_; }
  const std::string& address() const { return address_; }
  const std::string& port_file() const { return port_file_; }
  v1::AgentService::Stub& stub() { return *stub_; }

 private:
  std::string name_, data_dir_, port_file_, stdout_, stderr_, address_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int exit_code_ = -1;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AgentService::Stub> stub_;
};

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return ctx;
}

v1::VmSpec Spec(const std::string& name) {
  v1::VmSpec spec;
  spec.set_name(name);
  spec.set_memory_bytes(64ull << 20);
  spec.set_vcpu_count(1);
  spec.set_backend(v1::VM_BACKEND_AUTO);
  spec.mutable_workload()->set_kind(v1::WORKLOAD_KIND_UNIFORM);
  spec.mutable_workload()->set_working_set_bytes(32ull << 20);
  spec.mutable_workload()->set_dirty_rate_bytes_per_s(500 * 4096);
  return spec;
}

v1::Vm GetVm(Agent& agent, const std::string& name) {
  v1::AgentGetVmRequest req;
  req.set_name(name);
  v1::Vm vm;
  grpc::Status s = agent.stub().GetVm(Ctx().get(), req, &vm);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return vm;
}

TEST(AgentProcessTest, TwoAgentsServeVmsAndShutDownCleanly) {
  const std::string dir_a = TmpDir() + "/data-a";
  const std::string dir_b = TmpDir() + "/data-b";
  Agent a("agent-a", dir_a, {"--labels=zone=a"});
  Agent b("agent-b", dir_b, {"--labels=zone=b"});
  ASSERT_TRUE(a.WaitReady());
  ASSERT_TRUE(b.WaitReady());
  EXPECT_NE(a.address(), b.address());
  // The one machine-readable stdout line names the bound port.
  EXPECT_EQ(a.Stdout(), absl::StrCat("ferry-agent listening on ", a.address(), "\n"));
  EXPECT_TRUE(Exists(dir_a + "/ferry-agent.lock"));

  // Host info of each.
  v1::HostInfo info_a, info_b;
  ASSERT_TRUE(a.stub().GetHostInfo(Ctx().get(), {}, &info_a).ok());
  ASSERT_TRUE(b.stub().GetHostInfo(Ctx().get(), {}, &info_b).ok());
  EXPECT_EQ(info_a.name(), "agent-a");
  EXPECT_EQ(info_b.name(), "agent-b");
  EXPECT_EQ(info_a.agent_address(), a.address());
  EXPECT_NE(info_a.instance_id(), info_b.instance_id());
  EXPECT_EQ(info_a.labels().at("zone"), "a");
  EXPECT_TRUE(info_a.labels().contains("ferry.dev/default-backend"));
  EXPECT_EQ(info_a.capacity().memory_bytes(), 512ull << 20);
  EXPECT_EQ(info_a.capacity().vcpus(), 4u);
  EXPECT_GE(info_a.backends_size(), 1);

  // A second agent on A's data dir is refused, clearly, and leaves A alone.
  {
    Agent intruder("agent-a2", dir_a);
    EXPECT_EQ(intruder.WaitExit(), 1) << intruder.Log();
    EXPECT_TRUE(absl::StrContains(intruder.Stderr(), "in use by another ferry-agent"))
        << intruder.Log();
    EXPECT_TRUE(absl::StrContains(intruder.Stderr(), absl::StrCat("pid ", a.pid())))
        << intruder.Log();
    EXPECT_FALSE(Exists(intruder.port_file()));
  }
  // So is one on A's port, and one with a bad flag.
  {
    Agent squatter("agent-c", TmpDir() + "/data-c", {"--listen=" + a.address()});
    EXPECT_EQ(squatter.WaitExit(), 1) << squatter.Log();
    EXPECT_TRUE(absl::StrContains(squatter.Stderr(), "cannot listen"))
        << squatter.Log();
    Agent confused("agent-d", TmpDir() + "/data-d", {"--backend=qemu"});
    EXPECT_EQ(confused.WaitExit(), 2) << confused.Log();
  }

  // A VM on each.
  for (Agent* agent : {&a, &b}) {
    v1::AgentCreateVmRequest req;
    *req.mutable_spec() = Spec(agent == &a ? "vm-a" : "vm-b");
    v1::Vm vm;
    grpc::Status s = agent->stub().CreateVm(Ctx().get(), req, &vm);
    ASSERT_TRUE(s.ok()) << s.error_message() << "\n" << agent->Log();
    EXPECT_EQ(vm.status().phase(), v1::VM_PHASE_RUNNING);
  }
  const v1::Vm a0 = GetVm(a, "vm-a");
  const v1::Vm b0 = GetVm(b, "vm-b");
  absl::SleepFor(absl::Milliseconds(1500));
  const v1::Vm a1 = GetVm(a, "vm-a");
  const v1::Vm b1 = GetVm(b, "vm-b");
  EXPECT_GT(a1.status().guest().iterations(), a0.status().guest().iterations());
  EXPECT_GT(b1.status().guest().pages_written(), b0.status().guest().pages_written());
  // The VMs are each agent's own.
  v1::AgentGetVmRequest other;
  other.set_name("vm-b");
  v1::Vm scratch;
  EXPECT_EQ(a.stub().GetVm(Ctx().get(), other, &scratch).error_code(),
            grpc::StatusCode::NOT_FOUND);
  for (Agent* agent : {&a, &b}) {
    v1::GetVmStatsRequest req;
    req.set_name(agent == &a ? "vm-a" : "vm-b");
    v1::VmStats stats;
    ASSERT_TRUE(agent->stub().GetVmStats(Ctx().get(), req, &stats).ok());
    EXPECT_GT(stats.dirty_rate_pages_per_s(), 100u) << stats.ShortDebugString();
    EXPECT_LT(stats.dirty_rate_pages_per_s(), 1000u) << stats.ShortDebugString();
    EXPECT_EQ(stats.selfcheck_errors(), 0u);
  }

  // Delete A's VM; leave B's for the shutdown to destroy.
  v1::AgentDeleteVmRequest del;
  del.set_name("vm-a");
  v1::AgentDeleteVmResponse del_resp;
  ASSERT_TRUE(a.stub().DeleteVm(Ctx().get(), del, &del_resp).ok());
  v1::AgentListVmsResponse list;
  ASSERT_TRUE(a.stub().ListVms(Ctx().get(), {}, &list).ok());
  EXPECT_EQ(list.vms_size(), 0);

  // The agent never forks: no child processes to leak.
  EXPECT_TRUE(ChildrenOf(a.pid()).empty());
  EXPECT_TRUE(ChildrenOf(b.pid()).empty());

  const int pid_a = a.pid(), pid_b = b.pid();
  EXPECT_EQ(a.Terminate(), 0) << a.Log();
  EXPECT_EQ(b.Terminate(), 0) << b.Log();
  EXPECT_TRUE(absl::StrContains(a.Stderr(), "destroyed 0 VM(s)")) << a.Log();
  EXPECT_TRUE(absl::StrContains(b.Stderr(), "destroyed 1 VM(s)")) << b.Log();
  EXPECT_FALSE(Exists(a.port_file()));
  EXPECT_FALSE(Exists(b.port_file()));
  EXPECT_FALSE(Exists(absl::StrCat("/proc/", pid_a)));
  EXPECT_FALSE(Exists(absl::StrCat("/proc/", pid_b)));
  EXPECT_TRUE(ChildrenOf(pid_a).empty());
  EXPECT_TRUE(ChildrenOf(pid_b).empty());

  // The lock went with the process: a new agent takes A's data dir.
  Agent next("agent-a3", dir_a);
  ASSERT_TRUE(next.WaitReady());
  EXPECT_EQ(next.Terminate(), 0) << next.Log();
}

TEST(AgentProcessTest, SigintAlsoShutsDownCleanly) {
  Agent a("agent-int", TmpDir() + "/data-int");
  ASSERT_TRUE(a.WaitReady());
  v1::AgentCreateVmRequest req;
  *req.mutable_spec() = Spec("vm-int");
  v1::Vm vm;
  ASSERT_TRUE(a.stub().CreateVm(Ctx().get(), req, &vm).ok());
  kill(a.pid(), SIGINT);
  EXPECT_EQ(a.WaitExit(), 0) << a.Log();
  EXPECT_TRUE(absl::StrContains(a.Stderr(), "destroyed 1 VM(s)")) << a.Log();
}

}  // namespace
}  // namespace ferry
