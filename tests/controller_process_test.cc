// The controller daemon with real agents: one //controller:ferry-controller
// process and three //agent:ferry-agent processes (--backend=soft, small
// VMs) that register with it (--controller) and heartbeat. Everything goes
// through ControllerService over gRPC, and every test checks the truth on
// the agents themselves: exactly one running copy of each VM, on the host
// the controller's record names.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "controller/api/rest/test_http_client.h"
#include "gtest/gtest.h"
#include "proto/agent.grpc.pb.h"
#include "proto/controller.grpc.pb.h"
#include "tests/agent_process_util.h"

extern char** environ;

namespace ferry {
namespace {

using agent_test::Agent;
using agent_test::AgentConfig;
using agent_test::Ctx;
using agent_test::Exists;
using agent_test::ReadFile;
using agent_test::TmpDir;

constexpr uint64_t kMiB = uint64_t{1} << 20;


// One ferry-controller process on port 0 with its own data dir.
class Controller {
 public:
  // `listen` "127.0.0.1:0" picks a port; a restarted controller takes the
  // old one so the agents' --controller still points at it.
  // `extra` flags are appended (e.g. --test_pause_before_phase). Every
  // controller also serves REST on a free port (rest_address()).
  Controller(const std::string& data_dir, const std::string& tag,
             const std::string& listen = "127.0.0.1:0",
             const std::vector<std::string>& extra = {})
      : data_dir_(data_dir) {
    port_file_ = absl::StrCat(TmpDir(), "/controller-", tag, ".port");
    rest_port_file_ = absl::StrCat(TmpDir(), "/controller-", tag, ".rest-port");
    unlink(rest_port_file_.c_str());
    stdout_ = absl::StrCat(TmpDir(), "/controller-", tag, ".out");
    stderr_ = absl::StrCat(TmpDir(), "/controller-", tag, ".err");
    unlink(port_file_.c_str());
    std::vector<std::string> args = {agent_test::RunfilePath("controller/ferry-controller"),
                                     "--listen=" + listen,
                                     "--port_file=" + port_file_,
                                     "--data_dir=" + data_dir_,
                                     "--heartbeat_interval=250ms",
                                     "--rest_listen=127.0.0.1:0",
                                     "--rest_port_file=" + rest_port_file_};
    args.insert(args.end(), extra.begin(), extra.end());
    absl::StatusOr<pid_t> pid = agent_test::SpawnLogged(args, stdout_, stderr_);
    pid_ = pid.ok() ? *pid : -1;
  }
  ~Controller() {
    if (pid_ > 0) Kill();
  }

  absl::Status WaitReady() {
    const absl::Time end = absl::Now() + absl::Seconds(15);
    while (absl::Now() < end) {
      if (Exists(port_file_)) {
        address_ = std::string(absl::StripSuffix(ReadFile(port_file_), "\n"));
        // Written before the gRPC port file.
        rest_address_ =
            std::string(absl::StripSuffix(ReadFile(rest_port_file_), "\n"));
        stub_ = v1::ControllerService::NewStub(
            grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
        return absl::OkStatus();
      }
      int status;
      if (pid_ <= 0 || waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return absl::InternalError(absl::StrCat("controller exited: ", Log()));
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return absl::DeadlineExceededError(absl::StrCat("controller not ready: ", Log()));
  }
  int Terminate() {
    if (pid_ <= 0) return -1;  // never kill(-1, ...)
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  // Freezes the process (its driver threads stop mid-call) without
  // closing anything: the agents carry on by themselves.
  void Freeze() {
    if (pid_ > 0) kill(pid_, SIGSTOP);
  }
  // True once the process stopped itself (--test_pause_before_phase).
  bool WaitStopped(absl::Duration timeout) {
    const absl::Time end = absl::Now() + timeout;
    while (absl::Now() < end) {
      int status = 0;
      const pid_t r = waitpid(pid_, &status, WNOHANG | WUNTRACED);
      if (r == pid_ && WIFSTOPPED(status)) return true;
      if (r == pid_) {  // exited
        pid_ = -1;
        return false;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    return false;
  }
  void Kill() {
    if (pid_ <= 0) return;  // never kill(-1, ...)
    kill(pid_, SIGKILL);
    int status;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  std::string Log() const { return ReadFile(stdout_) + ReadFile(stderr_); }
  std::string Stdout() const { return ReadFile(stdout_); }
  const std::string& address() const { return address_; }
  const std::string& rest_address() const { return rest_address_; }
  v1::ControllerService::Stub& stub() { return *stub_; }

 private:
  std::string data_dir_, port_file_, rest_port_file_, stdout_, stderr_, address_,
      rest_address_;
  pid_t pid_ = -1;
  std::unique_ptr<v1::ControllerService::Stub> stub_;
};

v1::VmSpec Spec(const std::string& name, uint64_t memory = 64 * kMiB,
                uint64_t rate = 4 * kMiB) {
  v1::VmSpec spec;
  spec.set_name(name);
  spec.set_memory_bytes(memory);
  spec.set_vcpu_count(1);
  spec.set_backend(v1::VM_BACKEND_AUTO);
  spec.mutable_workload()->set_kind(v1::WORKLOAD_KIND_UNIFORM);
  spec.mutable_workload()->set_working_set_bytes(memory / 2);
  spec.mutable_workload()->set_dirty_rate_bytes_per_s(rate);
  return spec;
}

class ControllerProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_dir_ = absl::StrCat(TmpDir(), "/controller-",
                             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    controller_ = std::make_unique<Controller>(data_dir_, "first");
    absl::Status s = controller_->WaitReady();
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(controller_->Stdout(),
              absl::StrCat("ferry-controller listening on ", controller_->address(), "\n"));
    for (const char* n : {"h1", "h2", "h3"}) {
      AgentConfig c;
      // Host names are DNS labels.
      c.name = absl::AsciiStrToLower(absl::StrCat(
          ::testing::UnitTest::GetInstance()->current_test_info()->name(), "-", n));
      c.data_dir = absl::StrCat(TmpDir(), "/agent-", c.name);
      c.extra = {"--backend=soft", "--controller=" + controller_->address(),
                 "--migration_prepare_ttl=10s", "--migration_idle_timeout=10s",
                 "--shutdown_grace=2s"};
      agents_.push_back(std::make_unique<Agent>(c));
      s = agents_.back()->WaitReady();
      ASSERT_TRUE(s.ok()) << s;
      names_.push_back(c.name);
    }
    ASSERT_TRUE(WaitHosts(3, absl::Seconds(10)))
        << controller_->Log() << agents_[0]->Log();
  }

  v1::ControllerService::Stub& api() { return controller_->stub(); }

  bool WaitHosts(int ready, absl::Duration timeout) {
    const absl::Time end = absl::Now() + timeout;
    while (absl::Now() < end) {
      v1::ListHostsResponse r;
      if (api().ListHosts(Ctx().get(), {}, &r).ok()) {
        int n = 0;
        for (const v1::Host& h : r.hosts()) {
          n += h.readiness() == v1::HOST_READINESS_READY ? 1 : 0;
        }
        if (n == ready) return true;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    return false;
  }

  v1::Host GetHost(const std::string& name) {
    v1::GetHostRequest req;
    req.set_name(name);
    v1::Host h;
    EXPECT_TRUE(api().GetHost(Ctx().get(), req, &h).ok());
    return h;
  }

  Agent* AgentNamed(const std::string& name) {
    for (auto& a : agents_) {
      if (a->name() == name) return a.get();
    }
    return nullptr;
  }

  v1::Vm CreateVm(const v1::VmSpec& spec, const std::string& host = "") {
    v1::CreateVmRequest req;
    *req.mutable_spec() = spec;
    req.set_host(host);
    v1::Vm vm;
    grpc::Status s = api().CreateVm(Ctx(absl::Seconds(60)).get(), req, &vm);
    EXPECT_TRUE(s.ok()) << s.error_message() << "\n" << controller_->Log();
    return vm;
  }

  v1::Vm GetVm(const std::string& name) {
    v1::GetVmRequest req;
    req.set_name(name);
    v1::Vm vm;
    EXPECT_TRUE(api().GetVm(Ctx().get(), req, &vm).ok());
    return vm;
  }

  // Watches until terminal; the last record.
  v1::Migration Watch(const std::string& id, absl::Duration timeout = absl::Seconds(90)) {
    v1::WatchMigrationRequest req;
    req.set_id(id);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    auto reader = api().WatchMigration(&ctx, req);
    v1::Migration m, last;
    while (reader->Read(&m)) last = m;
    grpc::Status s = reader->Finish();
    EXPECT_TRUE(s.ok()) << s.error_message();
    return last;
  }

  // Hosts whose agent holds a copy of `vm` (asks every live agent): any
  // copy (running, paused, armed), or only RUNNING ones.
  std::vector<std::string> Copies(const std::string& vm, bool running_only) {
    std::vector<std::string> out;
    for (auto& a : agents_) {
      if (a->Poll()) continue;
      v1::AgentGetVmRequest req;
      req.set_name(vm);
      v1::Vm v;
      if (a->stub().GetVm(Ctx().get(), req, &v).ok() &&
          (!running_only || v.status().phase() == v1::VM_PHASE_RUNNING)) {
        out.push_back(a->name());
      }
    }
    return out;
  }
  std::vector<std::string> RunningCopies(const std::string& vm) { return Copies(vm, true); }
  std::vector<std::string> AllCopies(const std::string& vm) { return Copies(vm, false); }

  void InterruptMidMigrationAndRestart(bool sigkill);
  void KillAtPhaseAndRestart(const std::string& phase);

  std::string data_dir_;
  std::unique_ptr<Controller> controller_;
  std::vector<std::unique_ptr<Agent>> agents_;
  std::vector<std::string> names_;
};

TEST_F(ControllerProcessTest, RegisterCreateMigrateWatchCordon) {
  v1::Host h = GetHost(names_[0]);
  EXPECT_EQ(h.readiness(), v1::HOST_READINESS_READY);
  EXPECT_FALSE(h.info().agent_address().empty());
  EXPECT_FALSE(h.info().instance_id().empty());

  v1::Vm vm = CreateVm(Spec("web-1"));
  ASSERT_EQ(vm.status().phase(), v1::VM_PHASE_RUNNING) << vm.ShortDebugString();
  const std::string source = vm.status().host();
  EXPECT_EQ(RunningCopies("web-1"), std::vector<std::string>{source});

  // Bad input: right codes.
  v1::CreateMigrationRequest bad;
  bad.set_vm_name("no-such-vm");
  v1::Migration m;
  EXPECT_EQ(api().CreateMigration(Ctx().get(), bad, &m).error_code(),
            grpc::StatusCode::NOT_FOUND);
  bad.set_vm_name("web-1");
  bad.set_target_host(source);
  EXPECT_EQ(api().CreateMigration(Ctx().get(), bad, &m).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  bad.clear_target_host();
  bad.mutable_policy()->set_streams(99);
  EXPECT_EQ(api().CreateMigration(Ctx().get(), bad, &m).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // Cordon a target: refused there.
  std::string target = source == names_[1] ? names_[2] : names_[1];
  std::string cordoned = source == names_[0] ? names_[2] : names_[0];
  if (cordoned == target) cordoned = names_[1];
  v1::CordonHostRequest creq;
  creq.set_name(cordoned);
  creq.set_reason("maintenance");
  v1::Host ch;
  ASSERT_TRUE(api().CordonHost(Ctx().get(), creq, &ch).ok());
  EXPECT_TRUE(ch.cordoned());
  v1::CreateMigrationRequest to_cordoned;
  to_cordoned.set_vm_name("web-1");
  to_cordoned.set_target_host(cordoned);
  EXPECT_EQ(api().CreateMigration(Ctx().get(), to_cordoned, &m).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  // The scheduler's choice: never the source, never the cordoned host.
  v1::CreateMigrationRequest req;
  req.set_vm_name("web-1");
  req.set_request_id("move-web-1");
  ASSERT_TRUE(api().CreateMigration(Ctx().get(), req, &m).ok());
  v1::Migration again;
  ASSERT_TRUE(api().CreateMigration(Ctx().get(), req, &again).ok());
  EXPECT_EQ(again.id(), m.id()) << "request_id makes the retry return the first";
  v1::Migration twice;
  v1::CreateMigrationRequest second;
  second.set_vm_name("web-1");
  EXPECT_EQ(api().CreateMigration(Ctx().get(), second, &twice).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  v1::Migration done = Watch(m.id());
  ASSERT_EQ(done.phase(), v1::MIGRATION_PHASE_SUCCEEDED)
      << done.ShortDebugString() << "\n" << controller_->Log();
  EXPECT_EQ(done.target_host(), target);
  EXPECT_EQ(done.result().vm_host(), target);
  v1::GetMigrationRequest greq;
  greq.set_id(m.id());
  v1::Migration full;
  ASSERT_TRUE(api().GetMigration(Ctx().get(), greq, &full).ok());
  EXPECT_GT(full.progress_samples_size(), 0);
  std::vector<v1::MigrationPhase> phases;
  for (const auto& t : full.transitions()) phases.push_back(t.phase());
  EXPECT_EQ(phases.front(), v1::MIGRATION_PHASE_PENDING);
  EXPECT_EQ(phases.back(), v1::MIGRATION_PHASE_SUCCEEDED);
  EXPECT_NE(std::find(phases.begin(), phases.end(), v1::MIGRATION_PHASE_PREPARING),
            phases.end());
  EXPECT_NE(std::find(phases.begin(), phases.end(), v1::MIGRATION_PHASE_FINISHING),
            phases.end());

  EXPECT_EQ(GetVm("web-1").status().host(), target);
  EXPECT_TRUE(GetVm("web-1").status().migration_id().empty());
  EXPECT_EQ(RunningCopies("web-1"), std::vector<std::string>{target});

  v1::ListEventsRequest ereq;
  ereq.set_object_kind(v1::OBJECT_KIND_MIGRATION);
  ereq.set_object_name(m.id());
  v1::ListEventsResponse events;
  ASSERT_TRUE(api().ListEvents(Ctx().get(), ereq, &events).ok());
  EXPECT_GE(events.events_size(), 4);

  // Delete: gone from the agent and the store.
  v1::DeleteVmRequest dreq;
  dreq.set_name("web-1");
  v1::DeleteVmResponse dresp;
  grpc::Status ds = api().DeleteVm(Ctx().get(), dreq, &dresp);
  ASSERT_TRUE(ds.ok()) << ds.error_code() << " " << ds.error_message();
  EXPECT_TRUE(RunningCopies("web-1").empty());

  EXPECT_EQ(controller_->Terminate(), 0) << controller_->Log();
}

TEST_F(ControllerProcessTest, DrainMovesEveryVmOff) {
  const std::string drained = names_[0];
  CreateVm(Spec("d-1"), drained);
  CreateVm(Spec("d-2"), drained);
  v1::DrainHostRequest bad;
  bad.set_name("no-such-host");
  {
    grpc::ClientContext ctx;
    auto reader = api().DrainHost(&ctx, bad);
    v1::DrainHostUpdate u;
    EXPECT_FALSE(reader->Read(&u));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  }
  v1::DrainHostRequest req;
  req.set_name(drained);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  auto reader = api().DrainHost(&ctx, req);
  std::map<std::string, v1::DrainOutcome> outcome;
  v1::DrainHostUpdate u;
  uint32_t last_remaining = 99;
  while (reader->Read(&u)) {
    outcome[u.vm_name()] = u.outcome();
    last_remaining = u.vms_remaining();
  }
  ASSERT_TRUE(reader->Finish().ok()) << controller_->Log();
  EXPECT_EQ(outcome["d-1"], v1::DRAIN_OUTCOME_MIGRATED);
  EXPECT_EQ(outcome["d-2"], v1::DRAIN_OUTCOME_MIGRATED);
  EXPECT_EQ(last_remaining, 0u);
  EXPECT_TRUE(GetHost(drained).cordoned());
  for (const char* vm : {"d-1", "d-2"}) {
    const std::vector<std::string> copies = RunningCopies(vm);
    ASSERT_EQ(copies.size(), 1u) << vm;
    EXPECT_NE(copies[0], drained);
    EXPECT_EQ(GetVm(vm).status().host(), copies[0]);
  }
  v1::ListVmsRequest lreq;
  lreq.set_host(drained);
  v1::ListVmsResponse left;
  ASSERT_TRUE(api().ListVms(Ctx().get(), lreq, &left).ok());
  EXPECT_EQ(left.vms_size(), 0);
}

// Stops the controller mid-transfer (SIGKILL, or SIGTERM for a clean
// shutdown that must leave the migration as persisted), restarts it on the
// same data dir and port, and checks that exactly one copy runs where the
// record says.
void ControllerProcessTest::InterruptMidMigrationAndRestart(bool sigkill) {
  // The guest rewrites its 64 MiB working set at 64 MiB/s: far more than
  // the capped data plane below drains, so the transfer lasts seconds.
  v1::Vm vm = CreateVm(Spec("busy", 128 * kMiB, 64 * kMiB));
  ASSERT_EQ(vm.status().phase(), v1::VM_PHASE_RUNNING);
  absl::SleepFor(absl::Seconds(1));  // let it dirty its working set
  v1::CreateMigrationRequest req;
  req.set_vm_name("busy");
  // A slow data plane: the transfer takes several seconds.
  req.mutable_policy()->set_max_bandwidth_bytes_per_s(8 * kMiB);
  req.mutable_policy()->set_streams(1);
  // The cap is on wire bytes and guest pages compress ~20x.
  req.mutable_policy()->set_compression(v1::COMPRESSION_NONE);
  v1::Migration m;
  ASSERT_TRUE(api().CreateMigration(Ctx().get(), req, &m).ok());
  // Wait for TRANSFERRING (recorded from the source's samples).
  const absl::Time end = absl::Now() + absl::Seconds(20);
  v1::Migration cur;
  while (absl::Now() < end) {
    v1::GetMigrationRequest g;
    g.set_id(m.id());
    ASSERT_TRUE(api().GetMigration(Ctx().get(), g, &cur).ok());
    if (cur.phase() == v1::MIGRATION_PHASE_TRANSFERRING) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_EQ(cur.phase(), v1::MIGRATION_PHASE_TRANSFERRING) << cur.ShortDebugString();
  absl::SleepFor(absl::Milliseconds(500));
  const std::string address = controller_->address();
  if (sigkill) {
    controller_->Kill();
  } else {
    EXPECT_EQ(controller_->Terminate(), 0) << controller_->Log();
  }

  // Same data dir and port, new process: it reconciles with both agents.
  controller_ = std::make_unique<Controller>(data_dir_, "second", address);
  absl::Status s = controller_->WaitReady();
  ASSERT_TRUE(s.ok()) << s;
  v1::Migration done = Watch(m.id(), absl::Seconds(120));
  ASSERT_TRUE(done.phase() == v1::MIGRATION_PHASE_SUCCEEDED ||
              done.phase() == v1::MIGRATION_PHASE_FAILED)
      << done.ShortDebugString() << "\n" << controller_->Log();
  // Exactly one copy runs, where the record says.
  absl::SleepFor(absl::Milliseconds(500));
  const std::vector<std::string> copies = RunningCopies("busy");
  ASSERT_EQ(copies.size(), 1u) << done.ShortDebugString();
  EXPECT_EQ(copies[0], done.result().vm_host());
  EXPECT_EQ(GetVm("busy").status().host(), copies[0]);
  EXPECT_TRUE(GetVm("busy").status().migration_id().empty());
  std::cerr << "after kill -9 and restart: " << v1::MigrationPhase_Name(done.phase())
            << " — " << done.result().message() << "\n";
  {
    // The story, for the log: what the restarted controller found and did.
    v1::ListEventsRequest ereq;
    ereq.set_object_name(m.id());
    v1::ListEventsResponse events;
    ASSERT_TRUE(api().ListEvents(Ctx().get(), ereq, &events).ok());
    bool reconciled = false;
    for (const v1::Event& e : events.events()) {
      std::cerr << "  event " << e.reason() << ": " << e.message() << "\n";
      reconciled |= e.reason() == "MigrationReconciled";
    }
    EXPECT_TRUE(reconciled) << "the restarted controller must reconcile the migration";
  }
  // The VM can migrate again under the new controller, once the agents'
  // heartbeats reached it (until then the hosts are rightly UNKNOWN).
  ASSERT_TRUE(WaitHosts(3, absl::Seconds(15))) << controller_->Log();
  v1::CreateMigrationRequest again;
  again.set_vm_name("busy");
  v1::Migration m2;
  grpc::Status cs = api().CreateMigration(Ctx().get(), again, &m2);
  ASSERT_TRUE(cs.ok()) << cs.error_message() << "\n" << GetVm("busy").ShortDebugString();
  EXPECT_EQ(Watch(m2.id()).phase(), v1::MIGRATION_PHASE_SUCCEEDED) << controller_->Log();
  EXPECT_EQ(RunningCopies("busy").size(), 1u);
}

TEST_F(ControllerProcessTest, KillNineMidMigrationThenRestartLeavesOneCopy) {
  InterruptMidMigrationAndRestart(/*sigkill=*/true);
}

TEST_F(ControllerProcessTest, SigtermMidMigrationThenRestartLeavesOneCopy) {
  InterruptMidMigrationAndRestart(/*sigkill=*/false);
}

// The controller dies after deciding to migrate; while it is gone the
// source converges, switches over and the destination ARMs (the handoff
// waits for the controller). The restarted controller must finish on the
// destination, not roll back.
TEST_F(ControllerProcessTest, KillNineWhileArmedThenRestartFinishesOnDestination) {
  v1::Vm vm = CreateVm(Spec("armed", 128 * kMiB, 4 * kMiB));
  ASSERT_EQ(vm.status().phase(), v1::VM_PHASE_RUNNING);
  const std::string source = vm.status().host();
  absl::SleepFor(absl::Milliseconds(1500));  // some non-zero pages to send
  v1::CreateMigrationRequest req;
  req.set_vm_name("armed");
  req.mutable_policy()->set_max_bandwidth_bytes_per_s(8 * kMiB);
  req.mutable_policy()->set_compression(v1::COMPRESSION_NONE);
  req.mutable_policy()->set_streams(1);
  v1::Migration m;
  ASSERT_TRUE(api().CreateMigration(Ctx().get(), req, &m).ok());
  v1::Migration cur;
  const absl::Time end = absl::Now() + absl::Seconds(20);
  while (absl::Now() < end) {
    v1::GetMigrationRequest g;
    g.set_id(m.id());
    ASSERT_TRUE(api().GetMigration(Ctx().get(), g, &cur).ok());
    if (cur.phase() == v1::MIGRATION_PHASE_TRANSFERRING) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(cur.phase(), v1::MIGRATION_PHASE_TRANSFERRING) << cur.ShortDebugString();
  const std::string address = controller_->address();
  controller_->Freeze();
  controller_->Kill();

  // Wait for the source to report FINISHING: armed and waiting for us.
  Agent* src = AgentNamed(source);
  ASSERT_NE(src, nullptr);
  v1::AgentMigration am;
  const absl::Time arm_end = absl::Now() + absl::Seconds(20);
  while (absl::Now() < arm_end) {
    v1::AgentGetMigrationRequest g;
    g.set_migration_id(m.id());
    ASSERT_TRUE(src->stub().GetMigration(Ctx().get(), g, &am).ok());
    if (am.phase() == v1::MIGRATION_PHASE_FINISHING ||
        am.phase() >= v1::MIGRATION_PHASE_SUCCEEDED) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(am.phase(), v1::MIGRATION_PHASE_FINISHING) << am.ShortDebugString();
  EXPECT_EQ(RunningCopies("armed").size(), 0u) << "paused on the source, armed on the target";

  controller_ = std::make_unique<Controller>(data_dir_, "second", address);
  absl::Status s = controller_->WaitReady();
  ASSERT_TRUE(s.ok()) << s;
  v1::Migration done = Watch(m.id());
  ASSERT_EQ(done.phase(), v1::MIGRATION_PHASE_SUCCEEDED)
      << done.ShortDebugString() << "\n" << controller_->Log();
  const std::vector<std::string> copies = RunningCopies("armed");
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_NE(copies[0], source);
  EXPECT_EQ(copies[0], done.target_host());
  EXPECT_EQ(GetVm("armed").status().host(), copies[0]);
}

TEST_F(ControllerProcessTest, DestinationKilledMidMigrationFailsCleanly) {
  v1::Vm vm = CreateVm(Spec("victim", 128 * kMiB, 64 * kMiB));
  const std::string source = vm.status().host();
  absl::SleepFor(absl::Seconds(1));
  v1::CreateMigrationRequest req;
  req.set_vm_name("victim");
  req.mutable_policy()->set_max_bandwidth_bytes_per_s(8 * kMiB);
  req.mutable_policy()->set_compression(v1::COMPRESSION_NONE);
  v1::Migration m;
  ASSERT_TRUE(api().CreateMigration(Ctx().get(), req, &m).ok());
  v1::Migration cur;
  const absl::Time end = absl::Now() + absl::Seconds(20);
  while (absl::Now() < end) {
    v1::GetMigrationRequest g;
    g.set_id(m.id());
    ASSERT_TRUE(api().GetMigration(Ctx().get(), g, &cur).ok());
    if (cur.phase() == v1::MIGRATION_PHASE_TRANSFERRING) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(cur.phase(), v1::MIGRATION_PHASE_TRANSFERRING);
  AgentNamed(cur.target_host())->Kill();
  v1::Migration done = Watch(m.id());
  EXPECT_EQ(done.phase(), v1::MIGRATION_PHASE_FAILED) << done.ShortDebugString();
  EXPECT_FALSE(done.result().message().empty());
  EXPECT_EQ(done.result().vm_host(), source);
  EXPECT_EQ(RunningCopies("victim"), std::vector<std::string>{source});
  EXPECT_EQ(GetVm("victim").status().host(), source);
  const absl::Time unknown_end = absl::Now() + absl::Seconds(10);
  while (absl::Now() < unknown_end &&
         GetHost(cur.target_host()).readiness() != v1::HOST_READINESS_UNKNOWN) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(GetHost(cur.target_host()).readiness(), v1::HOST_READINESS_UNKNOWN);
  EXPECT_EQ(GetHost(source).readiness(), v1::HOST_READINESS_READY);
}

TEST_F(ControllerProcessTest, KilledAgentGoesUnknownAndGetsNothing) {
  Agent* dead = agents_[2].get();
  const std::string dead_name = dead->name();
  dead->Kill();
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (absl::Now() < end &&
         GetHost(dead_name).readiness() != v1::HOST_READINESS_UNKNOWN) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_EQ(GetHost(dead_name).readiness(), v1::HOST_READINESS_UNKNOWN);
  v1::ListEventsRequest ereq;
  ereq.set_object_name(dead_name);
  v1::ListEventsResponse events;
  ASSERT_TRUE(api().ListEvents(Ctx().get(), ereq, &events).ok());
  bool unknown_event = false;
  for (const v1::Event& e : events.events()) unknown_event |= e.reason() == "HostUnknown";
  EXPECT_TRUE(unknown_event);

  // Pinned there: refused. Unpinned: lands elsewhere.
  v1::CreateVmRequest pinned;
  *pinned.mutable_spec() = Spec("nope");
  pinned.set_host(dead_name);
  v1::Vm vm;
  EXPECT_EQ(api().CreateVm(Ctx().get(), pinned, &vm).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  for (int i = 0; i < 3; ++i) {
    v1::Vm v = CreateVm(Spec(absl::StrCat("spread-", i)));
    EXPECT_NE(v.status().host(), dead_name);
  }
  v1::CreateMigrationRequest to_dead;
  to_dead.set_vm_name("spread-0");
  to_dead.set_target_host(dead_name);
  v1::Migration m;
  EXPECT_EQ(api().CreateMigration(Ctx().get(), to_dead, &m).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

// The controller is killed (kill -9) at an exact phase of a migration: the
// restarted-with---test_pause_before_phase daemon stops itself right after
// committing `phase` and before acting on it, the test kills it there, and
// a fresh controller on the same data dir must bring the migration to an
// end with exactly one copy of the VM, where the store says.
void ControllerProcessTest::KillAtPhaseAndRestart(const std::string& phase) {
  const std::string address = controller_->address();
  ASSERT_EQ(controller_->Terminate(), 0) << controller_->Log();
  controller_ = std::make_unique<Controller>(
      data_dir_, "paused", address,
      std::vector<std::string>{"--test_pause_before_phase=" + phase});
  absl::Status s = controller_->WaitReady();
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(WaitHosts(3, absl::Seconds(10))) << controller_->Log();

  v1::Vm vm = CreateVm(Spec("phased"));
  ASSERT_EQ(vm.status().phase(), v1::VM_PHASE_RUNNING) << vm.ShortDebugString();
  const std::string source = vm.status().host();
  v1::CreateMigrationRequest req;
  req.set_vm_name("phased");
  v1::Migration m;
  // At PENDING the process may stop before it answers: the id is looked up
  // after the restart instead.
  (void)api().CreateMigration(Ctx(absl::Seconds(3)).get(), req, &m);
  ASSERT_TRUE(controller_->WaitStopped(absl::Seconds(30)))
      << "the controller never paused before " << phase << "\n" << controller_->Log();
  controller_->Kill();

  controller_ = std::make_unique<Controller>(data_dir_, "restarted", address);
  s = controller_->WaitReady();
  ASSERT_TRUE(s.ok()) << s;
  v1::ListMigrationsRequest lreq;
  lreq.set_vm_name("phased");
  v1::ListMigrationsResponse list;
  ASSERT_TRUE(api().ListMigrations(Ctx().get(), lreq, &list).ok());
  ASSERT_EQ(list.migrations_size(), 1);
  const v1::Migration& before = list.migrations(0);
  // The record is where the pause said: the phase was committed first.
  EXPECT_EQ(v1::MigrationPhase_Name(before.phase()), "MIGRATION_PHASE_" + phase)
      << before.ShortDebugString();

  v1::Migration done = Watch(before.id(), absl::Seconds(120));
  ASSERT_TRUE(done.phase() == v1::MIGRATION_PHASE_SUCCEEDED ||
              done.phase() == v1::MIGRATION_PHASE_FAILED)
      << done.ShortDebugString() << "\n" << controller_->Log();
  // A commit decision made before the kill must be honoured.
  if (phase == "CONFIRMING") {
    EXPECT_EQ(done.phase(), v1::MIGRATION_PHASE_SUCCEEDED);
  }
  // Exactly one copy of the VM on all agents (a rolled-back destination or
  // a confirmed source drops its copy shortly after), running where the
  // store says.
  const absl::Time end = absl::Now() + absl::Seconds(15);
  while (absl::Now() < end && AllCopies("phased").size() != 1) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(AllCopies("phased").size(), 1u) << done.ShortDebugString();
  const std::vector<std::string> copies = RunningCopies("phased");
  ASSERT_EQ(copies.size(), 1u) << done.ShortDebugString();
  EXPECT_EQ(copies[0], done.result().vm_host());
  const v1::Vm after = GetVm("phased");
  EXPECT_EQ(after.status().host(), copies[0]);
  EXPECT_TRUE(after.status().migration_id().empty());
  if (done.phase() == v1::MIGRATION_PHASE_FAILED) {
    EXPECT_EQ(copies[0], source);
  }
  std::cerr << "killed at " << phase << ", after restart: "
            << v1::MigrationPhase_Name(done.phase()) << " on " << copies[0] << " — "
            << done.result().message() << "\n";
}

TEST_F(ControllerProcessTest, KillNineAtPendingThenRestart) {
  KillAtPhaseAndRestart("PENDING");
}
TEST_F(ControllerProcessTest, KillNineAtPreparingThenRestart) {
  KillAtPhaseAndRestart("PREPARING");
}
TEST_F(ControllerProcessTest, KillNineAtFinishingThenRestart) {
  KillAtPhaseAndRestart("FINISHING");
}
TEST_F(ControllerProcessTest, KillNineAtConfirmingThenRestart) {
  KillAtPhaseAndRestart("CONFIRMING");
}

// Value of "key":"..." (or a bare scalar) in a flat reading of a JSON body.
std::string JsonString(const std::string& body, const std::string& key) {
  const std::string needle = absl::StrCat("\"", key, "\":");
  size_t at = body.find(needle);
  if (at == std::string::npos) return "";
  at += needle.size();
  if (at < body.size() && body[at] == '"') {
    const size_t end = body.find('"', at + 1);
    return end == std::string::npos ? "" : body.substr(at + 1, end - at - 1);
  }
  const size_t end = body.find_first_of(",}", at);
  return body.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

// The REST gateway of the real daemon: migrate with POST /v1/migrations and
// follow it over :watch (NDJSON) and GET; bad input gets the documented
// HTTP codes and JSON errors and changes nothing.
TEST_F(ControllerProcessTest, RestMigrateAndBadInput) {
  using rest::testing::TestHttpClient;
  using rest::testing::TestResponse;
  v1::Vm vm = CreateVm(Spec("rest-1"));
  ASSERT_EQ(vm.status().phase(), v1::VM_PHASE_RUNNING);
  const std::string source = vm.status().host();
  auto http = TestHttpClient::Connect(controller_->rest_address());
  ASSERT_TRUE(http.ok()) << http.status();
  auto call = [&](const std::string& method, const std::string& target,
                  const std::string& body) {
    absl::StatusOr<TestResponse> r = (*http)->Call(method, target, body);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : TestResponse{};
  };

  // Bad input first: nothing may be created by it.
  TestResponse r = call("POST", "/v1/migrations", "{\"vmName\": \"rest-1\",");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(JsonString(r.body, "status"), "INVALID_ARGUMENT") << r.body;
  EXPECT_NE(r.Header("content-type").find("application/json"), std::string::npos);
  r = call("POST", "/v1/migrations", "{\"vmName\":\"no-such-vm\"}");
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_EQ(JsonString(r.body, "status"), "NOT_FOUND") << r.body;
  r = call("POST", "/v1/migrations", "{\"vmName\":\"rest-1\",\"noSuchField\":1}");
  EXPECT_EQ(r.status, 400) << r.body;

  // A slow data plane so the migration is still running for the refusal.
  r = call("POST", "/v1/migrations",
           "{\"vmName\":\"rest-1\",\"policy\":{\"maxBandwidthBytesPerS\":\"8388608\","
           "\"compression\":\"COMPRESSION_NONE\"}}");
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string id = JsonString(r.body, "id");
  ASSERT_FALSE(id.empty()) << r.body;
  // Already migrating: FAILED_PRECONDITION, which REST maps to 400.
  r = call("POST", "/v1/migrations", "{\"vmName\":\"rest-1\"}");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(JsonString(r.body, "status"), "FAILED_PRECONDITION") << r.body;
  EXPECT_NE(JsonString(r.body, "message").find("rest-1"), std::string::npos) << r.body;

  // Follow it to the end on the NDJSON stream (a second connection).
  auto watch = TestHttpClient::Connect(controller_->rest_address());
  ASSERT_TRUE(watch.ok()) << watch.status();
  ASSERT_TRUE((*watch)->Send("GET", absl::StrCat("/v1/migrations/", id, ":watch")).ok());
  absl::StatusOr<TestResponse> head = (*watch)->ReadHead(absl::Seconds(10));
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->status, 200);
  EXPECT_NE(head->Header("content-type").find("application/x-ndjson"), std::string::npos);
  std::string last_phase;
  int lines = 0;
  for (;;) {
    absl::StatusOr<std::string> chunk = (*watch)->ReadChunk(absl::Seconds(90));
    ASSERT_TRUE(chunk.ok()) << chunk.status();
    if (chunk->empty()) break;
    ++lines;
    EXPECT_EQ(chunk->back(), '\n');
    last_phase = JsonString(*chunk, "phase");
  }
  EXPECT_GT(lines, 1);
  EXPECT_EQ(last_phase, "MIGRATION_PHASE_SUCCEEDED");

  r = call("GET", absl::StrCat("/v1/migrations/", id), "");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(JsonString(r.body, "phase"), "MIGRATION_PHASE_SUCCEEDED") << r.body;
  const std::string target = JsonString(r.body, "targetHost");
  EXPECT_NE(target, source);
  r = call("GET", "/v1/migrations/no-such-migration", "");
  EXPECT_EQ(r.status, 404) << r.body;

  // Nothing else changed: one migration, one copy, where the store says.
  v1::ListMigrationsRequest lreq;
  lreq.set_vm_name("rest-1");
  v1::ListMigrationsResponse list;
  ASSERT_TRUE(api().ListMigrations(Ctx().get(), lreq, &list).ok());
  EXPECT_EQ(list.migrations_size(), 1);
  EXPECT_EQ(RunningCopies("rest-1"), std::vector<std::string>{target});
  EXPECT_EQ(GetVm("rest-1").status().host(), target);
  v1::ListVmsResponse vms;
  ASSERT_TRUE(api().ListVms(Ctx().get(), {}, &vms).ok());
  EXPECT_EQ(vms.vms_size(), 1);
}

// An agent whose data dir stops taking writes (here: moved away under it)
// reports unhealthy in its heartbeats: the controller shows the host
// NOT_READY with the reason and places nothing there; once the dir is back
// the host is READY again.
TEST_F(ControllerProcessTest, UnhealthyAgentGoesNotReadyAndGetsNothing) {
  const std::string sick = names_[2];
  const std::string dir = absl::StrCat(TmpDir(), "/agent-", sick);
  const std::string moved = dir + ".moved";
  ASSERT_EQ(rename(dir.c_str(), moved.c_str()), 0) << std::strerror(errno);
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (absl::Now() < end &&
         GetHost(sick).readiness() != v1::HOST_READINESS_NOT_READY) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  v1::Host h = GetHost(sick);
  EXPECT_EQ(h.readiness(), v1::HOST_READINESS_NOT_READY) << h.ShortDebugString();
  v1::ListEventsRequest ereq;
  ereq.set_object_name(sick);
  v1::ListEventsResponse events;
  ASSERT_TRUE(api().ListEvents(Ctx().get(), ereq, &events).ok());
  bool reason_shown = false;
  for (const v1::Event& e : events.events()) {
    reason_shown |= e.reason() == "HostNotReady" &&
                    e.message().find("not writable") != std::string::npos;
  }
  EXPECT_TRUE(reason_shown) << "the agent's reason reaches the controller's events";

  v1::CreateVmRequest pinned;
  *pinned.mutable_spec() = Spec("nope");
  pinned.set_host(sick);
  v1::Vm vm;
  EXPECT_EQ(api().CreateVm(Ctx().get(), pinned, &vm).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  for (int i = 0; i < 4; ++i) {
    v1::Vm v = CreateVm(Spec(absl::StrCat("healthy-", i)));
    EXPECT_NE(v.status().host(), sick);
  }
  EXPECT_TRUE(AllCopies("nope").empty());
  v1::CreateMigrationRequest to_sick;
  to_sick.set_vm_name("healthy-0");
  to_sick.set_target_host(sick);
  v1::Migration m;
  EXPECT_EQ(api().CreateMigration(Ctx().get(), to_sick, &m).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  ASSERT_EQ(rename(moved.c_str(), dir.c_str()), 0) << std::strerror(errno);
  EXPECT_TRUE(WaitHosts(3, absl::Seconds(10))) << GetHost(sick).ShortDebugString();
}

int RunController(std::vector<std::string> args) {
  args.insert(args.begin(), agent_test::RunfilePath("controller/ferry-controller"));
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  if (posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ) != 0) return -1;
  posix_spawn_file_actions_destroy(&actions);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(ControllerFlagsTest, BadFlagsExitTwo) {
  const std::string dir = absl::StrCat(TmpDir(), "/flags");
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{
           {"--no_such_flag=1"},
           {"--heartbeat_interval=soon"},
           {"--heartbeat_interval=0s"},
           {"--listen=nonsense"},
           {"--max_parallel_migrations=-3"},
           {"--test_pause_before_phase=TRANSFERRING"},
           {"--test_pause_before_phase=soon"},
           {"--data_dir="}}) {
    std::vector<std::string> a = args;
    if (args[0].rfind("--data_dir", 0) != 0) a.push_back("--data_dir=" + dir);
    EXPECT_EQ(RunController(a), 2) << args[0];
  }
}

TEST_F(ControllerProcessTest, SecondControllerOnTheSameDataDirCannotStart) {
  Controller second(data_dir_, "clash");
  EXPECT_FALSE(second.WaitReady().ok());
  EXPECT_NE(second.Log().find("another ferry-controller"), std::string::npos)
      << second.Log();
}

}  // namespace
}  // namespace ferry
