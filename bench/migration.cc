// Live migration end to end: two real ferry-agent processes on this host,
// one VM, the controller's MigrationDriver (controller/orchestrator).
//
//   bazel run -c opt //bench:migration [-- --quick] [-- --scenarios=idle-1g-s1,...]
//       [--agent_binary=PATH] [--max_fill=12s] [--warmup=2s]
//
// For each scenario: start a VM on agent A, let its workload run (until it
// has written its working set once, at most --max_fill, at least
// --warmup), migrate it to agent B, check it keeps running there, delete
// it. One JSON object per line:
//
//   scenario, memory_bytes, workload, target_dirty_rate_bytes_per_s,
//   dirty_rate_bytes_per_s (measured by the agent just before migrating),
//   written_bytes (bytes the guest wrote before migrating, capped at the
//   working set: an upper bound of its distinct non-zero data),
//   total_ms (source: StartOutgoing -> handoff confirmed), downtime_ms
//   (source pause -> destination resume), setup_ms (GetVm + Prepare +
//   Start), driver_ms (the whole driver run), rounds, bytes_sent (wire),
//   pages_sent, zero_pages, payload_bytes (page data before compression,
//   as of the handoff), throughput_bytes_per_s (wire bytes / total),
//   payload_throughput_bytes_per_s (payload bytes / total),
//   fraction_of_loopback, guest_selfcheck_errors (on the destination after
//   the move), converged (switched over within the policy: SUCCEEDED),
//   max_throttle_percent, streams, phase, message.
//
// The first line is a loopback TCP baseline: two threads, one socket, a
// ~1 s blast of 1 MiB writes: what this host's loopback can carry at all,
// so that throughput reads as a fraction of it.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "controller/orchestrator/migration_driver.h"
#include "proto/agent.grpc.pb.h"
#include "tests/agent_process_util.h"

ABSL_FLAG(std::string, agent_binary, "",
          "ferry-agent binary; default: from the runfiles");
ABSL_FLAG(std::string, scenarios, "",
          "comma-separated scenario names (default: all, or the --quick set)");
ABSL_FLAG(bool, quick, false, "a small subset");
ABSL_FLAG(absl::Duration, max_fill, absl::Seconds(12),
          "longest wait for the workload to write its working set once");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(2),
          "shortest time the workload runs before the migration");
ABSL_FLAG(bool, list, false, "print the scenario names and exit");
// The target is "converges with downtime under 50 ms", so the
// policy asks for that; QEMU's 300 ms default would let the engine switch
// over earlier with a longer pause.
ABSL_FLAG(absl::Duration, max_downtime, absl::Milliseconds(50),
          "MigrationPolicy.max_downtime of every scenario");

namespace ferry {
namespace {

using agent_test::Agent;
using agent_test::AgentConfig;
using agent_test::Ctx;

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t kMB = 1000 * 1000;

struct Scenario {
  std::string name;
  uint64_t memory = kGiB;
  v1::WorkloadKind kind = v1::WORKLOAD_KIND_IDLE;
  uint64_t working_set = 0;
  uint64_t rate = 0;  // bytes/s
  uint32_t streams = 1;
  // RANDOM: every written page is pseudo-random (the issue's "512 MiB of
  // random data"): incompressible, so the figures show the data path.
  v1::PageFill fill = v1::PAGE_FILL_STAMP;
};

std::vector<Scenario> AllScenarios() {
  std::vector<Scenario> base = {
      {"idle-1g", kGiB, v1::WORKLOAD_KIND_IDLE, 0, 0},
      {"uniform50-1g", kGiB, v1::WORKLOAD_KIND_UNIFORM, 512 * kMiB, 50 * kMB, 1, v1::PAGE_FILL_RANDOM},
      {"uniform200-1g", kGiB, v1::WORKLOAD_KIND_UNIFORM, 512 * kMiB, 200 * kMB, 1, v1::PAGE_FILL_RANDOM},
      {"uniform400-1g", kGiB, v1::WORKLOAD_KIND_UNIFORM, 512 * kMiB, 400 * kMB, 1, v1::PAGE_FILL_RANDOM},
      {"hotcold400-1g", kGiB, v1::WORKLOAD_KIND_HOTCOLD, 512 * kMiB, 400 * kMB, 1, v1::PAGE_FILL_RANDOM},
      {"idle-4g", 4 * kGiB, v1::WORKLOAD_KIND_IDLE, 0, 0},
  };
  std::vector<Scenario> out;
  for (const Scenario& s : base) {
    for (uint32_t streams : {1u, 4u}) {
      Scenario t = s;
      t.streams = streams;
      t.name = absl::StrCat(s.name, "-s", streams);
      out.push_back(t);
    }
  }
  return out;
}

const std::vector<std::string> kQuick = {"idle-1g-s1", "uniform200-1g-s4"};

std::string WorkloadName(v1::WorkloadKind k) {
  switch (k) {
    case v1::WORKLOAD_KIND_IDLE: return "idle";
    case v1::WORKLOAD_KIND_UNIFORM: return "uniform";
    case v1::WORKLOAD_KIND_HOTCOLD: return "hotcold";
    case v1::WORKLOAD_KIND_SEQUENTIAL: return "sequential";
    default: return "other";
  }
}

double Ms(const google::protobuf::Duration& d) {
  return d.seconds() * 1e3 + d.nanos() / 1e6;
}

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

// Loopback TCP: one writer thread, one reader thread, ~1 s.
double LoopbackBaseline() {
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listener, 1) != 0) {
    close(listener);
    return 0;
  }
  socklen_t len = sizeof(addr);
  getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  std::atomic<uint64_t> received{0};
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    int fd = accept(listener, nullptr, nullptr);
    std::vector<char> buf(1 << 20);
    for (;;) {
      ssize_t n = read(fd, buf.data(), buf.size());
      if (n <= 0) break;
      received += static_cast<uint64_t>(n);
    }
    close(fd);
  });
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    close(listener);
    reader.join();
    return 0;
  }
  std::vector<char> buf(1 << 20, 'x');
  // Warm up, then measure what the reader got over the window.
  const absl::Time warm = absl::Now() + absl::Milliseconds(100);
  while (absl::Now() < warm) {
    if (write(fd, buf.data(), buf.size()) <= 0) break;
  }
  const uint64_t start_bytes = received.load();
  const absl::Time start = absl::Now();
  const absl::Time end = start + absl::Seconds(1);
  while (absl::Now() < end) {
    if (write(fd, buf.data(), buf.size()) <= 0) break;
  }
  const uint64_t bytes = received.load() - start_bytes;
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  stop = true;
  shutdown(fd, SHUT_RDWR);
  close(fd);
  reader.join();
  close(listener);
  return bytes / secs;
}

v1::MigrationPolicy BenchPolicy(uint32_t streams) {
  v1::MigrationPolicy p;
  const absl::Duration max_downtime = absl::GetFlag(FLAGS_max_downtime);
  p.mutable_max_downtime()->set_seconds(
      absl::ToInt64Seconds(max_downtime));
  p.mutable_max_downtime()->set_nanos(static_cast<int32_t>(
      absl::ToInt64Nanoseconds(max_downtime % absl::Seconds(1))));
  p.set_streams(streams);
  p.set_max_rounds(30);
  p.set_auto_converge(true);
  p.set_throttle_initial_percent(20);
  p.set_throttle_increment_percent(10);
  p.set_throttle_max_percent(99);
  p.mutable_progress_timeout()->set_seconds(30);
  p.mutable_completion_timeout_per_gib()->set_seconds(60);
  p.set_verify_memory(v1::MEMORY_VERIFICATION_SAMPLED);
  p.set_verify_sample_pages(4096);
  p.set_handoff(v1::HANDOFF_MODE_CONTROLLER);
  return p;
}

int Run(const std::string& binary) {
  std::vector<Scenario> chosen;
  std::vector<std::string> names;
  if (!absl::GetFlag(FLAGS_scenarios).empty()) {
    names = absl::StrSplit(absl::GetFlag(FLAGS_scenarios), ',', absl::SkipEmpty());
  } else if (absl::GetFlag(FLAGS_quick)) {
    names = kQuick;
  }
  for (const Scenario& s : AllScenarios()) {
    if (absl::GetFlag(FLAGS_list)) std::printf("%s\n", s.name.c_str());
    if (names.empty() || std::find(names.begin(), names.end(), s.name) != names.end()) {
      chosen.push_back(s);
    }
  }
  if (absl::GetFlag(FLAGS_list)) return 0;
  if (chosen.empty()) {
    std::fprintf(stderr, "no scenario matches --scenarios (try --list)\n");
    return 2;
  }

  const double loopback = LoopbackBaseline();
  std::printf("{\"scenario\":\"loopback_tcp_baseline\",\"threads\":2,"
              "\"bytes_per_s\":%.0f}\n",
              loopback);
  std::fflush(stdout);

  char tmpl[] = "/tmp/ferry-bench-migration-XXXXXX";
  const char* dir = mkdtemp(tmpl);
  if (dir == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  std::fprintf(stderr, "agent logs and data dirs in %s\n", dir);
  auto start_agent = [&](const std::string& name) {
    AgentConfig c;
    c.name = name;
    c.data_dir = absl::StrCat(dir, "/data-", name);
    c.log_dir = dir;
    c.binary = binary;
    c.extra = {"--memory_capacity=10GiB", "--vcpu_capacity=8",
               "--stats_interval=500ms"};
    return std::make_unique<Agent>(c);
  };
  std::unique_ptr<Agent> a = start_agent("bench-a");
  std::unique_ptr<Agent> b = start_agent("bench-b");
  for (Agent* agent : {a.get(), b.get()}) {
    absl::Status s = agent->WaitReady();
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
      return 1;
    }
  }

  int failures = 0;
  for (const Scenario& sc : chosen) {
    const std::string vm_name = "bench-vm";
    v1::AgentCreateVmRequest create;
    v1::VmSpec* spec = create.mutable_spec();
    spec->set_name(vm_name);
    spec->set_memory_bytes(sc.memory);
    spec->set_vcpu_count(1);
    spec->set_backend(v1::VM_BACKEND_AUTO);
    spec->mutable_workload()->set_kind(sc.kind);
    spec->mutable_workload()->set_working_set_bytes(sc.working_set);
    spec->mutable_workload()->set_dirty_rate_bytes_per_s(sc.rate);
    spec->mutable_workload()->set_hot_fraction(0.1);
    spec->mutable_workload()->set_hot_probability(0.9);
    spec->mutable_workload()->set_page_fill(sc.fill);
    v1::Vm vm;
    grpc::Status s = a->stub().CreateVm(Ctx(absl::Seconds(60)).get(), create, &vm);
    if (!s.ok()) {
      std::fprintf(stderr, "%s: CreateVm: %s\n", sc.name.c_str(),
                   s.error_message().c_str());
      ++failures;
      continue;
    }
    // Let the workload run: write its working set once (bounded).
    const absl::Time t0 = absl::Now();
    const absl::Time fill_end = t0 + absl::GetFlag(FLAGS_max_fill);
    const absl::Time warm_end = t0 + absl::GetFlag(FLAGS_warmup);
    v1::AgentGetVmRequest get;
    get.set_name(vm_name);
    for (;;) {
      absl::SleepFor(absl::Milliseconds(100));
      if (!a->stub().GetVm(Ctx().get(), get, &vm).ok()) break;
      const uint64_t written = vm.status().guest().pages_written() * 4096;
      const absl::Time now = absl::Now();
      if (now >= fill_end) break;
      if (now >= warm_end && (sc.working_set == 0 || written >= sc.working_set)) break;
    }
    const uint64_t written =
        std::min<uint64_t>(vm.status().guest().pages_written() * 4096,
                           sc.working_set == 0 ? 0 : sc.working_set);
    v1::GetVmStatsRequest stats_req;
    stats_req.set_name(vm_name);
    stats_req.mutable_window()->set_seconds(1);
    v1::VmStats stats;
    a->stub().GetVmStats(Ctx().get(), stats_req, &stats);

    controller::MigrationRequest req;
    req.vm_name = vm_name;
    req.source_address = a->address();
    req.destination_address = b->address();
    req.source_host = "bench-a";
    req.destination_host = "bench-b";
    req.policy = BenchPolicy(sc.streams);
    req.rpc_timeout = absl::Seconds(60);
    req.confirm_timeout = absl::Seconds(120);
    controller::MigrationDetails details;
    uint64_t max_zero = 0;
    const absl::Time d0 = absl::Now();
    v1::MigrationResult r = controller::RunMigration(
        req,
        [&](const v1::MigrationProgress& p) {
          max_zero = std::max<uint64_t>(max_zero, p.zero_pages());
        },
        &details);
    const absl::Duration driver_time = absl::Now() - d0;
    const bool ok = r.phase() == v1::MIGRATION_PHASE_SUCCEEDED;
    Agent* holder = ok ? b.get() : a.get();
    uint64_t selfcheck = 0;
    if (ok) absl::SleepFor(absl::Milliseconds(500));  // let it run there
    if (holder->stub().GetVm(Ctx().get(), get, &vm).ok()) {
      selfcheck = vm.status().selfcheck_errors();
    }
    const double total_ms = Ms(r.total_time());
    const double throughput =
        total_ms > 0 ? r.wire_bytes() / (total_ms / 1e3) : 0;
    std::printf(
        "{\"scenario\":\"%s\",\"memory_bytes\":%llu,\"workload\":\"%s\","
        "\"page_fill\":\"%s\",\"working_set_bytes\":%llu,\"written_bytes\":%llu,"
        "\"target_dirty_rate_bytes_per_s\":%llu,"
        "\"dirty_rate_bytes_per_s\":%llu,\"total_ms\":%.1f,\"downtime_ms\":%.2f,"
        "\"setup_ms\":%.1f,\"driver_ms\":%.1f,\"rounds\":%u,\"bytes_sent\":%llu,"
        "\"pages_sent\":%llu,\"zero_pages\":%llu,\"payload_bytes\":%llu,"
        "\"throughput_bytes_per_s\":%.0f,\"payload_throughput_bytes_per_s\":%.0f,"
        "\"fraction_of_loopback\":%.3f,\"guest_selfcheck_errors\":%llu,"
        "\"converged\":%s,\"max_throttle_percent\":%u,\"streams\":%u,"
        "\"phase\":\"%s\",\"message\":\"%s\"}\n",
        sc.name.c_str(), static_cast<unsigned long long>(sc.memory),
        WorkloadName(sc.kind).c_str(),
        sc.fill == v1::PAGE_FILL_RANDOM ? "random" : "stamp",
        static_cast<unsigned long long>(sc.working_set),
        static_cast<unsigned long long>(written),
        static_cast<unsigned long long>(sc.rate),
        static_cast<unsigned long long>(stats.dirty_rate_bytes_per_s()), total_ms,
        Ms(r.downtime()), absl::ToDoubleMilliseconds(details.setup_time),
        absl::ToDoubleMilliseconds(driver_time), r.rounds(),
        static_cast<unsigned long long>(r.wire_bytes()),
        static_cast<unsigned long long>(r.pages_sent()),
        static_cast<unsigned long long>(
            std::max<uint64_t>(max_zero, details.last_progress.zero_pages())),
        static_cast<unsigned long long>(details.last_progress.payload_bytes()),
        throughput,
        total_ms > 0 ? details.last_progress.payload_bytes() / (total_ms / 1e3) : 0.0,
        loopback > 0 ? throughput / loopback : 0.0,
        static_cast<unsigned long long>(selfcheck), ok ? "true" : "false",
        r.max_throttle_percent(), sc.streams,
        v1::MigrationPhase_Name(r.phase()).c_str(), JsonEscape(r.message()).c_str());
    std::fflush(stdout);
    if (!ok || selfcheck != 0) ++failures;
    v1::AgentDeleteVmRequest del;
    del.set_name(vm_name);
    del.set_force(true);
    v1::AgentDeleteVmResponse del_resp;
    holder->stub().DeleteVm(Ctx(absl::Seconds(60)).get(), del, &del_resp);
  }
  a->Terminate();
  b->Terminate();
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace ferry

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  ferry::agent_test::SetArgv0(argv[0]);
  std::string binary = absl::GetFlag(FLAGS_agent_binary);
  if (binary.empty()) binary = ferry::agent_test::AgentBinary();
  return ferry::Run(binary);
}
