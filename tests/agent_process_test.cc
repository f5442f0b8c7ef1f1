// Cross-process test of the agent daemon: starts real //agent:ferry-agent
// binaries (port 0 + --port_file, a data dir each under TEST_TMPDIR), drives
// them over gRPC, and checks start-up refusals and the SIGTERM shutdown
// (exit 0, VMs destroyed, nothing left behind).
#include <signal.h>

#include <memory>
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
#include "tests/agent_process_util.h"

namespace ferry {
namespace {

using agent_test::Agent;
using agent_test::ChildrenOf;
using agent_test::Ctx;
using agent_test::Exists;
using agent_test::TmpDir;

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
  ASSERT_TRUE(a.WaitReady().ok()) << a.Log();
  ASSERT_TRUE(b.WaitReady().ok()) << b.Log();
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
  ASSERT_TRUE(next.WaitReady().ok()) << next.Log();
  EXPECT_EQ(next.Terminate(), 0) << next.Log();
}

TEST(AgentProcessTest, SigintAlsoShutsDownCleanly) {
  Agent a("agent-int", TmpDir() + "/data-int");
  ASSERT_TRUE(a.WaitReady().ok()) << a.Log();
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

namespace ferry {
namespace {

// Where /dev/kvm is missing (or hidden, as here: the agent is pointed at a
// device path that does not exist), VMs still run — on the software MMU
// backend — and the agent says why it chose it. A request for KVM on such a
// host is refused with the reason instead of silently falling back.
TEST(AgentProcessTest, RunsVmsOnTheSoftBackendWhenKvmIsHidden) {
  Agent agent("agent-nokvm", TmpDir() + "/data-nokvm",
              {"--kvm_device=/nonexistent/kvm", "--backend=auto"});
  ASSERT_TRUE(agent.WaitReady().ok()) << agent.Log();
  EXPECT_TRUE(absl::StrContains(agent.Stderr(), "/nonexistent/kvm"))
      << agent.Log();

  v1::AgentCreateVmRequest req;
  *req.mutable_spec() = Spec("vm-soft");
  v1::Vm vm;
  grpc::Status s = agent.stub().CreateVm(Ctx().get(), req, &vm);
  ASSERT_TRUE(s.ok()) << s.error_message() << "\n" << agent.Log();
  EXPECT_EQ(vm.status().backend(), v1::VM_BACKEND_SOFT);
  const v1::Vm v0 = GetVm(agent, "vm-soft");
  absl::SleepFor(absl::Milliseconds(800));
  const v1::Vm v1 = GetVm(agent, "vm-soft");
  EXPECT_EQ(v1.status().phase(), v1::VM_PHASE_RUNNING);
  EXPECT_GT(v1.status().guest().pages_written(),
            v0.status().guest().pages_written());
  EXPECT_EQ(v1.status().selfcheck_errors(), 0u);

  v1::AgentCreateVmRequest kvm_req;
  *kvm_req.mutable_spec() = Spec("vm-kvm");
  kvm_req.mutable_spec()->set_backend(v1::VM_BACKEND_KVM);
  s = agent.stub().CreateVm(Ctx().get(), kvm_req, &vm);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "/nonexistent/kvm"))
      << s.error_message();
  EXPECT_EQ(agent.Terminate(), 0) << agent.Log();
}

}  // namespace
}  // namespace ferry
