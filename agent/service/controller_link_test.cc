// ControllerLink against an in-process fake ControllerService and a fake
// AgentService (what the link reads from): registration, heartbeats on the
// controller's interval with VM summaries and in-flight migration ids,
// re-registration on FAILED_PRECONDITION, retries while the controller
// refuses, and a prompt Stop().
#include "agent/service/controller_link.h"

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace ferry::service {
namespace {

class FakeController final : public v1::ControllerService::Service {
 public:
  grpc::Status RegisterHost(grpc::ServerContext*, const v1::RegisterHostRequest* req,
                            v1::RegisterHostResponse* resp) override {
    absl::MutexLock l(&mu);
    if (refuse_registers > 0) {
      --refuse_registers;
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "starting up");
    }
    ++registers;
    info = req->info();
    resp->mutable_heartbeat_interval()->set_nanos(50 * 1000 * 1000);
    return grpc::Status::OK;
  }
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* resp) override {
    absl::MutexLock l(&mu);
    if (forget) {
      forget = false;
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "register again");
    }
    heartbeats.push_back(*req);
    resp->mutable_heartbeat_interval()->set_nanos(50 * 1000 * 1000);
    return grpc::Status::OK;
  }
  absl::Mutex mu;
  int registers = 0;
  int refuse_registers = 0;
  bool forget = false;
  v1::HostInfo info;
  std::vector<v1::HeartbeatRequest> heartbeats;
};

class FakeAgentInfo final : public v1::AgentService::Service {
 public:
  grpc::Status GetHostInfo(grpc::ServerContext*, const v1::GetHostInfoRequest*,
                           v1::HostInfo* info) override {
    info->set_name("h1");
    info->set_instance_id("inst-1");
    info->set_agent_address("127.0.0.1:1");
    info->mutable_allocated()->set_memory_bytes(64 << 20);
    return grpc::Status::OK;
  }
  grpc::Status ListVms(grpc::ServerContext*, const v1::AgentListVmsRequest*,
                       v1::AgentListVmsResponse* resp) override {
    v1::Vm* vm = resp->add_vms();
    vm->mutable_spec()->set_name("vm1");
    vm->set_uid("u1");
    vm->mutable_status()->set_phase(v1::VM_PHASE_RUNNING);
    return grpc::Status::OK;
  }
  grpc::Status ListMigrations(grpc::ServerContext*, const v1::AgentListMigrationsRequest*,
                              v1::AgentListMigrationsResponse* resp) override {
    v1::AgentMigration* live = resp->add_migrations();
    live->set_migration_id("m-live");
    live->set_phase(v1::MIGRATION_PHASE_TRANSFERRING);
    v1::AgentMigration* done = resp->add_migrations();
    done->set_migration_id("m-done");
    done->set_phase(v1::MIGRATION_PHASE_SUCCEEDED);
    return grpc::Status::OK;
  }
};

class ControllerLinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    b.RegisterService(&controller_);
    b.RegisterService(&agent_);
    server_ = b.BuildAndStart();
    if (server_ == nullptr || port_ == 0) GTEST_SKIP() << "cannot bind a loopback port";
  }
  void TearDown() override {
    if (server_) server_->Shutdown(absl::ToChronoTime(absl::Now()));
  }
  ControllerLinkOptions Options() {
    ControllerLinkOptions o;
    o.controller = o.agent = absl::StrCat("127.0.0.1:", port_);
    o.initial_backoff = absl::Milliseconds(10);
    o.max_backoff = absl::Milliseconds(100);
    o.rpc_timeout = absl::Seconds(2);
    return o;
  }
  bool WaitFor(const std::function<bool()>& pred, absl::Duration timeout = absl::Seconds(5)) {
    const absl::Time end = absl::Now() + timeout;
    while (absl::Now() < end) {
      if (pred()) return true;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return pred();
  }

  int port_ = 0;
  FakeController controller_;
  FakeAgentInfo agent_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(ControllerLinkTest, RegistersThenHeartbeatsWhatTheAgentReports) {
  ControllerLink link(Options());
  link.Start();
  ASSERT_TRUE(WaitFor([&] { return link.heartbeats_ok() >= 3; }));
  link.Stop();
  absl::MutexLock l(&controller_.mu);
  EXPECT_EQ(controller_.registers, 1);
  EXPECT_EQ(controller_.info.instance_id(), "inst-1");
  const v1::HeartbeatRequest& hb = controller_.heartbeats.back();
  EXPECT_EQ(hb.host_name(), "h1");
  EXPECT_EQ(hb.instance_id(), "inst-1");
  EXPECT_TRUE(hb.healthy());
  EXPECT_EQ(hb.allocated().memory_bytes(), uint64_t{64} << 20);
  ASSERT_EQ(hb.vms_size(), 1);
  EXPECT_EQ(hb.vms(0).uid(), "u1");
  ASSERT_EQ(hb.migration_ids_size(), 1) << "terminal migrations are not in flight";
  EXPECT_EQ(hb.migration_ids(0), "m-live");
}

TEST_F(ControllerLinkTest, RegistersAgainWhenTheControllerForgotIt) {
  ControllerLink link(Options());
  link.Start();
  ASSERT_TRUE(WaitFor([&] { return link.heartbeats_ok() >= 1; }));
  {
    absl::MutexLock l(&controller_.mu);
    controller_.forget = true;
  }
  ASSERT_TRUE(WaitFor([&] { return link.registrations() >= 2; }));
  ASSERT_TRUE(WaitFor([&] { return link.heartbeats_ok() >= 3; }));
  EXPECT_TRUE(link.registered());
}

TEST_F(ControllerLinkTest, RetriesWhileTheControllerRefuses) {
  {
    absl::MutexLock l(&controller_.mu);
    controller_.refuse_registers = 3;
  }
  ControllerLink link(Options());
  link.Start();
  ASSERT_TRUE(WaitFor([&] { return link.registered(); }));
  EXPECT_EQ(link.registrations(), 1);
}

TEST_F(ControllerLinkTest, HeartbeatCarriesTheHealthCheckVerdict) {
  absl::Mutex mu;
  absl::Status health = absl::FailedPreconditionError("data dir /x is not writable");
  ControllerLinkOptions o = Options();
  o.health_check = [&] {
    absl::MutexLock l(&mu);
    return health;
  };
  ControllerLink link(o);
  link.Start();
  ASSERT_TRUE(WaitFor([&] { return link.heartbeats_ok() >= 2; }));
  {
    absl::MutexLock l(&controller_.mu);
    EXPECT_FALSE(controller_.heartbeats.back().healthy());
    EXPECT_EQ(controller_.heartbeats.back().unhealthy_reason(),
              "data dir /x is not writable");
  }
  {
    absl::MutexLock l(&mu);
    health = absl::OkStatus();
  }
  const int64_t seen = link.heartbeats_ok();
  ASSERT_TRUE(WaitFor([&] { return link.heartbeats_ok() >= seen + 2; }));
  link.Stop();
  absl::MutexLock l(&controller_.mu);
  EXPECT_TRUE(controller_.heartbeats.back().healthy());
  EXPECT_TRUE(controller_.heartbeats.back().unhealthy_reason().empty());
}

TEST(HealthProbeTest, DirAndDevice) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = tmp ? tmp : "/tmp";
  EXPECT_TRUE(ProbeDirWritable(dir).ok());
  absl::Status gone = ProbeDirWritable(dir + "/no-such-dir");
  EXPECT_EQ(gone.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(gone.message().find("no-such-dir"), std::string::npos) << gone;
  EXPECT_TRUE(ProbeDevice("/dev/null").ok());
  EXPECT_FALSE(ProbeDevice(dir + "/no-such-device").ok());
}

TEST(ControllerLinkDownTest, UnreachableControllerNeverBlocksStop) {
  ControllerLinkOptions o;
  o.controller = "127.0.0.1:1";  // nothing listens on port 1
  o.agent = "127.0.0.1:1";
  o.rpc_timeout = absl::Milliseconds(200);
  o.initial_backoff = absl::Milliseconds(10);
  ControllerLink link(o);
  link.Start();
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_FALSE(link.registered());
  EXPECT_FALSE(link.last_error().ok());
  const absl::Time t0 = absl::Now();
  link.Stop();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(1));
}

}  // namespace
}  // namespace ferry::service
