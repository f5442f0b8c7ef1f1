// The orchestrator against in-process fake agents (fake_agent.h) and a real
// store in a temp dir: the persisted state machine, validation, cancel, the
// queue's limits, and recovery of migrations left in every phase.
#include "controller/orchestrator/orchestrator.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "controller/orchestrator/fake_agent.h"
#include "controller/orchestrator/proto_time.h"
#include "gtest/gtest.h"

namespace ferry::controller {
namespace {

using testing::FakeAgent;

std::string TempDir() {
  const char* t = std::getenv("TEST_TMPDIR");
  static int n = 0;
  return absl::StrCat(t ? t : "/tmp", "/orch-", getpid(), "-", ++n);
}

class OrchestratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = Store::Open(TempDir());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    a_ = std::make_unique<FakeAgent>("a");
    b_ = std::make_unique<FakeAgent>("b");
    ASSERT_TRUE(a_->ok() && b_->ok()) << "cannot bind a loopback port";
    a_->peer = b_.get();
    for (FakeAgent* f : {a_.get(), b_.get()}) {
      v1::Host h;
      h.set_name(f->name());
      *h.mutable_info() = f->Info();
      h.set_readiness(v1::HOST_READINESS_READY);
      ASSERT_TRUE(store_->Create(h).ok());
    }
    AddVm("vm1", "a");
  }
  void TearDown() override {
    if (orch_) orch_->Shutdown();
  }

  void AddVm(const std::string& name, const std::string& host) {
    v1::Vm vm;
    vm.mutable_spec()->set_name(name);
    vm.mutable_spec()->set_memory_bytes(64 << 20);
    vm.mutable_spec()->set_vcpu_count(1);
    vm.mutable_spec()->set_backend(v1::VM_BACKEND_SOFT);
    vm.set_uid(absl::StrCat("uid-", name));
    vm.mutable_status()->set_phase(v1::VM_PHASE_RUNNING);
    vm.mutable_status()->set_host(host);
    ASSERT_TRUE(store_->Create(vm).ok());
    (host == "a" ? a_ : b_)->AddVm(vm);
  }

  void StartOrchestrator(scheduler::Limits limits = {},
                         std::function<void(OrchestratorOptions*)> tweak = nullptr) {
    OrchestratorOptions o;
    o.limits = limits;
    o.schedule_interval = absl::Milliseconds(50);
    o.rpc_timeout = absl::Seconds(2);
    o.agent_lost_after = absl::Milliseconds(500);
    o.reconcile_retry = absl::Milliseconds(100);
    if (tweak) tweak(&o);
    orch_ = std::make_unique<Orchestrator>(store_.get(), o);
    ASSERT_TRUE(orch_->Start().ok());
  }

  v1::Migration WaitFor(const std::string& id,
                        const std::function<bool(const v1::Migration&)>& pred,
                        absl::Duration timeout = absl::Seconds(10)) {
    const absl::Time end = absl::Now() + timeout;
    absl::StatusOr<v1::Migration> m;
    while (absl::Now() < end) {
      m = store_->Get<v1::Migration>(id);
      if (m.ok() && pred(*m)) return *m;
      absl::SleepFor(absl::Milliseconds(10));
    }
    ADD_FAILURE() << "timed out; record: " << (m.ok() ? m->ShortDebugString() : "none");
    return m.ok() ? *m : v1::Migration();
  }
  v1::Migration WaitTerminal(const std::string& id) {
    return WaitFor(id, [](const v1::Migration& m) { return scheduler::IsTerminal(m.phase()); });
  }
  v1::Vm Vm(const std::string& name) { return *store_->Get<v1::Vm>(name); }

  // A migration record as an earlier controller left it.
  std::string PlantMigration(v1::MigrationPhase phase) {
    v1::Migration m;
    m.set_id("m-planted");
    m.set_vm_name("vm1");
    m.set_vm_uid("uid-vm1");
    m.set_source_host("a");
    m.set_target_host("b");
    *m.mutable_policy() = DefaultMigrationPolicy();
    m.set_phase(phase);
    v1::Vm vm = Vm("vm1");
    vm.mutable_status()->set_migration_id(m.id());
    WriteTxn txn;
    txn.Create(m);
    txn.Update(vm);
    EXPECT_TRUE(store_->Commit(txn).ok());
    return m.id();
  }
  static v1::AgentMigration AgentSide(v1::MigrationRole role, v1::MigrationPhase phase,
                                      v1::HandoffState handoff = v1::HANDOFF_STATE_UNSPECIFIED) {
    v1::AgentMigration m;
    m.set_migration_id("m-planted");
    m.set_role(role);
    m.set_vm_name("vm1");
    m.set_phase(phase);
    m.set_handoff(handoff);
    return m;
  }

  std::unique_ptr<Store> store_;
  std::unique_ptr<FakeAgent> a_, b_;
  std::unique_ptr<Orchestrator> orch_;
};

std::vector<v1::MigrationPhase> Phases(const v1::Migration& m) {
  std::vector<v1::MigrationPhase> out;
  for (const auto& t : m.transitions()) out.push_back(t.phase());
  return out;
}

TEST_F(OrchestratorTest, MigratesAndCommitsEachTransitionBeforeActing) {
  // What the record said when each agent call arrived.
  std::vector<std::string> seen;
  absl::Mutex mu;
  auto note = [&](const std::string& call) {
    absl::StatusOr<v1::Migration> m;
    ListOptions<v1::Migration> o;
    auto page = store_->List<v1::Migration>(o);
    std::string phase = page.ok() && !page->items.empty()
                            ? v1::MigrationPhase_Name(page->items[0].phase())
                            : "none";
    absl::MutexLock l(&mu);
    seen.push_back(absl::StrCat(call, "@", phase));
  };
  a_->on_call = note;
  b_->on_call = note;
  StartOrchestrator();
  v1::CreateMigrationRequest req;
  req.set_vm_name("vm1");
  absl::StatusOr<v1::Migration> m = orch_->CreateMigration(req);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->phase(), v1::MIGRATION_PHASE_PENDING);
  EXPECT_EQ(Vm("vm1").status().migration_id(), m->id());
  // Every policy field filled from the defaults.
  EXPECT_EQ(m->policy().max_downtime().nanos(), 300000000);
  EXPECT_EQ(m->policy().progress_timeout().seconds(), 150);

  v1::Migration done = WaitTerminal(m->id());
  ASSERT_EQ(done.phase(), v1::MIGRATION_PHASE_SUCCEEDED) << done.ShortDebugString();
  EXPECT_EQ(done.target_host(), "b");
  EXPECT_EQ(done.result().vm_host(), "b");
  const std::vector<v1::MigrationPhase> want = {
      v1::MIGRATION_PHASE_PENDING,    v1::MIGRATION_PHASE_PREPARING,
      v1::MIGRATION_PHASE_TRANSFERRING, v1::MIGRATION_PHASE_FINISHING,
      v1::MIGRATION_PHASE_CONFIRMING, v1::MIGRATION_PHASE_SUCCEEDED};
  EXPECT_EQ(Phases(done), want);
  EXPECT_GT(done.progress_samples_size(), 0);
  EXPECT_EQ(Vm("vm1").status().host(), "b");
  EXPECT_TRUE(Vm("vm1").status().migration_id().empty());
  absl::MutexLock l(&mu);
  auto has = [&](const std::string& s) {
    return std::find(seen.begin(), seen.end(), s) != seen.end();
  };
  EXPECT_TRUE(has("PrepareIncoming@MIGRATION_PHASE_PREPARING")) << ::testing::PrintToString(seen);
  EXPECT_TRUE(has("FinishIncoming@MIGRATION_PHASE_FINISHING")) << ::testing::PrintToString(seen);
  EXPECT_TRUE(has("ConfirmOutgoing:CONFIRM_OUTCOME_HANDED_OFF@MIGRATION_PHASE_CONFIRMING"))
      << ::testing::PrintToString(seen);
}

TEST_F(OrchestratorTest, BadRequestsChangeNothing) {
  StartOrchestrator();
  v1::Host cordoned;
  AddVm("vm2", "b");
  ASSERT_TRUE(store_->Get<v1::Host>("b").ok());
  cordoned = *store_->Get<v1::Host>("b");
  const uint64_t before = store_->revision();
  auto code = [&](v1::CreateMigrationRequest r) {
    return orch_->CreateMigration(r).status().code();
  };
  v1::CreateMigrationRequest r;
  EXPECT_EQ(code(r), absl::StatusCode::kInvalidArgument);  // no name
  r.set_vm_name("nope");
  EXPECT_EQ(code(r), absl::StatusCode::kNotFound);
  r.set_vm_name("vm1");
  r.set_target_host("a");
  EXPECT_EQ(code(r), absl::StatusCode::kInvalidArgument);  // target = source
  r.set_target_host("zz");
  EXPECT_EQ(code(r), absl::StatusCode::kNotFound);
  r.clear_target_host();
  for (auto bad : std::vector<std::function<void(v1::MigrationPolicy*)>>{
           [](v1::MigrationPolicy* p) { p->set_streams(0); },
           [](v1::MigrationPolicy* p) { p->set_streams(17); },
           [](v1::MigrationPolicy* p) { p->set_throttle_max_percent(100); },
           [](v1::MigrationPolicy* p) { p->mutable_max_downtime()->set_seconds(-1); },
           [](v1::MigrationPolicy* p) { p->mutable_max_downtime()->set_seconds(0); },
           [](v1::MigrationPolicy* p) {
             p->set_throttle_initial_percent(50);
             p->set_throttle_max_percent(40);
           }}) {
    v1::CreateMigrationRequest pr = r;
    bad(pr.mutable_policy());
    EXPECT_EQ(code(pr), absl::StatusCode::kInvalidArgument) << pr.ShortDebugString();
  }
  EXPECT_EQ(store_->revision(), before) << "a refused request wrote to the store";

  EXPECT_EQ(orch_->CancelMigration("nope", "").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(orch_->CancelMigration("", "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->revision(), before);

  // Cordoned / not-ready targets.
  cordoned.set_cordoned(true);
  ASSERT_TRUE(store_->Update(cordoned).ok());
  r.set_target_host("b");
  EXPECT_EQ(code(r), absl::StatusCode::kFailedPrecondition);
  cordoned = *store_->Get<v1::Host>("b");
  cordoned.set_cordoned(false);
  cordoned.set_readiness(v1::HOST_READINESS_UNKNOWN);
  ASSERT_TRUE(store_->Update(cordoned).ok());
  EXPECT_EQ(code(r), absl::StatusCode::kFailedPrecondition);
}

TEST_F(OrchestratorTest, SecondMigrationOfOneVmIsRefused) {
  a_->set_hold_transfer(true);
  StartOrchestrator();
  v1::CreateMigrationRequest r;
  r.set_vm_name("vm1");
  absl::StatusOr<v1::Migration> m = orch_->CreateMigration(r);
  ASSERT_TRUE(m.ok());
  const uint64_t before = store_->revision();
  absl::StatusOr<v1::Migration> again = orch_->CreateMigration(r);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(again.status().message().find(m->id()), std::string::npos);
  (void)before;
}

TEST_F(OrchestratorTest, CancelMidTransferKeepsTheVmOnTheSource) {
  a_->set_hold_transfer(true);
  StartOrchestrator();
  v1::CreateMigrationRequest r;
  r.set_vm_name("vm1");
  absl::StatusOr<v1::Migration> m = orch_->CreateMigration(r);
  ASSERT_TRUE(m.ok());
  WaitFor(m->id(), [](const v1::Migration& m) {
    return m.phase() == v1::MIGRATION_PHASE_TRANSFERRING;
  });
  absl::StatusOr<v1::Migration> c = orch_->CancelMigration(m->id(), "operator said so");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->cancel_requested());
  v1::Migration done = WaitTerminal(m->id());
  EXPECT_EQ(done.phase(), v1::MIGRATION_PHASE_CANCELLED) << done.ShortDebugString();
  EXPECT_EQ(done.result().vm_host(), "a");
  EXPECT_EQ(Vm("vm1").status().host(), "a");
  EXPECT_TRUE(Vm("vm1").status().migration_id().empty());
  EXPECT_EQ(orch_->CancelMigration(m->id(), "").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(OrchestratorTest, CancelWhilePendingEndsAtOnce) {
  // No target can take it: b is cordoned, so it stays PENDING.
  v1::Host b = *store_->Get<v1::Host>("b");
  b.set_cordoned(true);
  ASSERT_TRUE(store_->Update(b).ok());
  StartOrchestrator();
  v1::CreateMigrationRequest r;
  r.set_vm_name("vm1");
  absl::StatusOr<v1::Migration> m = orch_->CreateMigration(r);
  ASSERT_TRUE(m.ok());
  v1::Migration pending = WaitFor(m->id(), [](const v1::Migration& m) {
    return m.pending_reason() != v1::PENDING_REASON_UNSPECIFIED;
  });
  EXPECT_EQ(pending.phase(), v1::MIGRATION_PHASE_PENDING);
  EXPECT_FALSE(pending.pending_message().empty());
  absl::StatusOr<v1::Migration> c = orch_->CancelMigration(m->id(), "");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->phase(), v1::MIGRATION_PHASE_CANCELLED);
  EXPECT_TRUE(Vm("vm1").status().migration_id().empty());
}

TEST_F(OrchestratorTest, ClusterLimitKeepsTheSecondPendingWithAReason) {
  AddVm("vm2", "a");
  a_->set_hold_transfer(true);
  scheduler::Limits limits;
  limits.max_cluster = 1;
  StartOrchestrator(limits);
  v1::CreateMigrationRequest r1, r2;
  r1.set_vm_name("vm1");
  r2.set_vm_name("vm2");
  absl::StatusOr<v1::Migration> m1 = orch_->CreateMigration(r1);
  ASSERT_TRUE(m1.ok());
  WaitFor(m1->id(), [](const v1::Migration& m) {
    return m.phase() == v1::MIGRATION_PHASE_TRANSFERRING;
  });
  absl::StatusOr<v1::Migration> m2 = orch_->CreateMigration(r2);
  ASSERT_TRUE(m2.ok());
  v1::Migration p = WaitFor(m2->id(), [](const v1::Migration& m) {
    return m.pending_reason() == v1::PENDING_REASON_CONCURRENCY_LIMIT;
  });
  EXPECT_EQ(p.phase(), v1::MIGRATION_PHASE_PENDING);
  // The first ends; the second starts.
  a_->set_hold_transfer(false);
  EXPECT_EQ(WaitTerminal(m1->id()).phase(), v1::MIGRATION_PHASE_SUCCEEDED);
  EXPECT_EQ(WaitTerminal(m2->id()).phase(), v1::MIGRATION_PHASE_SUCCEEDED);
}

// A drain's max_parallel survives a controller restart: the new
// orchestrator over the same store still runs one drain migration at once.
TEST_F(OrchestratorTest, DrainParallelismSurvivesRestart) {
  AddVm("vm2", "a");
  a_->set_hold_transfer(true);
  StartOrchestrator();
  ASSERT_TRUE(orch_->SetDrainParallelism("a", 1).ok());
  orch_->Shutdown();
  orch_.reset();
  StartOrchestrator();  // a restarted controller: same store, fresh memory
  v1::CreateMigrationRequest r1, r2;
  r1.set_vm_name("vm1");
  r2.set_vm_name("vm2");
  absl::StatusOr<v1::Migration> m1 = orch_->CreateMigration(r1, "a");
  ASSERT_TRUE(m1.ok()) << m1.status();
  WaitFor(m1->id(), [](const v1::Migration& m) {
    return m.phase() == v1::MIGRATION_PHASE_TRANSFERRING;
  });
  absl::StatusOr<v1::Migration> m2 = orch_->CreateMigration(r2, "a");
  ASSERT_TRUE(m2.ok()) << m2.status();
  v1::Migration p = WaitFor(m2->id(), [](const v1::Migration& m) {
    return m.pending_reason() == v1::PENDING_REASON_CONCURRENCY_LIMIT;
  });
  EXPECT_EQ(p.phase(), v1::MIGRATION_PHASE_PENDING);
  EXPECT_NE(p.pending_message().find("drain of a runs at most 1"), std::string::npos)
      << p.pending_message();
  a_->set_hold_transfer(false);
  EXPECT_EQ(WaitTerminal(m1->id()).phase(), v1::MIGRATION_PHASE_SUCCEEDED);
  EXPECT_EQ(WaitTerminal(m2->id()).phase(), v1::MIGRATION_PHASE_SUCCEEDED);
  // Cleared (0) is persisted too.
  ASSERT_TRUE(orch_->SetDrainParallelism("a", 0).ok());
  EXPECT_TRUE(absl::IsNotFound(store_->GetAux("drain/a").status()));
}

TEST_F(OrchestratorTest, PendingMigrationOfAnUnknownHostFailsAfterTheGrace) {
  v1::Host b = *store_->Get<v1::Host>("b");
  b.set_cordoned(true);
  ASSERT_TRUE(store_->Update(b).ok());
  StartOrchestrator({}, [](OrchestratorOptions* o) {
    o->source_host_grace = absl::Milliseconds(1500);
  });
  v1::CreateMigrationRequest r;
  r.set_vm_name("vm1");
  absl::StatusOr<v1::Migration> m = orch_->CreateMigration(r);
  ASSERT_TRUE(m.ok());
  const absl::Time t0 = absl::Now();
  v1::Host a = *store_->Get<v1::Host>("a");
  a.set_readiness(v1::HOST_READINESS_UNKNOWN);
  ASSERT_TRUE(store_->Update(a).ok());
  // Within the grace it waits (the agent may be about to check in) ...
  absl::SleepFor(absl::Milliseconds(700));
  EXPECT_EQ(store_->Get<v1::Migration>(m->id())->phase(), v1::MIGRATION_PHASE_PENDING);
  // ... then fails, without moving anything.
  v1::Migration done = WaitTerminal(m->id());
  EXPECT_GE(absl::Now() - t0, absl::Milliseconds(1400));
  EXPECT_EQ(done.phase(), v1::MIGRATION_PHASE_FAILED);
  EXPECT_EQ(done.result().failure(), v1::MIGRATION_FAILURE_INTERRUPTED);
  EXPECT_NE(done.result().message().find("UNKNOWN"), std::string::npos);
  EXPECT_EQ(Vm("vm1").status().host(), "a");
}

TEST_F(OrchestratorTest, PendingMigrationGoesOnWhenItsHostComesBackInTime) {
  StartOrchestrator({}, [](OrchestratorOptions* o) {
    o->source_host_grace = absl::Seconds(30);
  });
  // The source drops out before the first pass admits the migration (as
  // after a controller restart, before the agent's first heartbeat) ...
  v1::Host a = *store_->Get<v1::Host>("a");
  v1::CreateMigrationRequest r;
  r.set_vm_name("vm1");
  v1::Host b = *store_->Get<v1::Host>("b");
  b.set_cordoned(true);  // nowhere to go yet: it stays PENDING
  ASSERT_TRUE(store_->Update(b).ok());
  absl::StatusOr<v1::Migration> m = orch_->CreateMigration(r);
  ASSERT_TRUE(m.ok());
  a = *store_->Get<v1::Host>("a");
  a.set_readiness(v1::HOST_READINESS_UNKNOWN);
  ASSERT_TRUE(store_->Update(a).ok());
  absl::SleepFor(absl::Milliseconds(1200));
  ASSERT_EQ(store_->Get<v1::Migration>(m->id())->phase(), v1::MIGRATION_PHASE_PENDING);
  // ... and checks in again within the grace: the migration proceeds.
  a = *store_->Get<v1::Host>("a");
  a.set_readiness(v1::HOST_READINESS_READY);
  ASSERT_TRUE(store_->Update(a).ok());
  b = *store_->Get<v1::Host>("b");
  b.set_cordoned(false);
  ASSERT_TRUE(store_->Update(b).ok());
  v1::Migration done = WaitTerminal(m->id());
  EXPECT_EQ(done.phase(), v1::MIGRATION_PHASE_SUCCEEDED) << done.result().message();
}

TEST_F(OrchestratorTest, CompletionBackstopFailsAMigrationThatNeverEnds) {
  // The source never converges (hold) and, as if it had stopped enforcing
  // the policy itself, never gives up: the controller's backstop does.
  a_->set_hold_transfer(true);
  StartOrchestrator({}, [](OrchestratorOptions* o) {
    o->completion_backstop_factor = 1.0;
    o->completion_backstop_slack = absl::ZeroDuration();
  });
  v1::CreateMigrationRequest r;
  r.set_vm_name("vm1");
  r.mutable_policy()->mutable_completion_timeout_per_gib()->set_nanos(200 * 1000 * 1000);
  absl::StatusOr<v1::Migration> m = orch_->CreateMigration(r);
  ASSERT_TRUE(m.ok()) << m.status();
  v1::Migration done = WaitTerminal(m->id());
  EXPECT_EQ(done.phase(), v1::MIGRATION_PHASE_FAILED) << done.ShortDebugString();
  EXPECT_EQ(done.result().failure(), v1::MIGRATION_FAILURE_COMPLETION_TIMEOUT)
      << done.ShortDebugString();
  EXPECT_TRUE(a_->Called("CancelMigration"));
  EXPECT_EQ(Vm("vm1").status().host(), "a");
}

TEST_F(OrchestratorTest, ShutdownAbandonsWithoutAbortingAnything) {
  a_->set_hold_transfer(true);
  StartOrchestrator();
  v1::CreateMigrationRequest r;
  r.set_vm_name("vm1");
  absl::StatusOr<v1::Migration> m = orch_->CreateMigration(r);
  ASSERT_TRUE(m.ok());
  WaitFor(m->id(), [](const v1::Migration& m) {
    return m.phase() == v1::MIGRATION_PHASE_TRANSFERRING;
  });
  orch_->Shutdown();
  EXPECT_EQ(store_->Get<v1::Migration>(m->id())->phase(), v1::MIGRATION_PHASE_TRANSFERRING);
  EXPECT_FALSE(a_->Called("CancelMigration"));
  EXPECT_FALSE(b_->Called("CancelMigration"));
  EXPECT_EQ(orch_->ActiveRunners(), 0);
}

// --- recovery: a fresh orchestrator over a record left mid-phase ----------

TEST_F(OrchestratorTest, RecoveryFinishesWhenTheDestinationIsArmed) {
  const std::string id = PlantMigration(v1::MIGRATION_PHASE_SWITCHOVER);
  a_->SetMigration(AgentSide(v1::MIGRATION_ROLE_SOURCE, v1::MIGRATION_PHASE_FINISHING));
  b_->SetMigration(AgentSide(v1::MIGRATION_ROLE_DESTINATION, v1::MIGRATION_PHASE_FINISHING,
                             v1::HANDOFF_STATE_ARMED));
  StartOrchestrator();
  v1::Migration done = WaitTerminal(id);
  EXPECT_EQ(done.phase(), v1::MIGRATION_PHASE_SUCCEEDED) << done.ShortDebugString();
  EXPECT_TRUE(b_->Called("FinishIncoming"));
  EXPECT_TRUE(a_->Called("ConfirmOutgoing:CONFIRM_OUTCOME_HANDED_OFF"));
  EXPECT_FALSE(a_->Called("CancelMigration"));
  EXPECT_EQ(Vm("vm1").status().host(), "b");
}

TEST_F(OrchestratorTest, RecoveryCompletesWhenTheDestinationResumed) {
  const std::string id = PlantMigration(v1::MIGRATION_PHASE_FINISHING);
  a_->SetMigration(AgentSide(v1::MIGRATION_ROLE_SOURCE, v1::MIGRATION_PHASE_FINISHING));
  b_->SetMigration(AgentSide(v1::MIGRATION_ROLE_DESTINATION, v1::MIGRATION_PHASE_SUCCEEDED,
                             v1::HANDOFF_STATE_RESUMED));
  StartOrchestrator();
  v1::Migration done = WaitTerminal(id);
  EXPECT_EQ(done.phase(), v1::MIGRATION_PHASE_SUCCEEDED);
  EXPECT_FALSE(b_->Called("FinishIncoming"));
  EXPECT_TRUE(a_->Called("ConfirmOutgoing:CONFIRM_OUTCOME_HANDED_OFF"));
  EXPECT_EQ(Vm("vm1").status().host(), "b");
  EXPECT_TRUE(Vm("vm1").status().migration_id().empty());
}

TEST_F(OrchestratorTest, RecoveryRollsBackATransferThatWasNotArmed) {
  const std::string id = PlantMigration(v1::MIGRATION_PHASE_TRANSFERRING);
  a_->SetMigration(AgentSide(v1::MIGRATION_ROLE_SOURCE, v1::MIGRATION_PHASE_TRANSFERRING));
  b_->SetMigration(
      AgentSide(v1::MIGRATION_ROLE_DESTINATION, v1::MIGRATION_PHASE_TRANSFERRING));
  StartOrchestrator();
  v1::Migration done = WaitTerminal(id);
  EXPECT_EQ(done.phase(), v1::MIGRATION_PHASE_FAILED);
  EXPECT_EQ(done.result().failure(), v1::MIGRATION_FAILURE_INTERRUPTED);
  EXPECT_TRUE(a_->Called("CancelMigration"));
  EXPECT_TRUE(b_->Called("CancelMigration"));
  EXPECT_FALSE(b_->Called("FinishIncoming"));
  EXPECT_EQ(Vm("vm1").status().host(), "a");
  const std::vector<v1::MigrationPhase> phases = Phases(done);
  EXPECT_NE(std::find(phases.begin(), phases.end(), v1::MIGRATION_PHASE_ROLLING_BACK),
            phases.end());
}

TEST_F(OrchestratorTest, RecoveryResumesAPausedSourceOnlyWithTheDestinationsAbort) {
  // The source switched over; the destination restarted (forgot it).
  const std::string id = PlantMigration(v1::MIGRATION_PHASE_SWITCHOVER);
  a_->SetMigration(AgentSide(v1::MIGRATION_ROLE_SOURCE, v1::MIGRATION_PHASE_SWITCHOVER));
  StartOrchestrator();
  v1::Migration done = WaitTerminal(id);
  EXPECT_EQ(done.phase(), v1::MIGRATION_PHASE_FAILED);
  EXPECT_TRUE(a_->Called("ConfirmOutgoing:CONFIRM_OUTCOME_ABORTED"));
  EXPECT_EQ(Vm("vm1").status().host(), "a");
}

TEST_F(OrchestratorTest, RecoveryWaitsWhileTheOutcomeDependsOnASilentAgent) {
  // Source paused past switchover, destination unreachable: it may be
  // ARMED or even RESUMED, so nothing may be decided yet.
  const std::string id = PlantMigration(v1::MIGRATION_PHASE_SWITCHOVER);
  a_->SetMigration(AgentSide(v1::MIGRATION_ROLE_SOURCE, v1::MIGRATION_PHASE_SWITCHOVER));
  b_->Stop();
  StartOrchestrator();
  absl::SleepFor(absl::Milliseconds(800));
  v1::Migration m = *store_->Get<v1::Migration>(id);
  EXPECT_FALSE(scheduler::IsTerminal(m.phase())) << m.ShortDebugString();
  EXPECT_FALSE(a_->Called("ConfirmOutgoing:CONFIRM_OUTCOME_ABORTED"));
  EXPECT_FALSE(a_->Called("CancelMigration"));
}

TEST_F(OrchestratorTest, RecoveryFailsAPreparationNobodyStarted) {
  const std::string id = PlantMigration(v1::MIGRATION_PHASE_PREPARING);
  StartOrchestrator();
  v1::Migration done = WaitTerminal(id);
  EXPECT_EQ(done.phase(), v1::MIGRATION_PHASE_FAILED);
  EXPECT_EQ(done.result().vm_host(), "a");
  EXPECT_TRUE(Vm("vm1").status().migration_id().empty());
}

TEST(ProgressSamplesTest, KeepsLastOfEachRoundAndOnePerSecond) {
  v1::Migration m;
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  auto sample = [&](uint32_t round, absl::Duration at) {
    v1::MigrationProgress p;
    p.set_round(round);
    ToProto(t0 + at, p.mutable_sample_time());
    AddProgressSample(p, &m);
  };
  // Round 0: samples every 300 ms for 3 s -> about one per second kept.
  for (int i = 0; i < 10; ++i) sample(0, absl::Milliseconds(300 * i));
  EXPECT_LE(m.progress_samples_size(), 4);
  EXPECT_GE(m.progress_samples_size(), 3);
  // Round 1 begins: round 0 collapses to its last sample.
  sample(1, absl::Milliseconds(3000));
  ASSERT_EQ(m.progress_samples_size(), 2);
  EXPECT_EQ(FromProto(m.progress_samples(0).sample_time()), t0 + absl::Milliseconds(2700));
  // Bounded.
  for (uint32_t r = 2; r < 2000; ++r) sample(r, absl::Seconds(r));
  EXPECT_EQ(m.progress_samples_size(), kMaxProgressSamples);
  EXPECT_EQ(m.progress_samples(kMaxProgressSamples - 1).round(), 1999u);
}

TEST(PolicyTest, MergeOverridesOnlyWhatIsSet) {
  v1::MigrationPolicy o;
  o.set_streams(2);
  o.set_auto_converge(false);
  v1::MigrationPolicy p = MergeMigrationPolicy(DefaultMigrationPolicy(), o);
  EXPECT_EQ(p.streams(), 2u);
  EXPECT_FALSE(p.auto_converge());
  EXPECT_EQ(p.max_downtime().nanos(), 300000000);
  EXPECT_EQ(p.completion_timeout_per_gib().seconds(), 800);
  EXPECT_TRUE(ValidateMigrationPolicy(p).ok());
  EXPECT_EQ(CompletionDeadline(p, uint64_t{2} << 30), absl::Seconds(1600));
}

}  // namespace
}  // namespace ferry::controller
