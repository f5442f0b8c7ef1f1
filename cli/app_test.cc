// End to end, in-process: a fake ControllerService on a loopback port and
// ferryctl's Run() with captured stdout/stderr and exit code.
#include "cli/app.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cli/test_fixtures.h"
#include "grpcpp/grpcpp.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/controller.grpc.pb.h"

namespace ferry::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using namespace ::ferry::cli::testing;  // NOLINT: fixtures only.

// The records of test_fixtures, served with real paging (one host per page)
// and scripted streams for Watch and Drain.
class FakeController final : public v1::ControllerService::Service {
 public:
  FakeController() {
    hosts_ = {NodeA(), NodeB()};
    vms_ = {Web1(), Db1()};
    migrations_ = {Mig1(), Mig2(), Mig3()};
  }

  grpc::Status ListHosts(grpc::ServerContext*, const v1::ListHostsRequest* req,
                         v1::ListHostsResponse* resp) override {
    std::lock_guard<std::mutex> l(mu_);
    size_t start = req->page_token().empty() ? 0 : std::stoul(req->page_token());
    std::vector<v1::Host> match;
    for (const v1::Host& h : hosts_) {
      if (req->label_selector() == "zone=a" && h.info().labels().count("zone") == 0) {
        continue;
      }
      match.push_back(h);
    }
    if (start < match.size()) *resp->add_hosts() = match[start];
    if (start + 1 < match.size()) resp->set_next_page_token(std::to_string(start + 1));
    return grpc::Status::OK;
  }
  grpc::Status GetHost(grpc::ServerContext*, const v1::GetHostRequest* req,
                       v1::Host* out) override {
    std::lock_guard<std::mutex> l(mu_);
    for (const v1::Host& h : hosts_) {
      if (h.name() == req->name()) {
        *out = h;
        return grpc::Status::OK;
      }
    }
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("host \"", req->name(), "\" not found"));
  }
  grpc::Status CordonHost(grpc::ServerContext* c, const v1::CordonHostRequest* req,
                          v1::Host* out) override {
    grpc::Status s = GetHost(c, MakeGetHost(req->name()), out);
    if (!s.ok()) return s;
    std::lock_guard<std::mutex> l(mu_);
    last_cordon_reason_ = req->reason();
    for (v1::Host& h : hosts_) {
      if (h.name() == req->name()) h.set_cordoned(true);
    }
    return grpc::Status::OK;
  }
  grpc::Status UncordonHost(grpc::ServerContext* c,
                            const v1::UncordonHostRequest* req,
                            v1::Host* out) override {
    grpc::Status s = GetHost(c, MakeGetHost(req->name()), out);
    if (!s.ok()) return s;
    std::lock_guard<std::mutex> l(mu_);
    for (v1::Host& h : hosts_) {
      if (h.name() == req->name()) h.set_cordoned(false);
    }
    return grpc::Status::OK;
  }
  grpc::Status DrainHost(grpc::ServerContext*, const v1::DrainHostRequest* req,
                         grpc::ServerWriter<v1::DrainHostUpdate>* w) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      last_drain_ = *req;
    }
    if (req->name() != "node-a") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrCat("host \"", req->name(), "\" not found"));
    }
    auto send = [&](const char* vm, const char* id, v1::DrainOutcome o,
                    const char* msg, int remaining) {
      v1::DrainHostUpdate u;
      u.set_vm_name(vm);
      u.set_migration_id(id);
      u.set_outcome(o);
      u.set_message(msg);
      u.set_vms_remaining(remaining);
      w->Write(u);
    };
    send("web-1", "mig-7", v1::DRAIN_OUTCOME_STARTED, "", 2);
    send("db-1", "", v1::DRAIN_OUTCOME_SKIPPED, "not RUNNING", 1);
    send("web-1", "mig-7", drain_fails_ ? v1::DRAIN_OUTCOME_FAILED
                                        : v1::DRAIN_OUTCOME_MIGRATED,
         drain_fails_ ? "NOT_CONVERGING" : "", 0);
    return grpc::Status::OK;
  }

  grpc::Status CreateVm(grpc::ServerContext*, const v1::CreateVmRequest* req,
                        v1::Vm* out) override {
    std::lock_guard<std::mutex> l(mu_);
    last_create_vm_ = *req;
    for (const v1::Vm& vm : vms_) {
      if (vm.spec().name() == req->spec().name()) {
        return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                            absl::StrCat("vm \"", vm.spec().name(),
                                         "\" already exists"));
      }
    }
    out->mutable_spec()->CopyFrom(req->spec());
    out->mutable_status()->set_phase(v1::VM_PHASE_PENDING);
    out->mutable_status()->set_host(req->host());
    vms_.push_back(*out);
    return grpc::Status::OK;
  }
  grpc::Status GetVm(grpc::ServerContext*, const v1::GetVmRequest* req,
                     v1::Vm* out) override {
    if (req->name() == "slow") absl::SleepFor(absl::Milliseconds(500));
    if (req->name() == "flaky") {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "agent on node-a is not answering");
    }
    std::lock_guard<std::mutex> l(mu_);
    for (const v1::Vm& vm : vms_) {
      if (vm.spec().name() == req->name()) {
        *out = vm;
        return grpc::Status::OK;
      }
    }
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("vm \"", req->name(), "\" not found"));
  }
  grpc::Status ListVms(grpc::ServerContext*, const v1::ListVmsRequest* req,
                       v1::ListVmsResponse* resp) override {
    std::lock_guard<std::mutex> l(mu_);
    for (const v1::Vm& vm : vms_) {
      if (!req->host().empty() && vm.status().host() != req->host()) continue;
      *resp->add_vms() = vm;
    }
    ++list_vms_calls_;
    return grpc::Status::OK;
  }
  grpc::Status DeleteVm(grpc::ServerContext*, const v1::DeleteVmRequest* req,
                        v1::DeleteVmResponse*) override {
    std::lock_guard<std::mutex> l(mu_);
    for (auto it = vms_.begin(); it != vms_.end(); ++it) {
      if (it->spec().name() == req->name()) {
        vms_.erase(it);
        return grpc::Status::OK;
      }
    }
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("vm \"", req->name(), "\" not found"));
  }

  grpc::Status CreateMigration(grpc::ServerContext*,
                               const v1::CreateMigrationRequest* req,
                               v1::Migration* out) override {
    std::lock_guard<std::mutex> l(mu_);
    last_create_migration_ = *req;
    if (req->vm_name() != "web-1") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrCat("vm \"", req->vm_name(), "\" not found"));
    }
    out->set_id("mig-new");
    out->set_vm_name(req->vm_name());
    out->set_source_host("node-a");
    out->set_target_host(req->target_host());
    out->set_phase(v1::MIGRATION_PHASE_PENDING);
    return grpc::Status::OK;
  }
  grpc::Status GetMigration(grpc::ServerContext*,
                            const v1::GetMigrationRequest* req,
                            v1::Migration* out) override {
    std::lock_guard<std::mutex> l(mu_);
    for (const v1::Migration& m : migrations_) {
      if (m.id() == req->id()) {
        *out = m;
        return grpc::Status::OK;
      }
    }
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("migration \"", req->id(), "\" not found"));
  }
  grpc::Status ListMigrations(grpc::ServerContext*,
                              const v1::ListMigrationsRequest* req,
                              v1::ListMigrationsResponse* resp) override {
    std::lock_guard<std::mutex> l(mu_);
    for (const v1::Migration& m : migrations_) {
      if (!req->vm_name().empty() && m.vm_name() != req->vm_name()) continue;
      if (!req->host().empty() && m.source_host() != req->host() &&
          m.target_host() != req->host()) {
        continue;
      }
      *resp->add_migrations() = m;
    }
    return grpc::Status::OK;
  }
  // PENDING, PREPARING, rounds 0-2, SWITCHOVER, then SUCCEEDED (or FAILED
  // when watch_fails_).
  grpc::Status WatchMigration(grpc::ServerContext* ctx,
                              const v1::WatchMigrationRequest* req,
                              grpc::ServerWriter<v1::Migration>* w) override {
    if (req->id() == "mig-1" || req->id() == "mig-new") {
      v1::Migration m = Mig1();
      m.set_id(req->id());
      m.clear_progress();
      m.set_phase(v1::MIGRATION_PHASE_PENDING);
      w->Write(m);
      m.set_phase(v1::MIGRATION_PHASE_PREPARING);
      w->Write(m);
      m.set_phase(v1::MIGRATION_PHASE_TRANSFERRING);
      uint64_t remaining[] = {1ull << 30, 300ull << 20, 40ull << 20};
      for (uint32_t round = 0; round < 3; ++round) {
        v1::MigrationProgress* p = m.mutable_progress();
        p->set_round(round);
        p->set_total_bytes(1ull << 30);
        p->set_remaining_bytes(remaining[round]);
        p->set_bandwidth_bytes_per_s(200ull << 20);
        p->set_dirty_rate_bytes_per_s(50ull << 20);
        *p->mutable_expected_downtime() = Dur(absl::Milliseconds(200 - 60 * round));
        w->Write(m);
      }
      if (watch_hangs_) {
        // Until the client goes away (Ctrl-C test).
        while (!ctx->IsCancelled()) absl::SleepFor(absl::Milliseconds(5));
        return grpc::Status::CANCELLED;
      }
      m.set_phase(v1::MIGRATION_PHASE_SWITCHOVER);
      w->Write(m);
      v1::MigrationResult* r = m.mutable_result();
      if (watch_fails_) {
        m.set_phase(v1::MIGRATION_PHASE_FAILED);
        r->set_phase(v1::MIGRATION_PHASE_FAILED);
        r->set_failure(v1::MIGRATION_FAILURE_VERIFICATION);
        r->set_message("digest mismatch in slot 1");
        r->set_vm_host("node-a");
      } else {
        m.set_phase(v1::MIGRATION_PHASE_SUCCEEDED);
        r->set_phase(v1::MIGRATION_PHASE_SUCCEEDED);
        r->set_vm_host("node-b");
        *r->mutable_downtime() = Dur(absl::Milliseconds(31));
        *r->mutable_total_time() = Dur(absl::Milliseconds(6200));
        r->set_rounds(3);
        r->set_wire_bytes(1400ull << 20);
        r->set_pages_sent(358400);
        r->set_memory_verified(true);
      }
      w->Write(m);
      return grpc::Status::OK;
    }
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("migration \"", req->id(), "\" not found"));
  }
  grpc::Status CancelMigration(grpc::ServerContext*,
                               const v1::CancelMigrationRequest* req,
                               v1::Migration* out) override {
    std::lock_guard<std::mutex> l(mu_);
    for (const v1::Migration& m : migrations_) {
      if (m.id() == req->id()) {
        *out = m;
        out->set_cancel_requested(true);
        out->set_cancel_reason(req->reason());
        return grpc::Status::OK;
      }
    }
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("migration \"", req->id(), "\" not found"));
  }
  grpc::Status ListEvents(grpc::ServerContext*, const v1::ListEventsRequest* req,
                          v1::ListEventsResponse* resp) override {
    if (req->object_name() == "web-1") {
      v1::Event* e = resp->add_events();
      e->set_sequence(1);
      *e->mutable_time() = Ts(kNow - absl::Seconds(30));
      e->set_severity(v1::EVENT_SEVERITY_INFO);
      e->set_object_kind(v1::OBJECT_KIND_VM);
      e->set_object_name("web-1");
      e->set_reason("VmRunning");
      e->set_message("guest started on node-a");
    }
    return grpc::Status::OK;
  }

  static const v1::GetHostRequest* MakeGetHost(const std::string& name) {
    thread_local v1::GetHostRequest r;
    r.set_name(name);
    return &r;
  }

  std::mutex mu_;
  std::vector<v1::Host> hosts_;
  std::vector<v1::Vm> vms_;
  std::vector<v1::Migration> migrations_;
  v1::CreateVmRequest last_create_vm_;
  v1::CreateMigrationRequest last_create_migration_;
  v1::DrainHostRequest last_drain_;
  std::string last_cordon_reason_;
  std::atomic<int> list_vms_calls_{0};
  std::atomic<bool> watch_fails_{false};
  std::atomic<bool> watch_hangs_{false};
  bool drain_fails_ = false;
};

struct Result {
  int code;
  std::string out;
  std::string err;
};

class AppTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    b.RegisterService(&fake_);
    server_ = b.BuildAndStart();
    if (server_ == nullptr || port_ == 0) {
      GTEST_SKIP() << "cannot listen on a loopback port";
    }
    address_ = absl::StrCat("127.0.0.1:", port_);
    const char* tmp = std::getenv("TEST_TMPDIR");
    env_vars_["HOME"] = std::string(tmp ? tmp : "/tmp") + "/apptest-home";
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  // Runs ferryctl with --server pointing at the fake (unless `with_server`
  // is false).
  Result Run(std::vector<std::string> args, bool with_server = true) {
    if (with_server) {
      args.push_back("--server");
      args.push_back(address_);
    }
    std::ostringstream out, err;
    Env env;
    env.out = &out;
    env.err = &err;
    env.getenv = [this](const std::string& k) -> std::optional<std::string> {
      auto it = env_vars_.find(k);
      if (it == env_vars_.end()) return std::nullopt;
      return it->second;
    };
    env.now = [] { return kNow; };
    env.poll_interval = absl::Milliseconds(20);
    env.plain_progress_interval = absl::Seconds(5);
    env.interrupted = &interrupted_;
    int code = ferry::cli::Run(args, env);
    return {code, out.str(), err.str()};
  }

  FakeController fake_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
  std::map<std::string, std::string> env_vars_;
  std::atomic<bool> interrupted_{false};
};

TEST_F(AppTest, GetListsPagesAndFormats) {
  Result r = Run({"get", "hosts"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out,
            "NAME     STATUS                     VMS   CPU    MEMORY       AGE\n"
            "node-a   Ready                      2     6/16   5GiB/64GiB   2d3h\n"
            "node-b   Ready,SchedulingDisabled   0     0/8    0B/32GiB     45s\n");
  r = Run({"get", "host", "-l", "zone=a", "-o", "name"});
  EXPECT_EQ(r.out, "host/node-a\n");
  r = Run({"get", "vm", "web-1", "-ojson"});
  EXPECT_EQ(r.code, 0);
  EXPECT_TRUE(absl::StartsWith(r.out, "{\n  \"spec\": {\n    \"name\": \"web-1\""))
      << r.out;
  r = Run({"get", "mig", "--host", "node-b", "-o", "wide"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("mig-1"));
  EXPECT_THAT(r.out, HasSubstr("mig-3"));
  EXPECT_THAT(r.out, Not(HasSubstr("mig-2")));
  r = Run({"get", "migration", "mig-2", "-o", "yaml"});
  EXPECT_THAT(r.out, HasSubstr("pendingReason: PENDING_REASON_NO_CAPACITY\n"));
}

TEST_F(AppTest, NotFoundIsExitOneWithServerMessage) {
  Result r = Run({"get", "vm", "nope"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: vm \"nope\" not found\n");
  EXPECT_EQ(r.out, "");
  r = Run({"describe", "host", "node-z"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: host \"node-z\" not found\n");
  r = Run({"delete", "vm", "nope"});
  EXPECT_EQ(r.code, 1);
  r = Run({"cancel", "migration", "mig-404"});
  EXPECT_EQ(r.err, "error: migration \"mig-404\" not found\n");
  r = Run({"create", "vm", "web-1", "--memory", "1GiB"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: vm \"web-1\" already exists\n");
}

TEST_F(AppTest, UsageErrorsAreExitTwoAndChangeNothing) {
  struct Case {
    std::vector<std::string> args;
    std::string err_line;
  } cases[] = {
      {{"frob"}, "error: unknown command \"frob\""},
      {{"get"}, "error: specify a resource type: hosts, vms or migrations"},
      {{"get", "pods"}, "error: unknown resource type \"pods\": use hosts, vms or migrations"},
      {{"get", "vms", "-o", "xml"},
       "error: unknown output format \"xml\": use table, wide, json, yaml or name"},
      {{"get", "vms", "--frob"}, "error: unknown flag --frob"},
      {{"get", "vms", "--to", "x"}, "error: unknown flag --to for \"get\""},
      {{"create", "vm", "x"}, "error: --memory is required, e.g. --memory 1GiB"},
      {{"create", "vm", "x", "--memory", "lots"},
       "error: invalid size \"lots\": expected a number with an optional unit: "
       "B, KB/MB/GB/TB (powers of 1000) or KiB/MiB/GiB/TiB (powers of 1024), "
       "e.g. 512MiB or 1.5GB"},
      {{"create", "vm", "x", "--memory", "1GiB", "--vcpus", "0"},
       "error: invalid --vcpus \"0\": expected 1 to 256"},
      {{"create", "vm", "x", "--memory", "1GiB", "--dirty-rate", "fast"},
       "error: invalid rate \"fast\": expected a size per second such as "
       "100MB/s or 1GiB/s (invalid size \"fast\": expected a number with an "
       "optional unit: B, KB/MB/GB/TB (powers of 1000) or KiB/MiB/GiB/TiB "
       "(powers of 1024), e.g. 512MiB or 1.5GB)"},
      {{"migrate", "vm", "web-1", "--max-downtime", "50"},
       "error: invalid duration \"50\": missing unit (use ms, s, m or h, e.g. "
       "50ms or 1m30s)"},
      {{"migrate", "vm", "web-1", "--streams", "99"},
       "error: invalid --streams \"99\": expected 1 to 16"},
      {{"migrate", "vm", "web-1", "--compression", "gzip"},
       "error: invalid --compression \"gzip\": use none, lz4, zstd or auto"},
      {{"migrate", "vm", "web-1", "--auto-converge=perhaps"},
       "error: --auto-converge: invalid boolean \"perhaps\": use true or false"},
      {{"drain", "node-a", "--timeout", "5m"},
       "error: drain takes --timeout-per-gib (VMs differ in size), not --timeout"},
  };
  for (const Case& c : cases) {
    Result r = Run(c.args);
    EXPECT_EQ(r.code, 2) << c.args[0];
    std::string first_line = r.err.substr(0, r.err.find('\n'));
    EXPECT_EQ(first_line, c.err_line);
    EXPECT_THAT(r.err, HasSubstr("--help' for usage.\n"));
  }
  // None of the bad creates reached the server.
  EXPECT_EQ(fake_.last_create_vm_.spec().name(), "");
  EXPECT_EQ(fake_.last_create_migration_.vm_name(), "");
}

TEST_F(AppTest, HelpAtEveryLevel) {
  Result r = Run({"--help"}, false);
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("127.0.0.1:7400"));
  EXPECT_THAT(r.out, HasSubstr("Examples:"));
  for (const char* cmd : {"get", "describe", "create", "delete", "migrate",
                          "cancel", "cordon", "uncordon", "drain", "top",
                          "version", "completion", "config"}) {
    r = Run({cmd, "-h"}, false);
    EXPECT_EQ(r.code, 0) << cmd;
    EXPECT_THAT(r.out, HasSubstr(absl::StrCat("Usage: ferryctl ", cmd))) << cmd;
    EXPECT_THAT(r.out, HasSubstr("Examples:")) << cmd;
  }
  r = Run({"help", "migrate"}, false);
  EXPECT_THAT(r.out, HasSubstr("--max-downtime DURATION"));
}

TEST_F(AppTest, DescribeShowsEvents) {
  Result r = Run({"describe", "vm", "web-1"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("Name:                web-1\n"));
  EXPECT_THAT(r.out, HasSubstr("Migrations (2):\n"));
  EXPECT_THAT(r.out, HasSubstr("  30s   Normal   VmRunning   guest started on node-a\n"));
  r = Run({"describe", "migration", "mig-3"});
  EXPECT_THAT(r.out, HasSubstr("Progress history (3 samples, 2 rounds):"));
  EXPECT_THAT(r.out, HasSubstr("Events:              <none>\n"));
}

TEST_F(AppTest, CreateMapsFlagsToTheSpec) {
  Result r = Run({"create", "vm", "api-1", "--memory", "1GiB", "--vcpus", "2",
                  "--workload", "hotcold", "--dirty-rate", "100MB/s",
                  "--working-set", "512MiB", "--hot-fraction", "0.2",
                  "--host", "node-b", "-l", "tier=api,team=x", "-l", "env=dev",
                  "--backend", "soft", "--seed", "7"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "vm/api-1 created on node-b\n");
  const v1::CreateVmRequest& req = fake_.last_create_vm_;
  EXPECT_EQ(req.host(), "node-b");
  EXPECT_EQ(req.request_id().size(), 32u);
  EXPECT_EQ(req.spec().memory_bytes(), 1ull << 30);
  EXPECT_EQ(req.spec().vcpu_count(), 2u);
  EXPECT_EQ(req.spec().backend(), v1::VM_BACKEND_SOFT);
  EXPECT_EQ(req.spec().labels().size(), 3u);
  EXPECT_EQ(req.spec().labels().at("env"), "dev");
  EXPECT_EQ(req.spec().workload().kind(), v1::WORKLOAD_KIND_HOTCOLD);
  EXPECT_EQ(req.spec().workload().dirty_rate_bytes_per_s(), 100000000u);
  EXPECT_EQ(req.spec().workload().working_set_bytes(), 512ull << 20);
  EXPECT_DOUBLE_EQ(req.spec().workload().hot_fraction(), 0.2);
  EXPECT_DOUBLE_EQ(req.spec().workload().hot_probability(), 0.9);
  EXPECT_EQ(req.spec().workload().seed(), 7u);

  r = Run({"delete", "vm", "api-1"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "vm/api-1 deleted\n");
}

TEST_F(AppTest, MigrateWaitShowsProgressAndSummary) {
  Result r = Run({"migrate", "vm", "web-1", "--to", "node-b", "--max-downtime",
                  "50ms", "--bandwidth", "1GiB/s", "--streams", "4",
                  "--auto-converge=false", "--compression", "zstd",
                  "--timeout", "2m"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out,
            "migration/mig-new created: vm web-1 from node-a to node-b\n"
            "PENDING\n"
            "PREPARING\n"
            "TRANSFERRING 0%  round 0  sent 0B  remaining 1GiB  dirty 50MiB/s"
            "  bw 200MiB/s  downtime ~200ms  ETA 7s\n"
            "TRANSFERRING 70%  round 1  sent 0B  remaining 300MiB  dirty "
            "50MiB/s  bw 200MiB/s  downtime ~140ms  ETA 7s\n"
            "TRANSFERRING 96%  round 2  sent 0B  remaining 40MiB  dirty "
            "50MiB/s  bw 200MiB/s  downtime ~80ms  ETA 7s\n"
            "SWITCHOVER 96%  round 2  sent 0B  remaining 40MiB  dirty 50MiB/s"
            "  bw 200MiB/s  downtime ~80ms  ETA 0s\n"
            "migration mig-new SUCCEEDED\n"
            "  vm          web-1 on node-b\n"
            "  total time  6.2s\n"
            "  downtime    31ms\n"
            "  bytes sent  1.4GiB (358400 pages)\n"
            "  rounds      3\n"
            "  verified    yes\n");
  const v1::MigrationPolicy& p = fake_.last_create_migration_.policy();
  EXPECT_EQ(fake_.last_create_migration_.target_host(), "node-b");
  EXPECT_EQ(fake_.last_create_migration_.request_id().size(), 32u);
  EXPECT_EQ(p.max_downtime().nanos(), 50000000);
  EXPECT_EQ(p.max_bandwidth_bytes_per_s(), 1ull << 30);
  EXPECT_EQ(p.streams(), 4u);
  ASSERT_TRUE(p.has_auto_converge());
  EXPECT_FALSE(p.auto_converge());
  EXPECT_EQ(p.compression(), v1::COMPRESSION_ZSTD);
  // 2m over a 1GiB VM.
  EXPECT_EQ(p.completion_timeout_per_gib().seconds(), 120);
  EXPECT_FALSE(p.has_max_rounds());  // Not given: the defaults decide.
}

TEST_F(AppTest, MigrateFailedIsExitOne) {
  fake_.watch_fails_ = true;
  Result r = Run({"migrate", "vm", "web-1"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("migration mig-new FAILED (VERIFICATION): "
                               "digest mismatch in slot 1\n"));
  EXPECT_THAT(r.out, HasSubstr("  vm          web-1 on node-a\n"));
  EXPECT_EQ(fake_.last_create_migration_.target_host(), "");
}

TEST_F(AppTest, MigrateNoWaitAndUnknownVm) {
  Result r = Run({"migrate", "vm", "web-1", "--no-wait"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out,
            "migration/mig-new created: vm web-1 from node-a to <scheduler's "
            "choice>\nfollow it with: ferryctl get migration mig-new --watch\n");
  r = Run({"migrate", "vm", "ghost"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: vm \"ghost\" not found\n");
}

TEST_F(AppTest, CtrlCWhileWaitingDetaches) {
  fake_.watch_hangs_ = true;
  std::thread ctrl_c([this] {
    absl::SleepFor(absl::Milliseconds(300));
    interrupted_ = true;
  });
  Result r = Run({"migrate", "vm", "web-1"});
  ctrl_c.join();
  EXPECT_EQ(r.code, 130);
  EXPECT_THAT(r.err, HasSubstr("stopped waiting; migration mig-new continues"));
}

TEST_F(AppTest, WatchOneMigrationUntilTerminal) {
  Result r = Run({"get", "migration", "mig-1", "--watch"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out,
            "ID      VM      SOURCE   TARGET   PHASE     PROGRESS   AGE\n"
            "mig-1   web-1   node-a   node-b   PENDING   -          12s\n"
            "mig-1   web-1   node-a   node-b   PREPARING   -          12s\n"
            "mig-1   web-1   node-a   node-b   TRANSFERRING   0%         12s\n"
            "mig-1   web-1   node-a   node-b   TRANSFERRING   70%        12s\n"
            "mig-1   web-1   node-a   node-b   TRANSFERRING   96%        12s\n"
            "mig-1   web-1   node-a   node-b   SWITCHOVER     96%        12s\n"
            "mig-1   web-1   node-a   node-b   SUCCEEDED      100%       12s\n");
}

TEST_F(AppTest, WatchPollsUntilCtrlC) {
  // Driven by the fake's call count, not by sleeps, so a slow machine
  // cannot reorder the change and the first fetch.
  auto wait_calls = [this](int n) {
    while (fake_.list_vms_calls_ < n) absl::SleepFor(absl::Milliseconds(2));
  };
  std::thread changer([&] {
    wait_calls(1);
    int seen;
    {
      std::lock_guard<std::mutex> l(fake_.mu_);
      fake_.vms_[1].mutable_status()->set_phase(v1::VM_PHASE_RUNNING);
      fake_.vms_[1].mutable_status()->set_host("node-b");
      seen = fake_.list_vms_calls_;
    }
    wait_calls(seen + 3);  // Several polls after the change: printed once.
    interrupted_ = true;
  });
  Result r = Run({"get", "vms", "-w"});
  changer.join();
  EXPECT_EQ(r.code, 0) << r.err;
  // The full table once, then only the row that changed, once.
  EXPECT_EQ(r.out,
            "NAME    PHASE     HOST     VCPUS   MEMORY   DIRTY-RATE   AGE\n"
            "web-1   RUNNING   node-a   2       1GiB     95MiB/s      5m3s\n"
            "db-1    PENDING   -        4       4GiB     0B/s         120m\n"
            "db-1    RUNNING   node-b   4       4GiB     0B/s         120m\n");
  EXPECT_GT(fake_.list_vms_calls_, 3);
}

TEST_F(AppTest, CancelCordonUncordon) {
  Result r = Run({"cancel", "migration", "mig-1", "--reason", "window over"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "migration/mig-1 cancel requested (phase TRANSFERRING)\n");
  r = Run({"cancel", "mig", "mig-3"});
  EXPECT_EQ(r.out, "migration/mig-3 already SUCCEEDED\n");
  r = Run({"cordon", "node-a", "--reason", "disk"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "host/node-a cordoned\n");
  EXPECT_EQ(fake_.last_cordon_reason_, "disk");
  r = Run({"get", "host", "node-a"});
  EXPECT_THAT(r.out, HasSubstr("Ready,SchedulingDisabled"));
  r = Run({"uncordon", "node-a"});
  EXPECT_EQ(r.out, "host/node-a uncordoned\n");
  r = Run({"cordon", "node-q"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: host \"node-q\" not found\n");
}

TEST_F(AppTest, DrainPrintsOutcomesAndTally) {
  Result r = Run({"drain", "node-a", "--max-parallel", "2", "--max-downtime", "100ms"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out,
            "web-1                STARTED   migration mig-7  (2 remaining)\n"
            "db-1                 SKIPPED    not RUNNING  (1 remaining)\n"
            "web-1                MIGRATED  migration mig-7  (0 remaining)\n"
            "host/node-a drained: 1 migrated, 0 failed, 1 skipped\n");
  EXPECT_EQ(fake_.last_drain_.max_parallel(), 2u);
  EXPECT_EQ(fake_.last_drain_.policy().max_downtime().nanos(), 100000000);

  fake_.drain_fails_ = true;
  r = Run({"drain", "node-a"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("1 failed"));

  r = Run({"drain", "node-a", "--no-wait"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("continues in the controller"));

  r = Run({"drain", "node-x"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: host \"node-x\" not found\n");
}

TEST_F(AppTest, TopSortsByDirtyRate) {
  {
    std::lock_guard<std::mutex> l(fake_.mu_);
    fake_.vms_[1].mutable_status()->set_dirty_rate_bytes_per_s(500ull << 20);
    fake_.vms_[1].mutable_status()->set_host("node-a");
  }
  Result r = Run({"top", "vms"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out,
            "NAME    HOST     DIRTY-RATE   MEMORY   VCPUS   PHASE\n"
            "db-1    node-a   500MiB/s     4GiB     4       PENDING\n"
            "web-1   node-a   95MiB/s      1GiB     2       RUNNING\n");
  r = Run({"top", "hosts"});
  EXPECT_EQ(r.out,
            "NAME     CPU    CPU%   MEMORY       MEMORY%   VMS   DIRTY-RATE\n"
            "node-a   6/16   37%    5GiB/64GiB   7%        2     595MiB/s\n"
            "node-b   0/8    0%     0B/32GiB     0%        0     0B/s\n");
  r = Run({"top", "migrations"});
  EXPECT_EQ(r.code, 2);
}

TEST_F(AppTest, VersionAndCompletion) {
  Result r = Run({"version"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, absl::StrCat(
                       "Client Version: ferryctl ", kFerryctlVersion,
                       " (API ferry.v1)\nServer: ", address_,
                       " (from --server), API ferry.v1, reachable\n"
                       "Agent versions: 0.3.0 (2 hosts)\n"));
  r = Run({"completion", "bash"}, false);
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("complete -F _ferryctl ferryctl"));
  EXPECT_THAT(r.out, HasSubstr("migrate) flags=\""));
  r = Run({"completion", "zsh"}, false);
  EXPECT_THAT(r.out, HasSubstr("bashcompinit"));
  r = Run({"completion", "fish"}, false);
  EXPECT_EQ(r.code, 2);
}

TEST_F(AppTest, ServerSideDeadlineAndUnavailableAreExitOne) {
  // Connected, but the call outlives --request-timeout: the server is
  // reachable, so this is a failed operation, not exit 3.
  Result r = Run({"get", "vm", "slow", "--request-timeout", "100ms"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: Deadline Exceeded (DEADLINE_EXCEEDED)\n");
  // UNAVAILABLE from the server itself (channel up) is its message.
  r = Run({"get", "vm", "flaky"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: agent on node-a is not answering (UNAVAILABLE)\n");
  r = Run({"get", "vm", "web-1", "--request-timeout", "soon"});
  EXPECT_EQ(r.code, 2);
}

TEST_F(AppTest, MigrateOnATerminalRedrawsOneLine) {
  std::ostringstream out, err;
  Env env;
  env.out = &out;
  env.err = &err;
  env.getenv = [](const std::string&) { return std::nullopt; };
  env.now = [] { return kNow; };
  env.out_is_tty = true;
  int code = ferry::cli::Run({"migrate", "vm", "web-1", "--server", address_}, env);
  EXPECT_EQ(code, 0) << err.str();
  std::string s = out.str();
  // Every update redraws in place; one newline ends the bar before the
  // summary, so the output has exactly: created, bar, 7 summary lines.
  EXPECT_EQ(std::count(s.begin(), s.end(), '\r'), 7);
  EXPECT_EQ(std::count(s.begin(), s.end(), '\n'), 1 + 1 + 7);
  EXPECT_THAT(s, HasSubstr("\r\033[K[###################-] TRANSFERRING 96%"));
  EXPECT_THAT(s, HasSubstr("\r\033[K[####################] SUCCEEDED 100%"));
}

TEST_F(AppTest, VersionClientOnlyNeedsNoServer) {
  Result r = Run({"version", "--client", "--server", "127.0.0.1:1"}, false);
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, absl::StrCat("Client Version: ferryctl ", kFerryctlVersion,
                                " (API ferry.v1)\n"));
}

// A port nobody listens on: bind one, then close it.
int DeadPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close(fd);
    return 0;
  }
  close(fd);
  return ntohs(a.sin_port);
}

TEST_F(AppTest, UnreachableServerIsExitThreeAndSaysWhere) {
  int port = DeadPort();
  if (port == 0) GTEST_SKIP() << "cannot bind a loopback port";
  std::string dead = absl::StrCat("127.0.0.1:", port);
  Result r = Run({"get", "vms", "--server", dead}, false);
  EXPECT_EQ(r.code, 3);
  EXPECT_TRUE(absl::StartsWith(
      r.err, absl::StrCat("error: cannot reach the server at ", dead,
                          " (from --server): ")))
      << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1);

  env_vars_["FERRY_SERVER"] = dead;
  r = Run({"version"}, false);
  EXPECT_EQ(r.code, 3);
  EXPECT_THAT(r.out, HasSubstr("Client Version"));
  EXPECT_THAT(r.err, HasSubstr(absl::StrCat(dead, " (from $FERRY_SERVER)")));
  r = Run({"migrate", "vm", "web-1"}, false);
  EXPECT_EQ(r.code, 3);
}

TEST_F(AppTest, ConfigContextsDriveTheAddress) {
  std::string cfg = env_vars_["HOME"] + "/ctx-config";
  std::remove(cfg.c_str());
  env_vars_["FERRYCONFIG"] = cfg;
  Result r = Run({"config", "set-context", "fake", "--server", address_}, false);
  EXPECT_EQ(r.code, 0) << r.err;
  r = Run({"config", "set-context", "dead", "--server", "127.0.0.1:1"}, false);
  r = Run({"config", "use-context", "fake"}, false);
  EXPECT_EQ(r.out, "Switched to context \"fake\".\n");
  r = Run({"config", "current-context"}, false);
  EXPECT_EQ(r.out, "fake\n");
  r = Run({"config", "get-contexts"}, false);
  EXPECT_EQ(r.out, absl::StrCat("CURRENT   NAME   SERVER\n"
                                "          dead   127.0.0.1:1\n"
                                "*         fake   ", address_, "\n"));
  // No --server: the current context's address is used.
  r = Run({"get", "hosts", "-o", "name"}, false);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "host/node-a\nhost/node-b\n");
  // --context overrides it, and errors say where the address came from.
  r = Run({"get", "hosts", "--context", "dead"}, false);
  EXPECT_EQ(r.code, 3);
  EXPECT_THAT(r.err, HasSubstr("(from context \"dead\" in " + cfg + ")"));
  r = Run({"get", "hosts", "--context", "nope"}, false);
  EXPECT_EQ(r.code, 2);
  r = Run({"config", "use-context", "nope"}, false);
  EXPECT_EQ(r.code, 1);
}

}  // namespace
}  // namespace ferry::cli
