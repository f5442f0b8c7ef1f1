// ControllerService end to end inside one process: the real service, store,
// host registry and orchestrator on a loopback gRPC port, with fake agents
// (controller/orchestrator/fake_agent.h). Bad input on every RPC gets the
// right code and leaves the store untouched.
#include "controller/api/controller_service.h"

#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "controller/orchestrator/fake_agent.h"
#include "gtest/gtest.h"

namespace ferry::controller {
namespace {

using testing::FakeAgent;

std::string TempDir() {
  const char* t = std::getenv("TEST_TMPDIR");
  static int n = 0;
  return absl::StrCat(t ? t : "/tmp", "/svc-", getpid(), "-", ++n);
}

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  return ctx;
}

class ControllerServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir();
    Boot();
    if (HasFatalFailure() || IsSkipped()) return;
    a_ = std::make_unique<FakeAgent>("a");
    b_ = std::make_unique<FakeAgent>("b");
    a_->peer = b_.get();
    b_->peer = a_.get();
    Register(*a_, "i-a");
    Register(*b_, "i-b");
  }
  // A controller restart: everything torn down, the store reopened from
  // disk, the agents registering again.
  void Restart() {
    TearDown();
    stub_.reset();
    server_.reset();
    service_.reset();
    hosts_.reset();
    orch_.reset();
    store_.reset();
    Boot();
    if (HasFatalFailure() || IsSkipped()) return;
    Register(*a_, "i-a");
    Register(*b_, "i-b");
  }
  void Boot() {
    auto store = Store::Open(dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    OrchestratorOptions o;
    o.schedule_interval = absl::Milliseconds(50);
    o.rpc_timeout = absl::Seconds(2);
    o.agent_lost_after = absl::Milliseconds(500);
    orch_ = std::make_unique<Orchestrator>(store_.get(), o);
    HostRegistryOptions h;
    h.heartbeat_interval = absl::Milliseconds(100);
    h.clock = [this] { return now_; };
    h.on_change = [this] { orch_->Kick(); };
    hosts_ = std::make_unique<HostRegistry>(store_.get(), h);
    service_ = std::make_unique<ControllerServiceImpl>(store_.get(), hosts_.get(), orch_.get());
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(service_.get());
    server_ = b.BuildAndStart();
    if (server_ == nullptr) GTEST_SKIP() << "cannot bind a loopback port";
    stub_ = v1::ControllerService::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
    ASSERT_TRUE(orch_->Start().ok());
  }
  void TearDown() override {
    if (server_) server_->Shutdown(absl::ToChronoTime(absl::Now()));
    if (orch_) orch_->Shutdown();
  }

  void Register(FakeAgent& agent, const std::string& instance) {
    v1::RegisterHostRequest req;
    *req.mutable_info() = agent.Info(instance);
    v1::RegisterHostResponse resp;
    grpc::Status s = stub_->RegisterHost(Ctx().get(), req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.host().readiness(), v1::HOST_READINESS_READY);
    EXPECT_EQ(resp.heartbeat_interval().nanos(), 100000000);
  }

  v1::Vm CreateVm(const std::string& name, const std::string& host = "") {
    v1::CreateVmRequest req;
    req.mutable_spec()->set_name(name);
    req.mutable_spec()->set_memory_bytes(64 << 20);
    req.mutable_spec()->set_vcpu_count(1);
    req.mutable_spec()->set_backend(v1::VM_BACKEND_SOFT);
    req.set_host(host);
    v1::Vm vm;
    grpc::Status s = stub_->CreateVm(Ctx().get(), req, &vm);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return vm;
  }

  std::string dir_;
  absl::Time now_ = absl::Now();
  std::unique_ptr<Store> store_;
  std::unique_ptr<Orchestrator> orch_;
  std::unique_ptr<HostRegistry> hosts_;
  std::unique_ptr<ControllerServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::ControllerService::Stub> stub_;
  std::unique_ptr<FakeAgent> a_, b_;
};

TEST_F(ControllerServiceTest, CreateVmPersistsPhaseAndPlacement) {
  v1::Vm vm = CreateVm("web-1");
  EXPECT_EQ(vm.status().phase(), v1::VM_PHASE_RUNNING);
  EXPECT_FALSE(vm.uid().empty());
  FakeAgent& on = vm.status().host() == "a" ? *a_ : *b_;
  EXPECT_TRUE(on.HasVm("web-1"));
  v1::ListEventsRequest ereq;
  ereq.set_object_name("web-1");
  v1::ListEventsResponse events;
  ASSERT_TRUE(stub_->ListEvents(Ctx().get(), ereq, &events).ok());
  ASSERT_EQ(events.events_size(), 2);  // scheduled (CREATING), then created
  EXPECT_EQ(events.events(0).reason(), "VmScheduled");
  EXPECT_EQ(events.events(1).reason(), "VmCreated");

  // Idempotent retry by request_id.
  v1::CreateVmRequest req;
  req.mutable_spec()->set_name("web-2");
  req.mutable_spec()->set_memory_bytes(64 << 20);
  req.mutable_spec()->set_vcpu_count(1);
  req.set_request_id("r-1");
  v1::Vm first, second;
  ASSERT_TRUE(stub_->CreateVm(Ctx().get(), req, &first).ok());
  ASSERT_TRUE(stub_->CreateVm(Ctx().get(), req, &second).ok());
  EXPECT_EQ(first.uid(), second.uid());
}

// request_id is persisted: a retry after a controller restart returns the
// first result; the same id with another request is INVALID_ARGUMENT and
// creates nothing; an expired record is ignored.
TEST_F(ControllerServiceTest, RequestIdSurvivesRestartAndRejectsAnotherRequest) {
  v1::CreateVmRequest req;
  req.mutable_spec()->set_name("idem");
  req.mutable_spec()->set_memory_bytes(64 << 20);
  req.mutable_spec()->set_vcpu_count(1);
  req.mutable_spec()->set_backend(v1::VM_BACKEND_SOFT);
  (*req.mutable_spec()->mutable_labels())["tier"] = "web";
  (*req.mutable_spec()->mutable_labels())["app"] = "shop";
  req.set_request_id("vm-req-1");
  v1::Vm first;
  ASSERT_TRUE(stub_->CreateVm(Ctx().get(), req, &first).ok());
  CreateVm("other");
  v1::CreateMigrationRequest mreq;
  mreq.set_vm_name("idem");
  mreq.set_request_id("mig-req-1");
  v1::Migration m1;
  ASSERT_TRUE(stub_->CreateMigration(Ctx().get(), mreq, &m1).ok());

  Restart();
  ASSERT_FALSE(HasFatalFailure());
  v1::Vm again;
  grpc::Status s = stub_->CreateVm(Ctx().get(), req, &again);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(again.uid(), first.uid()) << "the retry returns the first VM";
  v1::Migration m2;
  s = stub_->CreateMigration(Ctx().get(), mreq, &m2);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(m2.id(), m1.id()) << "the retry returns the first migration";

  // Same id, another request: refused, nothing created.
  v1::CreateVmRequest different = req;
  different.mutable_spec()->set_name("idem-2");
  v1::Vm vm;
  s = stub_->CreateVm(Ctx().get(), different, &vm);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("vm-req-1"), std::string::npos) << s.error_message();
  EXPECT_TRUE(absl::IsNotFound(store_->Get<v1::Vm>("idem-2").status()));
  v1::CreateMigrationRequest other_mig;
  other_mig.set_vm_name("other");
  other_mig.set_request_id("mig-req-1");
  v1::Migration m3;
  EXPECT_EQ(stub_->CreateMigration(Ctx().get(), other_mig, &m3).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(store_->Get<v1::Vm>("other")->status().migration_id().empty());

  // An expired record is ignored (and pruned): the id is free again.
  ASSERT_TRUE(store_->PutAux("request/vm/vm-req-old", "1000 0000000000000000 gone").ok());
  v1::CreateVmRequest reuse = different;
  reuse.set_request_id("vm-req-old");
  s = stub_->CreateVm(Ctx().get(), reuse, &vm);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(vm.spec().name(), "idem-2");
}

// DeleteVm lands while the agent is still creating the VM (the fake agent
// runs it from inside its CreateVm, before it creates anything): the
// delete finds nothing on the agent and drops the record; the create must
// then remove the copy the agent started instead of leaving it orphaned.
TEST_F(ControllerServiceTest, DeleteRacingCreateLeavesNoOrphan) {
  grpc::Status delete_status;
  bool fired = false;
  a_->on_call = [&](const std::string& call) {
    if (call != "CreateVm" || fired) return;
    fired = true;
    v1::DeleteVmRequest dreq;
    dreq.set_name("racy");
    v1::DeleteVmResponse dresp;
    delete_status = stub_->DeleteVm(Ctx().get(), dreq, &dresp);
  };
  v1::CreateVmRequest req;
  req.mutable_spec()->set_name("racy");
  req.mutable_spec()->set_memory_bytes(64 << 20);
  req.mutable_spec()->set_vcpu_count(1);
  req.set_host("a");
  v1::Vm vm;
  grpc::Status s = stub_->CreateVm(Ctx().get(), req, &vm);
  a_->on_call = nullptr;
  ASSERT_TRUE(fired);
  EXPECT_TRUE(delete_status.ok()) << delete_status.error_message();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ABORTED) << s.error_message();
  EXPECT_NE(s.error_message().find("deleted while it was being created"), std::string::npos)
      << s.error_message();
  EXPECT_FALSE(a_->HasVm("racy")) << "orphan left running on the agent";
  EXPECT_TRUE(a_->Vms().empty());
  EXPECT_TRUE(absl::IsNotFound(store_->Get<v1::Vm>("racy").status()));
  v1::ListEventsRequest ereq;
  ereq.set_object_name("racy");
  v1::ListEventsResponse events;
  ASSERT_TRUE(stub_->ListEvents(Ctx().get(), ereq, &events).ok());
  ASSERT_FALSE(events.events().empty());
  EXPECT_EQ(events.events(events.events_size() - 1).reason(), "VmCreateAbandoned");
  // The name is free again and a plain create works.
  EXPECT_EQ(CreateVm("racy", "a").status().phase(), v1::VM_PHASE_RUNNING);
  EXPECT_TRUE(a_->HasVm("racy"));
}

// A heartbeat rewrites the VM record while DeleteVm waits for the agent:
// the delete must still remove the record (the copy is gone), not fail on
// the stale resource_version and leave a record of a VM that does not run.
TEST_F(ControllerServiceTest, DeleteSurvivesAConcurrentRecordRefresh) {
  v1::Vm vm = CreateVm("refreshed", "a");
  ASSERT_EQ(vm.status().phase(), v1::VM_PHASE_RUNNING);
  a_->on_call = [&](const std::string& call) {
    if (call != "DeleteVm") return;
    v1::Vm cur = *store_->Get<v1::Vm>("refreshed");
    cur.mutable_status()->set_message("refreshed by a heartbeat");
    EXPECT_TRUE(store_->Update(cur).ok());
  };
  v1::DeleteVmRequest dreq;
  dreq.set_name("refreshed");
  v1::DeleteVmResponse dresp;
  grpc::Status s = stub_->DeleteVm(Ctx().get(), dreq, &dresp);
  a_->on_call = nullptr;
  EXPECT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
  EXPECT_TRUE(absl::IsNotFound(store_->Get<v1::Vm>("refreshed").status()));
  EXPECT_FALSE(a_->HasVm("refreshed"));
}

TEST_F(ControllerServiceTest, AgentRefusalLeavesNoRecord) {
  a_->set_refuse_create(true);
  v1::CreateVmRequest req;
  req.mutable_spec()->set_name("big");
  req.mutable_spec()->set_memory_bytes(64 << 20);
  req.mutable_spec()->set_vcpu_count(1);
  req.set_host("a");
  v1::Vm vm;
  EXPECT_EQ(stub_->CreateVm(Ctx().get(), req, &vm).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(absl::IsNotFound(store_->Get<v1::Vm>("big").status()));
}

TEST_F(ControllerServiceTest, BadInputOnEveryRpcChangesNothing) {
  CreateVm("vm1", "a");
  const uint64_t before = store_->revision();
  auto code = [](const grpc::Status& s) { return s.error_code(); };
  using grpc::StatusCode;

  v1::RegisterHostRequest reg;  // no info
  v1::RegisterHostResponse reg_resp;
  EXPECT_EQ(code(stub_->RegisterHost(Ctx().get(), reg, &reg_resp)), StatusCode::INVALID_ARGUMENT);
  *reg.mutable_info() = a_->Info("x");
  reg.mutable_info()->set_name("Bad_Name");
  EXPECT_EQ(code(stub_->RegisterHost(Ctx().get(), reg, &reg_resp)), StatusCode::INVALID_ARGUMENT);

  v1::HeartbeatRequest hb;
  v1::HeartbeatResponse hb_resp;
  EXPECT_EQ(code(stub_->Heartbeat(Ctx().get(), hb, &hb_resp)), StatusCode::INVALID_ARGUMENT);
  hb.set_host_name("nope");
  hb.set_instance_id("i");
  EXPECT_EQ(code(stub_->Heartbeat(Ctx().get(), hb, &hb_resp)), StatusCode::FAILED_PRECONDITION);
  hb.set_host_name("a");
  hb.set_instance_id("not-the-registered-one");
  EXPECT_EQ(code(stub_->Heartbeat(Ctx().get(), hb, &hb_resp)), StatusCode::FAILED_PRECONDITION);

  v1::Host host;
  v1::GetHostRequest gh;
  EXPECT_EQ(code(stub_->GetHost(Ctx().get(), gh, &host)), StatusCode::INVALID_ARGUMENT);
  gh.set_name("nope");
  EXPECT_EQ(code(stub_->GetHost(Ctx().get(), gh, &host)), StatusCode::NOT_FOUND);
  v1::CordonHostRequest ch;
  ch.set_name("nope");
  EXPECT_EQ(code(stub_->CordonHost(Ctx().get(), ch, &host)), StatusCode::NOT_FOUND);
  v1::UncordonHostRequest uh;
  EXPECT_EQ(code(stub_->UncordonHost(Ctx().get(), uh, &host)), StatusCode::INVALID_ARGUMENT);
  uh.set_name("nope");
  EXPECT_EQ(code(stub_->UncordonHost(Ctx().get(), uh, &host)), StatusCode::NOT_FOUND);
  v1::ListHostsRequest lh;
  lh.set_page_size(-1);
  v1::ListHostsResponse lh_resp;
  EXPECT_EQ(code(stub_->ListHosts(Ctx().get(), lh, &lh_resp)), StatusCode::INVALID_ARGUMENT);
  lh.set_page_size(0);
  lh.set_label_selector("a in (");
  EXPECT_EQ(code(stub_->ListHosts(Ctx().get(), lh, &lh_resp)), StatusCode::INVALID_ARGUMENT);

  for (const char* name : {"nope", ""}) {
    v1::DrainHostRequest dr;
    dr.set_name(name);
    grpc::ClientContext ctx;
    auto reader = stub_->DrainHost(&ctx, dr);
    v1::DrainHostUpdate u;
    EXPECT_FALSE(reader->Read(&u));
    EXPECT_EQ(code(reader->Finish()),
              *name ? StatusCode::NOT_FOUND : StatusCode::INVALID_ARGUMENT);
  }
  {
    v1::DrainHostRequest dr;  // known host, invalid policy: not even cordoned
    dr.set_name("a");
    dr.mutable_policy()->set_streams(40);
    grpc::ClientContext ctx;
    auto reader = stub_->DrainHost(&ctx, dr);
    v1::DrainHostUpdate u;
    EXPECT_FALSE(reader->Read(&u));
    EXPECT_EQ(code(reader->Finish()), StatusCode::INVALID_ARGUMENT);
  }

  v1::Vm vm;
  v1::CreateVmRequest cv;
  EXPECT_EQ(code(stub_->CreateVm(Ctx().get(), cv, &vm)), StatusCode::INVALID_ARGUMENT);
  cv.mutable_spec()->set_name("UPPER");
  cv.mutable_spec()->set_memory_bytes(4096);
  cv.mutable_spec()->set_vcpu_count(1);
  EXPECT_EQ(code(stub_->CreateVm(Ctx().get(), cv, &vm)), StatusCode::INVALID_ARGUMENT);
  cv.mutable_spec()->set_name("ok");
  cv.mutable_spec()->set_memory_bytes(1000);
  EXPECT_EQ(code(stub_->CreateVm(Ctx().get(), cv, &vm)), StatusCode::INVALID_ARGUMENT);
  cv.mutable_spec()->set_memory_bytes(4096);
  cv.mutable_spec()->set_vcpu_count(0);
  EXPECT_EQ(code(stub_->CreateVm(Ctx().get(), cv, &vm)), StatusCode::INVALID_ARGUMENT);
  cv.mutable_spec()->set_vcpu_count(1);
  cv.set_host("nope");
  EXPECT_EQ(code(stub_->CreateVm(Ctx().get(), cv, &vm)), StatusCode::NOT_FOUND);
  cv.clear_host();
  cv.mutable_spec()->set_name("vm1");
  EXPECT_EQ(code(stub_->CreateVm(Ctx().get(), cv, &vm)), StatusCode::ALREADY_EXISTS);
  cv.mutable_spec()->set_name("huge");
  cv.mutable_spec()->set_memory_bytes(uint64_t{64} << 30);
  EXPECT_EQ(code(stub_->CreateVm(Ctx().get(), cv, &vm)), StatusCode::RESOURCE_EXHAUSTED);

  v1::GetVmRequest gv;
  EXPECT_EQ(code(stub_->GetVm(Ctx().get(), gv, &vm)), StatusCode::INVALID_ARGUMENT);
  gv.set_name("nope");
  EXPECT_EQ(code(stub_->GetVm(Ctx().get(), gv, &vm)), StatusCode::NOT_FOUND);
  v1::ListVmsRequest lv;
  lv.set_page_token("garbage");
  v1::ListVmsResponse lv_resp;
  EXPECT_EQ(code(stub_->ListVms(Ctx().get(), lv, &lv_resp)), StatusCode::INVALID_ARGUMENT);
  v1::DeleteVmRequest dv;
  v1::DeleteVmResponse dv_resp;
  EXPECT_EQ(code(stub_->DeleteVm(Ctx().get(), dv, &dv_resp)), StatusCode::INVALID_ARGUMENT);
  dv.set_name("nope");
  EXPECT_EQ(code(stub_->DeleteVm(Ctx().get(), dv, &dv_resp)), StatusCode::NOT_FOUND);
  dv.set_name("vm1");
  dv.set_resource_version(1);  // stale
  EXPECT_EQ(code(stub_->DeleteVm(Ctx().get(), dv, &dv_resp)), StatusCode::ABORTED);
  EXPECT_TRUE(a_->HasVm("vm1"));

  v1::Migration m;
  v1::CreateMigrationRequest cm;
  EXPECT_EQ(code(stub_->CreateMigration(Ctx().get(), cm, &m)), StatusCode::INVALID_ARGUMENT);
  cm.set_vm_name("nope");
  EXPECT_EQ(code(stub_->CreateMigration(Ctx().get(), cm, &m)), StatusCode::NOT_FOUND);
  cm.set_vm_name("vm1");
  cm.set_target_host("a");
  EXPECT_EQ(code(stub_->CreateMigration(Ctx().get(), cm, &m)), StatusCode::INVALID_ARGUMENT);
  cm.set_target_host("nope");
  EXPECT_EQ(code(stub_->CreateMigration(Ctx().get(), cm, &m)), StatusCode::NOT_FOUND);
  cm.clear_target_host();
  cm.mutable_policy()->set_throttle_max_percent(150);
  EXPECT_EQ(code(stub_->CreateMigration(Ctx().get(), cm, &m)), StatusCode::INVALID_ARGUMENT);
  v1::GetMigrationRequest gm;
  EXPECT_EQ(code(stub_->GetMigration(Ctx().get(), gm, &m)), StatusCode::INVALID_ARGUMENT);
  gm.set_id("nope");
  EXPECT_EQ(code(stub_->GetMigration(Ctx().get(), gm, &m)), StatusCode::NOT_FOUND);
  v1::CancelMigrationRequest cn;
  cn.set_id("nope");
  EXPECT_EQ(code(stub_->CancelMigration(Ctx().get(), cn, &m)), StatusCode::NOT_FOUND);
  {
    v1::WatchMigrationRequest w;
    w.set_id("nope");
    grpc::ClientContext ctx;
    auto reader = stub_->WatchMigration(&ctx, w);
    EXPECT_FALSE(reader->Read(&m));
    EXPECT_EQ(code(reader->Finish()), StatusCode::NOT_FOUND);
  }
  v1::ListMigrationsRequest lm;
  lm.set_page_size(-5);
  v1::ListMigrationsResponse lm_resp;
  EXPECT_EQ(code(stub_->ListMigrations(Ctx().get(), lm, &lm_resp)), StatusCode::INVALID_ARGUMENT);
  v1::ListEventsRequest le;
  le.set_page_token("not-a-number");
  v1::ListEventsResponse le_resp;
  EXPECT_EQ(code(stub_->ListEvents(Ctx().get(), le, &le_resp)), StatusCode::INVALID_ARGUMENT);

  EXPECT_EQ(store_->revision(), before) << "a refused call wrote to the store";
  EXPECT_FALSE(store_->Get<v1::Host>("a")->cordoned());
}

TEST_F(ControllerServiceTest, MigrateWatchAndListByHost) {
  CreateVm("vm1", "a");
  v1::CreateMigrationRequest cm;
  cm.set_vm_name("vm1");
  v1::Migration m;
  ASSERT_TRUE(stub_->CreateMigration(Ctx().get(), cm, &m).ok());
  v1::Migration dup;
  EXPECT_EQ(stub_->CreateMigration(Ctx().get(), cm, &dup).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  v1::WatchMigrationRequest w;
  w.set_id(m.id());
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  auto reader = stub_->WatchMigration(&ctx, w);
  v1::Migration got, last;
  int updates = 0;
  while (reader->Read(&got)) {
    EXPECT_EQ(got.progress_samples_size(), 0) << "Watch sends the BASIC view";
    last = got;
    ++updates;
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_GE(updates, 3);
  EXPECT_EQ(last.phase(), v1::MIGRATION_PHASE_SUCCEEDED);
  EXPECT_TRUE(b_->HasVm("vm1"));
  EXPECT_FALSE(a_->HasVm("vm1"));

  v1::ListVmsRequest lv;
  lv.set_host("b");
  v1::ListVmsResponse vms;
  ASSERT_TRUE(stub_->ListVms(Ctx().get(), lv, &vms).ok());
  ASSERT_EQ(vms.vms_size(), 1);
  v1::ListMigrationsRequest lm;
  lm.set_host("a");
  lm.add_phases(v1::MIGRATION_PHASE_SUCCEEDED);
  v1::ListMigrationsResponse ms;
  ASSERT_TRUE(stub_->ListMigrations(Ctx().get(), lm, &ms).ok());
  EXPECT_EQ(ms.migrations_size(), 1);
  lm.clear_phases();
  lm.add_phases(v1::MIGRATION_PHASE_FAILED);
  ASSERT_TRUE(stub_->ListMigrations(Ctx().get(), lm, &ms).ok());
  EXPECT_EQ(ms.migrations_size(), 0);
  v1::GetMigrationRequest gm;
  gm.set_id(m.id());
  ASSERT_TRUE(stub_->GetMigration(Ctx().get(), gm, &got).ok());
  EXPECT_GT(got.progress_samples_size(), 0) << "Get defaults to the FULL view";
}

TEST_F(ControllerServiceTest, DrainMovesEveryVmAndReattaches) {
  CreateVm("d1", "a");
  CreateVm("d2", "a");
  v1::DrainHostRequest dr;
  dr.set_name("a");
  std::map<std::string, v1::DrainOutcome> outcome;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    auto reader = stub_->DrainHost(&ctx, dr);
    v1::DrainHostUpdate u;
    while (reader->Read(&u)) outcome[u.vm_name()] = u.outcome();
    ASSERT_TRUE(reader->Finish().ok());
  }
  EXPECT_EQ(outcome["d1"], v1::DRAIN_OUTCOME_MIGRATED);
  EXPECT_EQ(outcome["d2"], v1::DRAIN_OUTCOME_MIGRATED);
  EXPECT_TRUE(store_->Get<v1::Host>("a")->cordoned());
  EXPECT_EQ(store_->Get<v1::Vm>("d1")->status().host(), "b");
  // Again: nothing left to do, the stream ends at once.
  grpc::ClientContext ctx;
  auto reader = stub_->DrainHost(&ctx, dr);
  v1::DrainHostUpdate u;
  EXPECT_FALSE(reader->Read(&u));
  EXPECT_TRUE(reader->Finish().ok());
}

TEST_F(ControllerServiceTest, DrainOutlivesItsStreamAndReattaches) {
  CreateVm("d1", "a");
  a_->set_hold_transfer(true);
  v1::DrainHostRequest dr;
  dr.set_name("a");
  std::string id;
  {
    grpc::ClientContext ctx;
    auto reader = stub_->DrainHost(&ctx, dr);
    v1::DrainHostUpdate u;
    ASSERT_TRUE(reader->Read(&u));
    EXPECT_EQ(u.outcome(), v1::DRAIN_OUTCOME_STARTED);
    EXPECT_EQ(u.vms_remaining(), 1u);
    id = u.migration_id();
    ctx.TryCancel();  // the client goes away mid-drain
    (void)reader->Finish();
  }
  absl::SleepFor(absl::Milliseconds(200));
  absl::StatusOr<v1::Migration> m = store_->Get<v1::Migration>(id);
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(scheduler::IsTerminal(m->phase())) << "the drain goes on without its stream";
  EXPECT_EQ(m->drain_host(), "a");

  // Calling again re-attaches to the same migration instead of a new one.
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  auto reader = stub_->DrainHost(&ctx, dr);
  v1::DrainHostUpdate u;
  ASSERT_TRUE(reader->Read(&u));
  EXPECT_EQ(u.outcome(), v1::DRAIN_OUTCOME_STARTED);
  EXPECT_EQ(u.migration_id(), id);
  a_->set_hold_transfer(false);
  ASSERT_TRUE(reader->Read(&u));
  EXPECT_EQ(u.outcome(), v1::DRAIN_OUTCOME_MIGRATED);
  EXPECT_EQ(u.migration_id(), id);
  EXPECT_EQ(u.vms_remaining(), 0u);
  EXPECT_FALSE(reader->Read(&u));
  EXPECT_TRUE(reader->Finish().ok());
  v1::ListMigrationsRequest lm;
  lm.set_vm_name("d1");
  v1::ListMigrationsResponse ms;
  ASSERT_TRUE(stub_->ListMigrations(Ctx().get(), lm, &ms).ok());
  EXPECT_EQ(ms.migrations_size(), 1);
}

TEST_F(ControllerServiceTest, DrainMaxParallelHoldsTheRestPending) {
  CreateVm("p1", "a");
  CreateVm("p2", "a");
  a_->set_hold_transfer(true);
  v1::DrainHostRequest dr;
  dr.set_name("a");
  dr.set_max_parallel(1);
  grpc::ClientContext ctx;
  auto reader = stub_->DrainHost(&ctx, dr);
  v1::DrainHostUpdate u;
  ASSERT_TRUE(reader->Read(&u));
  ASSERT_TRUE(reader->Read(&u));
  // One in flight, the other waits with the drain's limit as its reason.
  v1::ListMigrationsRequest lm;
  v1::ListMigrationsResponse ms;
  bool held = false;
  const absl::Time end = absl::Now() + absl::Seconds(5);
  while (!held && absl::Now() < end) {
    ASSERT_TRUE(stub_->ListMigrations(Ctx().get(), lm, &ms).ok());
    int in_flight = 0, pending = 0;
    for (const v1::Migration& m : ms.migrations()) {
      if (scheduler::IsInFlight(m.phase())) ++in_flight;
      if (m.phase() == v1::MIGRATION_PHASE_PENDING &&
          m.pending_reason() == v1::PENDING_REASON_CONCURRENCY_LIMIT &&
          m.pending_message().find("drain") != std::string::npos) {
        ++pending;
      }
    }
    EXPECT_LE(in_flight, 1);
    held = in_flight == 1 && pending == 1;
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_TRUE(held) << ms.ShortDebugString();
  a_->set_hold_transfer(false);
  int migrated = 0;
  while (reader->Read(&u)) migrated += u.outcome() == v1::DRAIN_OUTCOME_MIGRATED;
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(migrated, 2);
}

TEST_F(ControllerServiceTest, SilentHostGoesUnknownAndRestartedAgentLosesItsVms) {
  CreateVm("vm1", "a");
  now_ += absl::Milliseconds(350);  // > 3 x 100 ms without a heartbeat
  hosts_->CheckHeartbeats();
  EXPECT_EQ(store_->Get<v1::Host>("a")->readiness(), v1::HOST_READINESS_UNKNOWN);
  // Nothing is placed on an UNKNOWN host.
  v1::CreateVmRequest cv;
  cv.mutable_spec()->set_name("pinned");
  cv.mutable_spec()->set_memory_bytes(64 << 20);
  cv.mutable_spec()->set_vcpu_count(1);
  cv.set_host("a");
  v1::Vm vm;
  EXPECT_EQ(stub_->CreateVm(Ctx().get(), cv, &vm).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  // A heartbeat brings it back.
  v1::HeartbeatRequest hb;
  hb.set_host_name("a");
  hb.set_instance_id("i-a");
  hb.set_healthy(true);
  v1::HeartbeatResponse hr;
  ASSERT_TRUE(stub_->Heartbeat(Ctx().get(), hb, &hr).ok());
  EXPECT_EQ(store_->Get<v1::Host>("a")->readiness(), v1::HOST_READINESS_READY);

  // Re-registered with a new instance id: its VMs are gone.
  Register(*a_, "i-a-2");
  v1::Vm lost = *store_->Get<v1::Vm>("vm1");
  EXPECT_EQ(lost.status().phase(), v1::VM_PHASE_FAILED);
  EXPECT_NE(lost.status().message().find("restarted"), std::string::npos);
  // The old instance's heartbeats are refused: register again.
  EXPECT_EQ(stub_->Heartbeat(Ctx().get(), hb, &hr).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(ControllerServiceTest, HeartbeatsReconcileVmRecords) {
  CreateVm("vm1", "a");
  CreateVm("vm2", "a");
  v1::HeartbeatRequest hb;
  hb.set_host_name("a");
  hb.set_instance_id("i-a");
  hb.set_healthy(true);
  v1::VmSummary* s1 = hb.add_vms();
  s1->set_name("vm1");
  s1->set_uid(store_->Get<v1::Vm>("vm1")->uid());
  s1->set_phase(v1::VM_PHASE_STOPPED);  // the guest shut down
  v1::HeartbeatResponse hr;
  ASSERT_TRUE(stub_->Heartbeat(Ctx().get(), hb, &hr).ok());
  EXPECT_EQ(store_->Get<v1::Vm>("vm1")->status().phase(), v1::VM_PHASE_STOPPED);
  // vm2 is not reported: not lost at once (a report may race a handoff) ...
  EXPECT_EQ(store_->Get<v1::Vm>("vm2")->status().phase(), v1::VM_PHASE_RUNNING);
  // ... but after 3 intervals of absence it is.
  absl::SleepFor(absl::Milliseconds(350));
  ASSERT_TRUE(stub_->Heartbeat(Ctx().get(), hb, &hr).ok());
  v1::Vm vm2 = *store_->Get<v1::Vm>("vm2");
  EXPECT_EQ(vm2.status().phase(), v1::VM_PHASE_FAILED);
  EXPECT_NE(vm2.status().message().find("lost"), std::string::npos);
}

TEST_F(ControllerServiceTest, HeartbeatFiguresShowInGetAndListWithoutStoreWrites) {
  CreateVm("vm1", "a");
  const uint64_t version = store_->Get<v1::Vm>("vm1")->resource_version();
  v1::HeartbeatRequest hb;
  hb.set_host_name("a");
  hb.set_instance_id("i-a");
  hb.set_healthy(true);
  v1::VmSummary* s = hb.add_vms();
  s->set_name("vm1");
  s->set_uid(store_->Get<v1::Vm>("vm1")->uid());
  s->set_phase(v1::VM_PHASE_RUNNING);
  s->set_dirty_rate_bytes_per_s(123456);
  s->mutable_guest()->set_pages_written(777);
  v1::HeartbeatResponse hr;
  ASSERT_TRUE(stub_->Heartbeat(Ctx().get(), hb, &hr).ok());

  v1::GetVmRequest get;
  get.set_name("vm1");
  v1::Vm vm;
  ASSERT_TRUE(stub_->GetVm(Ctx().get(), get, &vm).ok());
  EXPECT_EQ(vm.status().dirty_rate_bytes_per_s(), 123456u);
  EXPECT_EQ(vm.status().guest().pages_written(), 777u);
  v1::ListVmsResponse list;
  ASSERT_TRUE(stub_->ListVms(Ctx().get(), v1::ListVmsRequest(), &list).ok());
  ASSERT_EQ(list.vms_size(), 1);
  EXPECT_EQ(list.vms(0).status().guest().pages_written(), 777u);
  // Figures that change every second are not written to RocksDB.
  EXPECT_EQ(store_->Get<v1::Vm>("vm1")->resource_version(), version);

  // A report from another host (a stale copy) is not laid over the record.
  hb.set_host_name("b");
  hb.set_instance_id("i-b");
  hb.mutable_vms(0)->mutable_guest()->set_pages_written(1);
  (void)stub_->Heartbeat(Ctx().get(), hb, &hr);
  ASSERT_TRUE(stub_->GetVm(Ctx().get(), get, &vm).ok());
  EXPECT_NE(vm.status().guest().pages_written(), 1u);
}

TEST_F(ControllerServiceTest, CordonRefusesTargetAndUncordonRestores) {
  CreateVm("vm1", "a");
  v1::CordonHostRequest ch;
  ch.set_name("b");
  ch.set_reason("disk swap");
  v1::Host host;
  ASSERT_TRUE(stub_->CordonHost(Ctx().get(), ch, &host).ok());
  EXPECT_TRUE(host.cordoned());
  EXPECT_EQ(host.cordon_reason(), "disk swap");
  v1::CreateMigrationRequest cm;
  cm.set_vm_name("vm1");
  cm.set_target_host("b");
  v1::Migration m;
  EXPECT_EQ(stub_->CreateMigration(Ctx().get(), cm, &m).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  v1::UncordonHostRequest uh;
  uh.set_name("b");
  ASSERT_TRUE(stub_->UncordonHost(Ctx().get(), uh, &host).ok());
  EXPECT_FALSE(host.cordoned());
  EXPECT_TRUE(stub_->CreateMigration(Ctx().get(), cm, &m).ok());
}

}  // namespace
}  // namespace ferry::controller
