// bench:controller_load — a real ferry-controller process (RocksDB on disk,
// gRPC and REST) with many simulated hosts and VMs, as the controller issue
// asks: 200 hosts and 5,000 VMs, list/get latency under that load, and 100
// queued migrations that must respect the concurrency limits.
//
//   bazel run -c opt //bench:controller_load [-- --hosts=200 --vms=5000
//       --migrations=100 --transfer_time=300ms]
//
// The hosts are lightweight fake agents in this process (one gRPC server
// each, controller/orchestrator/fake_agent.h): they answer CreateVm and play
// the agent's side of the migration handshake, holding each migration in
// TRANSFERRING for --transfer_time so the queue fills. This process also
// sends every host's heartbeat (with its VM summaries) on the interval the
// controller asks for, so reads are measured while heartbeats are written.
//
// Prints one JSON object per phase: "setup", "create_vms", one per read
// operation ("get_vm", "list_vms_page", ...) with p50/p99/max in ms, and
// "migrations" with the highest in-flight counts seen (cluster, per source
// host, per target host) next to the limits. Exit status 1 if a limit was
// exceeded or a migration did not succeed.
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/metrics/http_get.h"
#include "controller/orchestrator/fake_agent.h"
#include "proto/controller.grpc.pb.h"
#include "tests/agent_process_util.h"
#include "tests/metrics/controller_process.h"

ABSL_FLAG(int, hosts, 200, "simulated hosts");
ABSL_FLAG(int, vms, 5000, "VMs created through the controller");
ABSL_FLAG(int, migrations, 100, "migrations created at once");
ABSL_FLAG(int, reads, 2000, "samples per read operation");
ABSL_FLAG(absl::Duration, transfer_time, absl::Milliseconds(300),
          "how long each fake source stays TRANSFERRING");
ABSL_FLAG(uint32_t, max_outbound_per_host, 2, "controller limit");
ABSL_FLAG(uint32_t, max_inbound_per_host, 2, "controller limit");
ABSL_FLAG(uint32_t, max_parallel_migrations, 5, "controller limit");

namespace ferry {
namespace {

using controller::testing::FakeAgent;

constexpr uint64_t kGiB = uint64_t{1} << 30;

std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration t = absl::Seconds(30)) {
  auto c = std::make_unique<grpc::ClientContext>();
  c->set_deadline(absl::ToChronoTime(absl::Now() + t));
  return c;
}

struct Stats {
  std::vector<double> ms;
  void Add(absl::Duration d) { ms.push_back(absl::ToDoubleMilliseconds(d)); }
  double Pct(double p) {
    if (ms.empty()) return 0;
    std::sort(ms.begin(), ms.end());
    size_t i = static_cast<size_t>(p * (ms.size() - 1) + 0.5);
    return ms[std::min(i, ms.size() - 1)];
  }
  void Print(const std::string& op, const std::string& extra = "") {
    const double p99 = Pct(0.99);
    std::printf("{\"phase\":\"read\",\"op\":\"%s\",\"samples\":%zu,\"p50_ms\":%.3f,"
                "\"p99_ms\":%.3f,\"max_ms\":%.3f,\"p99_under_20ms\":%s%s}\n",
                op.c_str(), ms.size(), Pct(0.5), p99, Pct(1.0),
                p99 < 20 ? "true" : "false", extra.c_str());
    std::fflush(stdout);
  }
};

v1::HostInfo InfoFor(const FakeAgent& a, int i) {
  v1::HostInfo info;
  info.set_name(a.name());
  info.set_agent_address(a.address());
  info.set_migration_address(a.address());
  info.mutable_capacity()->set_memory_bytes(64 * kGiB);
  info.mutable_capacity()->set_vcpus(64);
  info.mutable_capacity()->set_vms(64);
  info.add_backends(v1::VM_BACKEND_KVM);
  info.add_backends(v1::VM_BACKEND_SOFT);
  (*info.mutable_labels())["zone"] = absl::StrCat("z", i % 4);
  info.set_instance_id(absl::StrCat("inst-", a.name()));
  info.set_agent_version("fake");
  return info;
}

int Run(int argc, char** argv) {
  agent_test::SetArgv0(argv[0]);
  const int n_hosts = absl::GetFlag(FLAGS_hosts);
  const int n_vms = absl::GetFlag(FLAGS_vms);
  const int n_migrations = std::min(absl::GetFlag(FLAGS_migrations), n_vms);
  char tmpl[] = "/tmp/ferry-controller-load.XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  std::fprintf(stderr, "controller data and log in %s\n", dir.c_str());

  // The same controller process the metrics tests use (tests/metrics),
  // with the REST gateway and this run's limits.
  const std::string rest_file = dir + "/controller.rest";
  metrics_test::ControllerProcess controller(
      dir + "/data", "load",
      {"--rest_listen=127.0.0.1:0", "--rest_port_file=" + rest_file,
       absl::StrCat("--max_outbound_per_host=", absl::GetFlag(FLAGS_max_outbound_per_host)),
       absl::StrCat("--max_inbound_per_host=", absl::GetFlag(FLAGS_max_inbound_per_host)),
       absl::StrCat("--max_parallel_migrations=",
                    absl::GetFlag(FLAGS_max_parallel_migrations))});
  if (absl::Status s = controller.WaitReady(); !s.ok()) {
    std::fprintf(stderr, "ferry-controller did not start: %s\n%s\n",
                 s.ToString().c_str(), controller.Log().c_str());
    return 1;
  }
  std::string rest = agent_test::ReadFile(rest_file);
  while (!rest.empty() && rest.back() == '\n') rest.pop_back();
  v1::ControllerService::Stub* stub = &controller.stub();

  // --- hosts -----------------------------------------------------------------
  const absl::Time t0 = absl::Now();
  std::vector<std::unique_ptr<FakeAgent>> agents;
  std::map<std::string, FakeAgent*> by_address;
  for (int i = 0; i < n_hosts; ++i) {
    agents.push_back(std::make_unique<FakeAgent>(absl::StrFormat("host-%03d", i)));
    if (!agents.back()->ok()) {
      std::fprintf(stderr, "fake agent %d cannot listen\n", i);
      return 1;
    }
    by_address[agents.back()->address()] = agents.back().get();
  }
  for (auto& a : agents) {
    a->set_transfer_time(absl::GetFlag(FLAGS_transfer_time));
    a->find_peer = [&by_address](const std::string& endpoint) -> FakeAgent* {
      auto it = by_address.find(endpoint);
      return it == by_address.end() ? nullptr : it->second;
    };
  }
  absl::Duration heartbeat = absl::Seconds(2);
  for (int i = 0; i < n_hosts; ++i) {
    v1::RegisterHostRequest req;
    *req.mutable_info() = InfoFor(*agents[i], i);
    v1::RegisterHostResponse resp;
    grpc::Status s = stub->RegisterHost(Ctx().get(), req, &resp);
    if (!s.ok()) {
      std::fprintf(stderr, "RegisterHost %d: %s\n", i, s.error_message().c_str());
      return 1;
    }
    heartbeat = absl::Seconds(resp.heartbeat_interval().seconds()) +
                absl::Nanoseconds(resp.heartbeat_interval().nanos());
  }
  std::printf("{\"phase\":\"setup\",\"hosts\":%d,\"register_ms\":%.1f,"
              "\"heartbeat_interval_ms\":%.0f}\n",
              n_hosts, absl::ToDoubleMilliseconds(absl::Now() - t0),
              absl::ToDoubleMilliseconds(heartbeat));

  // Heartbeats for every host, as real agents send them, all through the run.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> heartbeats{0}, heartbeat_errors{0};
  std::thread heartbeater([&] {
    while (!stop.load()) {
      const absl::Time round = absl::Now();
      for (int i = 0; i < n_hosts && !stop.load(); ++i) {
        v1::HeartbeatRequest hb;
        hb.set_host_name(agents[i]->name());
        hb.set_instance_id(absl::StrCat("inst-", agents[i]->name()));
        hb.set_healthy(true);
        for (const v1::Vm& vm : agents[i]->Vms()) {  // as a real agent reports
          v1::VmSummary* s = hb.add_vms();
          s->set_name(vm.spec().name());
          s->set_uid(vm.uid());
          s->set_phase(vm.status().phase());
        }
        v1::HeartbeatResponse hr;
        grpc::Status s = stub->Heartbeat(Ctx().get(), hb, &hr);
        ++heartbeats;
        if (!s.ok()) ++heartbeat_errors;
      }
      absl::SleepFor(heartbeat - (absl::Now() - round));
    }
  });

  // --- VMs -------------------------------------------------------------------
  const absl::Time t1 = absl::Now();
  std::atomic<int> next{0}, create_errors{0};
  Stats create_stats;
  absl::Mutex create_mu;
  std::vector<std::thread> creators;
  for (int t = 0; t < 8; ++t) {
    creators.emplace_back([&] {
      for (int i = next++; i < n_vms; i = next++) {
        v1::CreateVmRequest req;
        v1::VmSpec* spec = req.mutable_spec();
        spec->set_name(absl::StrFormat("vm-%05d", i));
        spec->set_memory_bytes(kGiB);
        spec->set_vcpu_count(1);
        spec->set_backend(v1::VM_BACKEND_SOFT);
        spec->mutable_workload()->set_kind(v1::WORKLOAD_KIND_IDLE);
        (*spec->mutable_labels())["app"] = absl::StrCat("app-", i % 50);
        v1::Vm vm;
        const absl::Time s0 = absl::Now();
        grpc::Status s = stub->CreateVm(Ctx().get(), req, &vm);
        const absl::Duration d = absl::Now() - s0;
        if (!s.ok()) {
          if (create_errors++ < 3) {
            std::fprintf(stderr, "CreateVm %d: %s\n", i, s.error_message().c_str());
          }
          continue;
        }
        absl::MutexLock l(&create_mu);
        create_stats.Add(d);
      }
    });
  }
  for (auto& t : creators) t.join();
  const double create_s = absl::ToDoubleSeconds(absl::Now() - t1);
  std::printf("{\"phase\":\"create_vms\",\"vms\":%d,\"errors\":%d,\"seconds\":%.2f,"
              "\"per_s\":%.0f,\"p50_ms\":%.2f,\"p99_ms\":%.2f}\n",
              n_vms, create_errors.load(), create_s, n_vms / create_s,
              create_stats.Pct(0.5), create_stats.Pct(0.99));
  std::fflush(stdout);

  // --- reads under heartbeat load -------------------------------------------
  std::mt19937_64 rng(20261204);
  const int reads = absl::GetFlag(FLAGS_reads);
  {
    Stats st;
    for (int i = 0; i < reads; ++i) {
      v1::GetVmRequest req;
      req.set_name(absl::StrFormat("vm-%05d", static_cast<int>(rng() % n_vms)));
      v1::Vm vm;
      const absl::Time s0 = absl::Now();
      grpc::Status s = stub->GetVm(Ctx().get(), req, &vm);
      st.Add(absl::Now() - s0);
      if (!s.ok()) std::fprintf(stderr, "GetVm: %s\n", s.error_message().c_str());
    }
    st.Print("grpc_get_vm");
  }
  {
    Stats st;
    int pages = 0, items = 0;
    std::string token;
    for (int i = 0; i < reads / 4; ++i) {
      v1::ListVmsRequest req;
      req.set_page_size(100);
      req.set_page_token(token);
      v1::ListVmsResponse resp;
      const absl::Time s0 = absl::Now();
      grpc::Status s = stub->ListVms(Ctx().get(), req, &resp);
      st.Add(absl::Now() - s0);
      if (!s.ok()) break;
      ++pages;
      items += resp.vms_size();
      token = resp.next_page_token();  // walks the whole table, then again
    }
    st.Print("grpc_list_vms_page100", absl::StrFormat(",\"pages\":%d,\"items\":%d", pages, items));
  }
  {
    Stats st;
    for (int i = 0; i < reads / 10; ++i) {
      v1::ListVmsRequest req;
      req.set_page_size(1000);
      req.set_label_selector(absl::StrCat("app=app-", i % 50));
      v1::ListVmsResponse resp;
      const absl::Time s0 = absl::Now();
      grpc::Status s = stub->ListVms(Ctx().get(), req, &resp);
      st.Add(absl::Now() - s0);
      if (!s.ok()) break;
    }
    st.Print("grpc_list_vms_by_label");
  }
  {
    Stats st;
    for (int i = 0; i < reads / 4; ++i) {
      v1::ListHostsRequest req;
      req.set_page_size(1000);
      v1::ListHostsResponse resp;
      const absl::Time s0 = absl::Now();
      grpc::Status s = stub->ListHosts(Ctx().get(), req, &resp);
      st.Add(absl::Now() - s0);
      if (!s.ok() || resp.hosts_size() != n_hosts) {
        std::fprintf(stderr, "ListHosts: %s, %d hosts\n", s.error_message().c_str(),
                     resp.hosts_size());
        break;
      }
    }
    st.Print("grpc_list_hosts_all");
  }
  {
    Stats st;
    for (int i = 0; i < reads; ++i) {
      v1::GetHostRequest req;
      req.set_name(agents[rng() % n_hosts]->name());
      v1::Host h;
      const absl::Time s0 = absl::Now();
      (void)stub->GetHost(Ctx().get(), req, &h);
      st.Add(absl::Now() - s0);
    }
    st.Print("grpc_get_host");
  }
  if (!rest.empty()) {
    Stats get, list;
    for (int i = 0; i < reads / 2; ++i) {
      const absl::Time s0 = absl::Now();
      auto r = metrics::HttpGet(rest,
                                absl::StrFormat("/v1/vms/vm-%05d", static_cast<int>(rng() % n_vms)));
      get.Add(absl::Now() - s0);
      if (!r.ok() || r->status != 200) {
        std::fprintf(stderr, "REST get: %s\n", r.ok() ? r->body.c_str() : r.status().ToString().c_str());
        break;
      }
    }
    get.Print("rest_get_vm");
    for (int i = 0; i < reads / 10; ++i) {
      const absl::Time s0 = absl::Now();
      auto r = metrics::HttpGet(rest, "/v1/vms?pageSize=100");
      list.Add(absl::Now() - s0);
      if (!r.ok() || r->status != 200) break;
    }
    list.Print("rest_list_vms_page100");
  }

  // --- migrations: all at once, through the queue -----------------------------
  // Sources concentrated on a few hosts so the per-host limit binds too.
  const int sources = std::max(1, n_migrations / 10);
  std::vector<std::string> picked;
  for (int i = 0; i < n_vms && static_cast<int>(picked.size()) < n_migrations; ++i) {
    v1::GetVmRequest req;
    req.set_name(absl::StrFormat("vm-%05d", i));
    v1::Vm vm;
    if (!stub->GetVm(Ctx().get(), req, &vm).ok()) continue;
    const std::string& host = vm.status().host();
    const int idx = std::stoi(host.substr(host.find('-') + 1));
    if (idx < sources) picked.push_back(req.name());
  }
  const absl::Time t2 = absl::Now();
  std::vector<std::string> ids;
  for (const std::string& name : picked) {
    v1::CreateMigrationRequest req;
    req.set_vm_name(name);
    v1::Migration m;
    grpc::Status s = stub->CreateMigration(Ctx().get(), req, &m);
    if (s.ok()) {
      ids.push_back(m.id());
    } else {
      std::fprintf(stderr, "CreateMigration %s: %s\n", name.c_str(), s.error_message().c_str());
    }
  }
  uint32_t max_cluster = 0, max_out = 0, max_in = 0, polls = 0;
  uint32_t pending_for_limit = 0;
  int succeeded = 0, failed = 0;
  const absl::Time deadline = absl::Now() + absl::Minutes(10);
  while (absl::Now() < deadline) {
    std::map<std::string, uint32_t> out, in;
    uint32_t active = 0, terminal = 0;
    succeeded = failed = 0;
    std::string token;
    do {
      v1::ListMigrationsRequest req;
      req.set_page_size(1000);
      req.set_page_token(token);
      v1::ListMigrationsResponse resp;
      if (!stub->ListMigrations(Ctx().get(), req, &resp).ok()) break;
      for (const v1::Migration& m : resp.migrations()) {
        switch (m.phase()) {
          case v1::MIGRATION_PHASE_PENDING:
            if (m.pending_reason() == v1::PENDING_REASON_CONCURRENCY_LIMIT) ++pending_for_limit;
            break;
          case v1::MIGRATION_PHASE_SUCCEEDED:
            ++terminal;
            ++succeeded;
            break;
          case v1::MIGRATION_PHASE_FAILED:
          case v1::MIGRATION_PHASE_CANCELLED:
            ++terminal;
            ++failed;
            break;
          default:
            ++active;
            ++out[m.source_host()];
            ++in[m.target_host()];
        }
      }
      token = resp.next_page_token();
    } while (!token.empty());
    ++polls;
    max_cluster = std::max(max_cluster, active);
    for (auto& [h, n] : out) max_out = std::max(max_out, n);
    for (auto& [h, n] : in) max_in = std::max(max_in, n);
    if (terminal == ids.size()) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  const double mig_s = absl::ToDoubleSeconds(absl::Now() - t2);
  const uint32_t lim_out = absl::GetFlag(FLAGS_max_outbound_per_host);
  const uint32_t lim_in = absl::GetFlag(FLAGS_max_inbound_per_host);
  const uint32_t lim_cluster = absl::GetFlag(FLAGS_max_parallel_migrations);
  const bool limits_ok = max_cluster <= lim_cluster && max_out <= lim_out && max_in <= lim_in;
  std::printf("{\"phase\":\"migrations\",\"created\":%zu,\"succeeded\":%d,\"failed\":%d,"
              "\"seconds\":%.2f,\"polls\":%u,\"max_in_flight\":%u,\"limit_cluster\":%u,"
              "\"max_outbound_per_host\":%u,\"limit_outbound\":%u,"
              "\"max_inbound_per_host\":%u,\"limit_inbound\":%u,"
              "\"pending_concurrency_limit_seen\":%s,\"limits_respected\":%s}\n",
              ids.size(), succeeded, failed, mig_s, polls, max_cluster, lim_cluster,
              max_out, lim_out, max_in, lim_in, pending_for_limit > 0 ? "true" : "false",
              limits_ok ? "true" : "false");
  std::printf("{\"phase\":\"heartbeats\",\"sent\":%llu,\"errors\":%llu}\n",
              static_cast<unsigned long long>(heartbeats.load()),
              static_cast<unsigned long long>(heartbeat_errors.load()));
  std::fflush(stdout);
  stop = true;
  heartbeater.join();
  const bool ok = limits_ok && succeeded == static_cast<int>(ids.size()) &&
                  static_cast<int>(ids.size()) == n_migrations;
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace ferry

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return ferry::Run(argc, argv);
}
