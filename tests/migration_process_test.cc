// Cross-process live migration: two real //agent:ferry-agent processes
// (port 0 + --port_file, a data dir each under TEST_TMPDIR), driven by the
// controller's MigrationDriver (controller/orchestrator) over AgentService,
// with the pages going agent to agent over MigrationService.
//
// Every test ends with exactly one running copy of each VM: the guest keeps
// counting (counters continue from where they were), its self-check finds
// nothing lost, and the other agent holds neither the VM nor a shell.
#include <signal.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "controller/orchestrator/migration_driver.h"
#include "gtest/gtest.h"
#include "proto/agent.grpc.pb.h"
#include "tests/agent_process_util.h"

namespace ferry {
namespace {

using agent_test::Agent;
using agent_test::AgentConfig;
using agent_test::Ctx;
using agent_test::TmpDir;

constexpr uint64_t kMiB = uint64_t{1} << 20;

// Short receiver timeouts so that a dead source is noticed quickly.
std::unique_ptr<Agent> StartAgent(const std::string& name) {
  AgentConfig c;
  c.name = name;
  c.data_dir = absl::StrCat(TmpDir(), "/data-", name);
  c.extra = {"--migration_prepare_ttl=4s", "--migration_idle_timeout=2s",
             "--shutdown_grace=2s"};
  auto agent = std::make_unique<Agent>(c);
  absl::Status s = agent->WaitReady();
  EXPECT_TRUE(s.ok()) << s;
  return s.ok() ? std::move(agent) : nullptr;
}

v1::VmSpec Spec(const std::string& name, v1::WorkloadKind kind,
                uint64_t memory = 64 * kMiB, uint64_t ws = 32 * kMiB,
                uint64_t rate = 8 * kMiB) {
  v1::VmSpec spec;
  spec.set_name(name);
  spec.set_memory_bytes(memory);
  spec.set_vcpu_count(1);
  spec.set_backend(v1::VM_BACKEND_AUTO);
  spec.mutable_workload()->set_kind(kind);
  spec.mutable_workload()->set_working_set_bytes(ws);
  spec.mutable_workload()->set_dirty_rate_bytes_per_s(
      kind == v1::WORKLOAD_KIND_IDLE ? 0 : rate);
  spec.mutable_workload()->set_hot_fraction(0.1);
  spec.mutable_workload()->set_hot_probability(0.9);
  return spec;
}

v1::MigrationPolicy Policy(uint32_t streams = 2) {
  v1::MigrationPolicy p;
  p.mutable_max_downtime()->set_nanos(300 * 1000 * 1000);
  p.set_streams(streams);
  p.set_max_rounds(30);
  p.set_auto_converge(true);
  p.mutable_progress_timeout()->set_seconds(10);
  p.set_verify_memory(v1::MEMORY_VERIFICATION_SAMPLED);
  p.set_verify_sample_pages(4096);
  return p;
}

// A slow data plane so that a test can act mid-transfer.
// Slow enough that a test can act mid-transfer. The cap counts wire bytes,
// and the guest's stamped pages compress ~40x, so compression is off: with
// it on, a KVM guest's working set crossed in ~0.2 s and a "mid-transfer"
// cancel arrived after the handoff (and rightly did nothing).
v1::MigrationPolicy SlowPolicy() {
  v1::MigrationPolicy p = Policy(2);
  p.set_max_bandwidth_bytes_per_s(8 * kMiB);
  p.set_compression(v1::COMPRESSION_NONE);
  p.set_xor_delta(false);
  return p;
}

grpc::Status Create(Agent& agent, const v1::VmSpec& spec) {
  v1::AgentCreateVmRequest req;
  *req.mutable_spec() = spec;
  v1::Vm vm;
  return agent.stub().CreateVm(Ctx().get(), req, &vm);
}

grpc::Status Get(Agent& agent, const std::string& name, v1::Vm* vm) {
  v1::AgentGetVmRequest req;
  req.set_name(name);
  return agent.stub().GetVm(Ctx().get(), req, vm);
}

int VmCount(Agent& agent) {
  v1::AgentListVmsResponse list;
  grpc::Status s = agent.stub().ListVms(Ctx().get(), {}, &list);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return list.vms_size();
}

// Waits until the guest has written `pages` more pages (or 5s).
void WaitWrites(Agent& agent, const std::string& name, uint64_t pages) {
  v1::Vm vm;
  ASSERT_TRUE(Get(agent, name, &vm).ok());
  const uint64_t start = vm.status().guest().pages_written();
  const absl::Time end = absl::Now() + absl::Seconds(5);
  while (absl::Now() < end) {
    ASSERT_TRUE(Get(agent, name, &vm).ok());
    if (vm.status().guest().pages_written() >= start + pages) return;
    absl::SleepFor(absl::Milliseconds(20));
  }
}

// The VM runs on `on` (and only there), keeps counting from at least
// `before`, and its guest found no lost page.
void ExpectRunningOnlyOn(Agent& on, Agent* other, const std::string& name,
                         const v1::GuestCounters& before, bool writes) {
  v1::Vm vm;
  grpc::Status s = Get(on, name, &vm);
  ASSERT_TRUE(s.ok()) << s.error_message() << "\n" << on.Log();
  EXPECT_EQ(vm.status().phase(), v1::VM_PHASE_RUNNING) << vm.ShortDebugString();
  EXPECT_TRUE(vm.status().migration_id().empty()) << vm.ShortDebugString();
  EXPECT_GE(vm.status().guest().iterations(), before.iterations());
  EXPECT_GE(vm.status().guest().pages_written(), before.pages_written());
  const v1::GuestCounters first = vm.status().guest();
  const absl::Time end = absl::Now() + absl::Seconds(5);
  v1::Vm later;
  do {
    absl::SleepFor(absl::Milliseconds(30));
    ASSERT_TRUE(Get(on, name, &later).ok());
  } while (later.status().guest().iterations() <= first.iterations() &&
           absl::Now() < end);
  EXPECT_GT(later.status().guest().iterations(), first.iterations())
      << "the guest does not run on " << on.name();
  if (writes) {
    while (later.status().guest().pages_written() <= first.pages_written() &&
           absl::Now() < end) {
      absl::SleepFor(absl::Milliseconds(30));
      ASSERT_TRUE(Get(on, name, &later).ok());
    }
    EXPECT_GT(later.status().guest().pages_written(), first.pages_written());
  }
  EXPECT_EQ(later.status().selfcheck_errors(), 0u) << later.ShortDebugString();
  if (other == nullptr) return;
  v1::Vm none;
  EXPECT_EQ(Get(*other, name, &none).error_code(), grpc::StatusCode::NOT_FOUND)
      << other->name() << " still has " << none.ShortDebugString();
}

// Waits (up to `timeout`) for `agent` to hold no VM at all.
bool WaitNoVms(Agent& agent, absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    if (VmCount(agent) == 0) return true;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return VmCount(agent) == 0;
}

controller::MigrationRequest Request(Agent& from, Agent& to, const std::string& vm,
                                     v1::MigrationPolicy policy) {
  controller::MigrationRequest r;
  r.vm_name = vm;
  r.source_address = from.address();
  r.destination_address = to.address();
  r.source_host = from.name();
  r.destination_host = to.name();
  r.policy = std::move(policy);
  r.agent_lost_after = absl::Seconds(2);
  return r;
}

v1::GuestCounters Counters(Agent& agent, const std::string& name) {
  v1::Vm vm;
  EXPECT_TRUE(Get(agent, name, &vm).ok());
  return vm.status().guest();
}

v1::AgentMigration GetMigration(Agent& agent, const std::string& id) {
  v1::AgentGetMigrationRequest req;
  req.set_migration_id(id);
  v1::AgentMigration m;
  grpc::Status s = agent.stub().GetMigration(Ctx().get(), req, &m);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return m;
}

TEST(MigrationProcessTest, EveryWorkloadMovesAndKeepsRunning) {
  auto a = StartAgent("wl-a");
  auto b = StartAgent("wl-b");
  ASSERT_TRUE(a && b);
  v1::HostInfo info;
  ASSERT_TRUE(b->stub().GetHostInfo(Ctx().get(), {}, &info).ok());
  EXPECT_EQ(info.migration_address(), b->address());
  EXPECT_EQ(info.min_protocol_version(), 1u);
  EXPECT_EQ(info.max_protocol_version(), 1u);

  const std::vector<std::pair<std::string, v1::WorkloadKind>> kinds = {
      {"idle", v1::WORKLOAD_KIND_IDLE},
      {"uniform", v1::WORKLOAD_KIND_UNIFORM},
      {"hotcold", v1::WORKLOAD_KIND_HOTCOLD},
      {"sequential", v1::WORKLOAD_KIND_SEQUENTIAL}};
  for (const auto& [name, kind] : kinds) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(Create(*a, Spec(name, kind)).ok());
    if (kind != v1::WORKLOAD_KIND_IDLE) WaitWrites(*a, name, 1000);
    const v1::GuestCounters before = Counters(*a, name);
    std::vector<v1::MigrationPhase> phases;
    controller::MigrationDetails details;
    controller::MigrationDriver driver(Request(*a, *b, name, Policy()));
    // The destination's side of the story, watched from its own agent.
    std::vector<v1::MigrationPhase> dest_phases;
    grpc::Status dest_watch;
    std::thread dest_watcher;
    v1::MigrationResult r = driver.Run(
        [&](const v1::MigrationProgress& p) {
          if (phases.empty() || phases.back() != p.phase()) phases.push_back(p.phase());
          if (dest_watcher.joinable()) return;
          dest_watcher = std::thread([&, id = driver.migration_id()] {
            v1::AgentWatchMigrationRequest w;
            w.set_migration_id(id);
            grpc::ClientContext ctx;
            ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
            auto reader = b->stub().WatchMigration(&ctx, w);
            v1::MigrationProgress dp;
            while (reader->Read(&dp)) dest_phases.push_back(dp.phase());
            dest_watch = reader->Finish();
          });
        },
        &details);
    if (dest_watcher.joinable()) dest_watcher.join();
    EXPECT_TRUE(dest_watch.ok()) << dest_watch.error_message();
    ASSERT_FALSE(dest_phases.empty());
    EXPECT_EQ(dest_phases.back(), v1::MIGRATION_PHASE_SUCCEEDED);
    ASSERT_EQ(r.phase(), v1::MIGRATION_PHASE_SUCCEEDED)
        << r.ShortDebugString() << "\n" << a->Log() << b->Log();
    EXPECT_EQ(r.vm_host(), "wl-b");
    EXPECT_GE(r.rounds(), 1u);
    EXPECT_GT(r.total_time().seconds() * 1000000000LL + r.total_time().nanos(), 0);
    EXPECT_FALSE(details.handoff_unknown);
    ASSERT_FALSE(phases.empty());
    EXPECT_EQ(phases.back(), v1::MIGRATION_PHASE_FINISHING);
    ExpectRunningOnlyOn(*b, a.get(), name, before, kind != v1::WORKLOAD_KIND_IDLE);
    // Both sides remember how it went.
    v1::AgentMigration src = GetMigration(*a, details.migration_id);
    EXPECT_EQ(src.role(), v1::MIGRATION_ROLE_SOURCE);
    EXPECT_EQ(src.phase(), v1::MIGRATION_PHASE_SUCCEEDED);
    v1::AgentMigration dst = GetMigration(*b, details.migration_id);
    EXPECT_EQ(dst.role(), v1::MIGRATION_ROLE_DESTINATION);
    EXPECT_EQ(dst.phase(), v1::MIGRATION_PHASE_SUCCEEDED);
    EXPECT_EQ(dst.handoff(), v1::HANDOFF_STATE_RESUMED);
  }
  EXPECT_EQ(VmCount(*a), 0);
  EXPECT_EQ(VmCount(*b), 4);
  v1::AgentListMigrationsResponse list;
  ASSERT_TRUE(b->stub().ListMigrations(Ctx().get(), {}, &list).ok());
  EXPECT_EQ(list.migrations_size(), 4);
  EXPECT_EQ(a->Terminate(), 0) << a->Log();
  EXPECT_EQ(b->Terminate(), 0) << b->Log();
}

TEST(MigrationProcessTest, BackAndForthTwentyTimes) {
  auto a = StartAgent("bf-a");
  auto b = StartAgent("bf-b");
  ASSERT_TRUE(a && b);
  const std::string name = "pingpong";
  ASSERT_TRUE(Create(*a, Spec(name, v1::WORKLOAD_KIND_UNIFORM, 64 * kMiB,
                              16 * kMiB, 4 * kMiB))
                  .ok());
  WaitWrites(*a, name, 500);
  Agent* from = a.get();
  Agent* to = b.get();
  v1::GuestCounters last = Counters(*a, name);
  for (int i = 0; i < 20; ++i) {
    SCOPED_TRACE(absl::StrCat("migration ", i + 1));
    v1::MigrationResult r =
        controller::RunMigration(Request(*from, *to, name, Policy(i % 2 ? 1 : 4)));
    ASSERT_EQ(r.phase(), v1::MIGRATION_PHASE_SUCCEEDED)
        << r.ShortDebugString() << "\n" << from->Log() << to->Log();
    v1::Vm vm;
    ASSERT_TRUE(Get(*to, name, &vm).ok());
    EXPECT_GE(vm.status().guest().pages_written(), last.pages_written());
    EXPECT_EQ(vm.status().selfcheck_errors(), 0u);
    v1::Vm none;
    EXPECT_EQ(Get(*from, name, &none).error_code(), grpc::StatusCode::NOT_FOUND);
    last = vm.status().guest();
    std::swap(from, to);
  }
  ExpectRunningOnlyOn(*from, to, name, last, /*writes=*/true);
}

TEST(MigrationProcessTest, CancelMidTransferKeepsVmOnSource) {
  auto a = StartAgent("cx-a");
  auto b = StartAgent("cx-b");
  ASSERT_TRUE(a && b);
  const std::string name = "busy";
  ASSERT_TRUE(Create(*a, Spec(name, v1::WORKLOAD_KIND_UNIFORM, 96 * kMiB,
                              64 * kMiB, 64 * kMiB))
                  .ok());
  WaitWrites(*a, name, 4000);
  const v1::GuestCounters before = Counters(*a, name);
  controller::MigrationDriver driver(Request(*a, *b, name, SlowPolicy()));
  std::atomic<bool> asked{false};
  v1::MigrationResult r = driver.Run([&](const v1::MigrationProgress& p) {
    if (p.pages_sent() > 300 && !asked.exchange(true)) {
      // Cancel from another thread, as a controller's API call would.
      std::thread([&driver] { driver.Cancel("test cancel"); }).detach();
    }
  });
  EXPECT_TRUE(asked.load());
  EXPECT_EQ(r.phase(), v1::MIGRATION_PHASE_CANCELLED) << r.ShortDebugString();
  EXPECT_EQ(r.vm_host(), "cx-a");
  ExpectRunningOnlyOn(*a, b.get(), name, before, /*writes=*/true);
  EXPECT_TRUE(WaitNoVms(*b, absl::Seconds(3)));
  v1::AgentMigration dst = GetMigration(*b, driver.migration_id());
  EXPECT_EQ(dst.handoff(), v1::HANDOFF_STATE_ABORTED);
  // The VM is free again: user calls work, and it can still migrate.
  v1::PauseVmRequest pause;
  pause.set_name(name);
  v1::Vm vm;
  EXPECT_TRUE(a->stub().PauseVm(Ctx().get(), pause, &vm).ok());
  v1::ResumeVmRequest resume;
  resume.set_name(name);
  EXPECT_TRUE(a->stub().ResumeVm(Ctx().get(), resume, &vm).ok());
}

TEST(MigrationProcessTest, DestinationKilledMidTransfer) {
  auto a = StartAgent("kd-a");
  auto b = StartAgent("kd-b");
  ASSERT_TRUE(a && b);
  const std::string name = "survivor";
  ASSERT_TRUE(Create(*a, Spec(name, v1::WORKLOAD_KIND_UNIFORM, 96 * kMiB,
                              64 * kMiB, 64 * kMiB))
                  .ok());
  WaitWrites(*a, name, 4000);
  const v1::GuestCounters before = Counters(*a, name);
  bool killed = false;
  controller::MigrationDetails details;
  v1::MigrationResult r = controller::RunMigration(
      Request(*a, *b, name, SlowPolicy()),
      [&](const v1::MigrationProgress& p) {
        if (p.pages_sent() > 300 && !killed) {
          killed = true;
          b->Kill();
        }
      },
      &details);
  EXPECT_TRUE(killed);
  EXPECT_EQ(r.phase(), v1::MIGRATION_PHASE_FAILED) << r.ShortDebugString();
  EXPECT_EQ(r.vm_host(), "kd-a");
  if (details.handoff_unknown) {
    // The kill landed after the source paused for Switchover (a fast KVM
    // migration gets there before the first progress sample past 300
    // pages): the source cannot know whether the destination armed, so it
    // stays paused and the driver, unable to reach the destination, says
    // so rather than guess. The operator here KNOWS the destination is
    // dead (SIGKILLed and reaped), so it confirms ABORTED by hand.
    v1::ConfirmOutgoingRequest c;
    c.set_migration_id(details.migration_id);
    c.set_outcome(v1::CONFIRM_OUTCOME_ABORTED);
    v1::ConfirmOutgoingResponse cr;
    ASSERT_TRUE(a->stub().ConfirmOutgoing(Ctx().get(), c, &cr).ok());
  }
  ExpectRunningOnlyOn(*a, nullptr, name, before, /*writes=*/true);  // B is dead
}

TEST(MigrationProcessTest, DestinationShutsDownMidTransfer) {
  auto a = StartAgent("td-a");
  auto b = StartAgent("td-b");
  ASSERT_TRUE(a && b);
  const std::string name = "steady";
  ASSERT_TRUE(Create(*a, Spec(name, v1::WORKLOAD_KIND_UNIFORM, 96 * kMiB,
                              64 * kMiB, 64 * kMiB))
                  .ok());
  WaitWrites(*a, name, 4000);
  const v1::GuestCounters before = Counters(*a, name);
  int exit_code = -2;
  controller::MigrationDetails details;
  v1::MigrationResult r = controller::RunMigration(
      Request(*a, *b, name, SlowPolicy()),
      [&](const v1::MigrationProgress& p) {
        if (p.pages_sent() > 300 && exit_code == -2) exit_code = b->Terminate();
      },
      &details);
  EXPECT_EQ(exit_code, 0) << b->Log();
  EXPECT_NE(r.phase(), v1::MIGRATION_PHASE_SUCCEEDED) << r.ShortDebugString();
  EXPECT_EQ(r.vm_host(), "td-a");
  if (details.handoff_unknown) {
    // As in DestinationKilledMidTransfer: the source had paused; the
    // destination exited (status 0, its VMs destroyed), so ABORTED is known.
    v1::ConfirmOutgoingRequest c;
    c.set_migration_id(details.migration_id);
    c.set_outcome(v1::CONFIRM_OUTCOME_ABORTED);
    v1::ConfirmOutgoingResponse cr;
    ASSERT_TRUE(a->stub().ConfirmOutgoing(Ctx().get(), c, &cr).ok());
  }
  ExpectRunningOnlyOn(*a, nullptr, name, before, /*writes=*/true);
}

TEST(MigrationProcessTest, ForcedDeleteOfIncomingShellCancelsIt) {
  auto b = StartAgent("fd-b");
  ASSERT_TRUE(b);
  v1::PrepareIncomingRequest prep;
  prep.set_migration_id("m-shell");
  *prep.mutable_spec() = Spec("shell", v1::WORKLOAD_KIND_IDLE);
  v1::PrepareIncomingResponse prepared;
  ASSERT_TRUE(b->stub().PrepareIncoming(Ctx().get(), prep, &prepared).ok());
  v1::Vm vm;
  ASSERT_TRUE(Get(*b, "shell", &vm).ok());
  EXPECT_EQ(vm.status().phase(), v1::VM_PHASE_INCOMING);
  EXPECT_EQ(vm.status().migration_id(), "m-shell");
  v1::AgentDeleteVmRequest del;
  del.set_name("shell");
  v1::AgentDeleteVmResponse resp;
  EXPECT_EQ(b->stub().DeleteVm(Ctx().get(), del, &resp).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  del.set_force(true);
  grpc::Status s = b->stub().DeleteVm(Ctx().get(), del, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(VmCount(*b), 0);
  EXPECT_EQ(GetMigration(*b, "m-shell").phase(), v1::MIGRATION_PHASE_CANCELLED);
  EXPECT_EQ(b->Terminate(), 0) << b->Log();
}

TEST(MigrationProcessTest, SourceKilledMidTransferDestinationCleansUp) {
  auto a = StartAgent("ks-a");
  auto b = StartAgent("ks-b");
  ASSERT_TRUE(a && b);
  const std::string name = "orphan";
  ASSERT_TRUE(Create(*a, Spec(name, v1::WORKLOAD_KIND_UNIFORM, 96 * kMiB,
                              64 * kMiB, 64 * kMiB))
                  .ok());
  WaitWrites(*a, name, 4000);
  v1::Vm vm;
  ASSERT_TRUE(Get(*a, name, &vm).ok());
  // Raw handshake (the controller's part), then the source dies.
  v1::PrepareIncomingRequest prep;
  prep.set_migration_id("m-orphan");
  *prep.mutable_spec() = vm.spec();
  prep.set_vm_uid(vm.uid());
  *prep.mutable_policy() = SlowPolicy();
  prep.set_source_host("ks-a");
  v1::PrepareIncomingResponse prepared;
  ASSERT_TRUE(b->stub().PrepareIncoming(Ctx().get(), prep, &prepared).ok());
  ASSERT_EQ(VmCount(*b), 1);  // the INCOMING shell
  v1::StartOutgoingRequest start;
  start.set_migration_id("m-orphan");
  start.set_vm_name(name);
  start.set_destination_host("ks-b");
  start.set_destination_endpoint(prepared.endpoint());
  start.set_token(prepared.token());
  *start.mutable_policy() = SlowPolicy();
  v1::StartOutgoingResponse started;
  ASSERT_TRUE(a->stub().StartOutgoing(Ctx().get(), start, &started).ok());
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (GetMigration(*b, "m-orphan").progress().pages_sent() < 300 &&
         absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(GetMigration(*b, "m-orphan").phase(), v1::MIGRATION_PHASE_TRANSFERRING);
  a->Kill();
  // No data for --migration_idle_timeout (2s): the receiver aborts and the
  // agent drops the shell and its memory.
  EXPECT_TRUE(WaitNoVms(*b, absl::Seconds(6))) << b->Log();
  v1::AgentMigration m = GetMigration(*b, "m-orphan");
  EXPECT_EQ(m.phase(), v1::MIGRATION_PHASE_FAILED) << m.ShortDebugString();
  EXPECT_EQ(m.handoff(), v1::HANDOFF_STATE_ABORTED);
  // A prepared migration nobody connects to expires after its TTL.
  prep.set_migration_id("m-expire");
  prep.mutable_ttl()->set_seconds(1);
  ASSERT_TRUE(b->stub().PrepareIncoming(Ctx().get(), prep, &prepared).ok());
  EXPECT_EQ(VmCount(*b), 1);
  EXPECT_TRUE(WaitNoVms(*b, absl::Seconds(4))) << b->Log();
  EXPECT_EQ(b->Terminate(), 0) << b->Log();
}

TEST(MigrationProcessTest, WrongTokenIsRefusedAndVmKeepsRunning) {
  auto a = StartAgent("tk-a");
  auto b = StartAgent("tk-b");
  ASSERT_TRUE(a && b);
  const std::string name = "guarded";
  ASSERT_TRUE(Create(*a, Spec(name, v1::WORKLOAD_KIND_UNIFORM)).ok());
  WaitWrites(*a, name, 500);
  const v1::GuestCounters before = Counters(*a, name);
  v1::Vm vm;
  ASSERT_TRUE(Get(*a, name, &vm).ok());
  v1::PrepareIncomingRequest prep;
  prep.set_migration_id("m-token");
  *prep.mutable_spec() = vm.spec();
  *prep.mutable_policy() = Policy();
  v1::PrepareIncomingResponse prepared;
  ASSERT_TRUE(b->stub().PrepareIncoming(Ctx().get(), prep, &prepared).ok());
  // A repeat returns the same endpoint and token.
  v1::PrepareIncomingResponse again;
  ASSERT_TRUE(b->stub().PrepareIncoming(Ctx().get(), prep, &again).ok());
  EXPECT_EQ(again.token(), prepared.token());

  v1::StartOutgoingRequest start;
  start.set_migration_id("m-token");
  start.set_vm_name(name);
  start.set_destination_endpoint(prepared.endpoint());
  start.set_token(std::string(32, '0'));
  *start.mutable_policy() = Policy();
  v1::StartOutgoingResponse started;
  ASSERT_TRUE(a->stub().StartOutgoing(Ctx().get(), start, &started).ok());
  // The refusal arrives as the watch's terminal sample.
  v1::AgentWatchMigrationRequest wreq;
  wreq.set_migration_id("m-token");
  grpc::ClientContext wctx;
  wctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  auto reader = a->stub().WatchMigration(&wctx, wreq);
  v1::MigrationProgress p, last;
  while (reader->Read(&p)) last = p;
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(last.phase(), v1::MIGRATION_PHASE_FAILED) << last.ShortDebugString();
  EXPECT_EQ(last.result().failure(), v1::MIGRATION_FAILURE_HANDSHAKE);
  EXPECT_EQ(last.result().error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << last.result().message();
  // The wrong token is no authority over the prepared shell...
  EXPECT_EQ(GetMigration(*b, "m-token").phase(), v1::MIGRATION_PHASE_PREPARING);
  // ...the controller cancels it.
  v1::AgentCancelMigrationRequest cancel;
  cancel.set_migration_id("m-token");
  v1::AgentCancelMigrationResponse cancelled;
  ASSERT_TRUE(b->stub().CancelMigration(Ctx().get(), cancel, &cancelled).ok());
  EXPECT_EQ(cancelled.handoff(), v1::HANDOFF_STATE_ABORTED);
  EXPECT_TRUE(WaitNoVms(*b, absl::Seconds(2)));
  ExpectRunningOnlyOn(*a, b.get(), name, before, /*writes=*/true);
}

TEST(MigrationProcessTest, BadRequestsGetProperCodes) {
  auto a = StartAgent("bad-a");
  ASSERT_TRUE(a);
  ASSERT_TRUE(Create(*a, Spec("vm", v1::WORKLOAD_KIND_IDLE)).ok());
  auto& stub = a->stub();
  {
    v1::PrepareIncomingRequest r;
    v1::PrepareIncomingResponse resp;
    EXPECT_EQ(stub.PrepareIncoming(Ctx().get(), r, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
    r.set_migration_id("m1");
    EXPECT_EQ(stub.PrepareIncoming(Ctx().get(), r, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);  // no spec
    *r.mutable_spec() = Spec("vm", v1::WORKLOAD_KIND_IDLE);
    EXPECT_EQ(stub.PrepareIncoming(Ctx().get(), r, &resp).error_code(),
              grpc::StatusCode::ALREADY_EXISTS);  // the name is taken here
    *r.mutable_spec() = Spec("other", v1::WORKLOAD_KIND_IDLE);
    r.mutable_policy()->set_streams(99);
    EXPECT_EQ(stub.PrepareIncoming(Ctx().get(), r, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
    r.mutable_policy()->set_streams(1);
    r.mutable_spec()->set_memory_bytes(64ull << 30);
    EXPECT_EQ(stub.PrepareIncoming(Ctx().get(), r, &resp).error_code(),
              grpc::StatusCode::RESOURCE_EXHAUSTED);
    r.mutable_spec()->set_name("Not A Name");
    EXPECT_EQ(stub.PrepareIncoming(Ctx().get(), r, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    v1::StartOutgoingRequest r;
    v1::StartOutgoingResponse resp;
    r.set_migration_id("m2");
    r.set_vm_name("vm");
    r.set_destination_endpoint("127.0.0.1:1");
    EXPECT_EQ(stub.StartOutgoing(Ctx().get(), r, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);  // no token
    r.set_token("abc");
    r.set_vm_name("nope");
    EXPECT_EQ(stub.StartOutgoing(Ctx().get(), r, &resp).error_code(),
              grpc::StatusCode::NOT_FOUND);
    // An unreachable destination: accepted, then FAILED; the VM stays.
    r.set_vm_name("vm");
    ASSERT_TRUE(stub.StartOutgoing(Ctx().get(), r, &resp).ok());
    const absl::Time end = absl::Now() + absl::Seconds(15);
    while (GetMigration(*a, "m2").phase() != v1::MIGRATION_PHASE_FAILED &&
           absl::Now() < end) {
      absl::SleepFor(absl::Milliseconds(50));
    }
    EXPECT_EQ(GetMigration(*a, "m2").phase(), v1::MIGRATION_PHASE_FAILED);
    v1::Vm vm;
    ASSERT_TRUE(Get(*a, "vm", &vm).ok());
    EXPECT_EQ(vm.status().phase(), v1::VM_PHASE_RUNNING);
    EXPECT_TRUE(vm.status().migration_id().empty());
    // Cancel after the end is a no-op; Confirm before Switchover refused.
    v1::AgentCancelMigrationRequest c;
    c.set_migration_id("m2");
    v1::AgentCancelMigrationResponse cr;
    EXPECT_TRUE(stub.CancelMigration(Ctx().get(), c, &cr).ok());
    EXPECT_EQ(cr.phase(), v1::MIGRATION_PHASE_FAILED);
  }
  {
    v1::FinishIncomingRequest r;
    r.set_migration_id("unknown");
    v1::FinishIncomingResponse resp;
    EXPECT_EQ(stub.FinishIncoming(Ctx().get(), r, &resp).error_code(),
              grpc::StatusCode::NOT_FOUND);
    v1::ConfirmOutgoingRequest c;
    c.set_migration_id("m2");
    v1::ConfirmOutgoingResponse cr;
    EXPECT_EQ(stub.ConfirmOutgoing(Ctx().get(), c, &cr).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);  // no outcome
    c.set_migration_id("unknown");
    c.set_outcome(v1::CONFIRM_OUTCOME_HANDED_OFF);
    EXPECT_EQ(stub.ConfirmOutgoing(Ctx().get(), c, &cr).error_code(),
              grpc::StatusCode::NOT_FOUND);
    v1::AgentCancelMigrationRequest x;
    v1::AgentCancelMigrationResponse xr;
    EXPECT_EQ(stub.CancelMigration(Ctx().get(), x, &xr).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
    v1::AgentGetMigrationRequest g;
    g.set_migration_id("unknown");
    v1::AgentMigration gm;
    EXPECT_EQ(stub.GetMigration(Ctx().get(), g, &gm).error_code(),
              grpc::StatusCode::NOT_FOUND);
    v1::AgentWatchMigrationRequest w;
    w.set_migration_id("unknown");
    grpc::ClientContext wctx;
    auto reader = stub.WatchMigration(&wctx, w);
    v1::MigrationProgress p;
    EXPECT_FALSE(reader->Read(&p));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  }
  // A driver pointed at a VM that does not exist fails cleanly.
  v1::MigrationResult r =
      controller::RunMigration(Request(*a, *a, "ghost", Policy()));
  EXPECT_EQ(r.phase(), v1::MIGRATION_PHASE_FAILED);
  EXPECT_EQ(r.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(a->Terminate(), 0) << a->Log();
}

}  // namespace
}  // namespace ferry
