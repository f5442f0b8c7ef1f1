// Scrape cost of the agent's /metrics: an agent-shaped process (VmRegistry
// on the soft backend, background dirty sampling every second, the agent
// collector behind a real HTTP endpoint) with N VMs, scraped over loopback
// like Prometheus does. Target (issue 8): under 50 ms with 100 VMs.
//
// One JSON object per line:
//   {"bench":"metrics_scrape","vms":100,"scrapes":50,"p50_ms":..,"p99_ms":..,
//    "max_ms":..,"body_bytes":..,"samples":..,"target_ms":50,"ok":true}
//   bazel run -c opt //bench:metrics_scrape [-- --vms=100 --scrapes=50]
//
// The VMs run the IDLE workload: 100 busy soft-backend vCPUs would only
// measure how two cores share out guest loops, not what a scrape costs.
// The per-VM sampler still hashes its page sample every second, so a scrape
// can meet the sampler holding a VM's sample lock (the real contention).
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/metrics/agent_collector.h"
#include "agent/service/soft_port.h"
#include "agent/service/vm_registry.h"
#include "agent/vmm/soft/soft_backend.h"
#include "common/metrics/http_get.h"
#include "common/metrics/metrics_server.h"
#include "common/metrics/text_format.h"

ABSL_FLAG(int, vms, 100, "VMs on the agent");
ABSL_FLAG(int, scrapes, 50, "scrapes to time");
ABSL_FLAG(uint64_t, vm_mib, 32, "guest RAM per VM (MiB)");
ABSL_FLAG(absl::Duration, sample_interval, absl::Seconds(1),
          "the registry's dirty-rate sampling period (0 = no sampler: "
          "isolates the scrape's own cost)");

namespace ferry {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

void Error(const std::string& what, const absl::Status& s) {
  std::printf("{\"bench\":\"metrics_scrape\",\"error\":\"%s: %s\"}\n",
              what.c_str(), std::string(s.message()).c_str());
}

// The machine's 1-minute load average: scrape latency on a shared 2-core
// box says little without it.
double LoadAvg() {
  double l = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &l) != 1) l = -1;
    std::fclose(f);
  }
  return l;
}

int Run() {
  const int vms = absl::GetFlag(FLAGS_vms);
  const int scrapes = absl::GetFlag(FLAGS_scrapes);
  const uint64_t vm_bytes = absl::GetFlag(FLAGS_vm_mib) * kMiB;
  vmm::SoftBackend soft(service::MakeSoftMemoryPortFactory());
  service::BackendSet backends;
  backends.soft = &soft;
  backends.kvm_status = absl::NotFoundError("soft backend only in this bench");
  service::RegistryOptions options;
  options.host_name = "bench-host";
  options.capacity = {vm_bytes * static_cast<uint64_t>(vms), static_cast<uint32_t>(vms)};
  options.sample_interval = absl::GetFlag(FLAGS_sample_interval);
  service::VmRegistry registry(backends, options);
  for (int i = 0; i < vms; ++i) {
    v1::VmSpec spec;
    spec.set_name(absl::StrCat("vm-", i));
    spec.set_memory_bytes(vm_bytes);
    spec.set_vcpu_count(1);
    spec.set_backend(v1::VM_BACKEND_SOFT);
    spec.mutable_workload()->set_kind(v1::WORKLOAD_KIND_IDLE);
    absl::StatusOr<v1::Vm> vm = registry.Create(spec, "");
    if (!vm.ok()) {
      Error(absl::StrCat("create vm-", i), vm.status());
      return 1;
    }
  }
  absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> server =
      metrics::MetricsServer::Start("127.0.0.1:0");
  if (!server.ok()) {
    Error("metrics server", server.status());
    return 1;
  }
  agent_metrics::AgentCollectorOptions copts;
  copts.host = "bench-host";
  (*server)->AddCollectable(
      std::make_shared<agent_metrics::AgentCollector>(registry, nullptr, copts));
  // Let every VM's sampler close a couple of windows so all series exist.
  absl::SleepFor(absl::Milliseconds(2500));

  std::vector<double> ms;
  size_t body_bytes = 0;
  int samples = 0;
  for (int i = 0; i < scrapes; ++i) {
    const absl::Time t0 = absl::Now();
    absl::StatusOr<metrics::HttpResponse> r =
        metrics::HttpGet((*server)->address(), "/metrics", absl::Seconds(5));
    const absl::Duration took = absl::Now() - t0;
    if (!r.ok() || r->status != 200) {
      Error("scrape", r.ok() ? absl::InternalError(absl::StrCat("HTTP ", r->status))
                             : r.status());
      return 1;
    }
    ms.push_back(absl::ToDoubleMilliseconds(took));
    body_bytes = r->body.size();
    if (i == 0) {
      absl::StatusOr<std::vector<metrics::Sample>> parsed =
          metrics::ParseTextFormat(r->body);
      if (!parsed.ok()) {
        Error("parse", parsed.status());
        return 1;
      }
      samples = static_cast<int>(parsed->size());
    }
    // Prometheus scrapes every few seconds; spread scrapes over sampler
    // passes instead of hammering back to back.
    absl::SleepFor(absl::Milliseconds(100));
  }
  std::sort(ms.begin(), ms.end());
  auto pct = [&](double p) {
    return ms[std::min(ms.size() - 1, static_cast<size_t>(p * ms.size()))];
  };
  const double target = 50;
  std::printf(
      "{\"bench\":\"metrics_scrape\",\"vms\":%d,\"scrapes\":%d,"
      "\"sampler\":%s,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,"
      "\"max_ms\":%.3f,\"body_bytes\":%zu,\"samples\":%d,\"target_ms\":%.0f,"
      "\"loadavg1\":%.2f,\"ok\":%s}\n",
      vms, scrapes,
      absl::GetFlag(FLAGS_sample_interval) > absl::ZeroDuration() ? "true" : "false",
      pct(0.5), pct(0.9), pct(0.99), ms.back(), body_bytes, samples, target, LoadAvg(),
      pct(0.99) < target ? "true" : "false");
  std::fflush(stdout);
  (*server).reset();
  registry.Shutdown();
  return 0;
}

}  // namespace
}  // namespace ferry

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return ferry::Run();
}
