#include "controller/metrics/controller_metrics.h"

#include <map>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "common/metrics/families.h"
#include "proto/controller.pb.h"
#include "proto/migration.pb.h"
#include "proto/vm.pb.h"

namespace ferry::controller {
namespace {

using metrics::AddSample;
using metrics::MakeFamily;
using prometheus::MetricFamily;
using prometheus::MetricType;

// Every record of type T, page by page.
template <typename T, typename F>
absl::Status ForEach(const Store& store, F&& f) {
  ListOptions<T> options;
  options.page_size = kMaxPageSize;
  for (;;) {
    absl::StatusOr<ListPage<T>> page = store.List<T>(options);
    if (!page.ok()) return page.status();
    for (const T& item : page->items) f(item);
    if (page->next_page_token.empty()) return absl::OkStatus();
    options.page_token = page->next_page_token;
  }
}

const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  return *b;
}

}  // namespace

struct ControllerMetrics::Counts {
  std::map<std::string, int> hosts;       // readiness
  int cordoned = 0;
  std::map<std::string, int> vms;         // phase
  std::map<std::string, int> migrations;  // phase
};

ControllerMetrics::ControllerMetrics(Store& store)
    : store_(store), registry_(std::make_shared<prometheus::Registry>()) {
  requests_ = &prometheus::BuildCounter()
                   .Name("ferry_controller_api_requests_total")
                   .Help("Controller API calls by gRPC method and status code.")
                   .Register(*registry_);
  request_seconds_ = &prometheus::BuildHistogram()
                          .Name("ferry_controller_api_request_duration_seconds")
                          .Help("Controller API call latency by gRPC method.")
                          .Register(*registry_);
  commit_seconds_ = &prometheus::BuildHistogram()
                         .Name("ferry_controller_store_commit_seconds")
                         .Help("RocksDB commit latency (synced WAL write).")
                         .Register(*registry_)
                         .Add({}, LatencyBuckets());
  scrape_errors_ = &prometheus::BuildCounter()
                        .Name("ferry_controller_metrics_store_errors_total")
                        .Help("Scrapes whose store read failed (state gauges "
                              "were left out).")
                        .Register(*registry_)
                        .Add({});
}

absl::StatusOr<ControllerMetrics::Counts> ControllerMetrics::CountRecords() const {
  Counts c;
  // Every enum value gets a series (0 included), so alerts and dashboards
  // see 0 instead of "no data".
  for (int r = v1::HostReadiness_MIN; r <= v1::HostReadiness_MAX; ++r) {
    if (v1::HostReadiness_IsValid(r) && r != v1::HOST_READINESS_UNSPECIFIED) {
      c.hosts[metrics::EnumLabel(v1::HostReadiness_Name(r), "HOST_READINESS_")] = 0;
    }
  }
  for (int p = v1::VmPhase_MIN; p <= v1::VmPhase_MAX; ++p) {
    if (v1::VmPhase_IsValid(p) && p != v1::VM_PHASE_UNSPECIFIED) {
      c.vms[metrics::EnumLabel(v1::VmPhase_Name(p), "VM_PHASE_")] = 0;
    }
  }
  for (int p = v1::MigrationPhase_MIN; p <= v1::MigrationPhase_MAX; ++p) {
    if (v1::MigrationPhase_IsValid(p) && p != v1::MIGRATION_PHASE_UNSPECIFIED) {
      c.migrations[metrics::EnumLabel(v1::MigrationPhase_Name(p), "MIGRATION_PHASE_")] = 0;
    }
  }
  absl::Status s = ForEach<v1::Host>(store_, [&](const v1::Host& h) {
    ++c.hosts[metrics::EnumLabel(v1::HostReadiness_Name(h.readiness()), "HOST_READINESS_")];
    if (h.cordoned()) ++c.cordoned;
  });
  if (!s.ok()) return s;
  s = ForEach<v1::Vm>(store_, [&](const v1::Vm& vm) {
    ++c.vms[metrics::EnumLabel(v1::VmPhase_Name(vm.status().phase()), "VM_PHASE_")];
  });
  if (!s.ok()) return s;
  s = ForEach<v1::Migration>(store_, [&](const v1::Migration& m) {
    ++c.migrations[metrics::EnumLabel(v1::MigrationPhase_Name(m.phase()), "MIGRATION_PHASE_")];
  });
  if (!s.ok()) return s;
  return c;
}

std::vector<prometheus::MetricFamily> ControllerMetrics::Collect() const {
  std::vector<MetricFamily> out;
  absl::StatusOr<Counts> counts = CountRecords();
  if (counts.ok()) {
    MetricFamily hosts = MakeFamily("ferry_controller_hosts",
                                    "Registered hosts by readiness.", MetricType::Gauge);
    for (const auto& [r, n] : counts->hosts) AddSample(hosts, {{"readiness", r}}, n);
    out.push_back(std::move(hosts));
    MetricFamily cordoned = MakeFamily("ferry_controller_hosts_cordoned",
                                       "Hosts cordoned (no new VMs or migrations).",
                                       MetricType::Gauge);
    AddSample(cordoned, {}, counts->cordoned);
    out.push_back(std::move(cordoned));
    MetricFamily vms = MakeFamily("ferry_controller_vms", "VMs by phase.", MetricType::Gauge);
    for (const auto& [p, n] : counts->vms) AddSample(vms, {{"phase", p}}, n);
    out.push_back(std::move(vms));
    MetricFamily migrations = MakeFamily("ferry_controller_migrations",
                                         "Migration records by phase (terminal "
                                         "ones until garbage-collected).",
                                         MetricType::Gauge);
    for (const auto& [p, n] : counts->migrations) AddSample(migrations, {{"phase", p}}, n);
    out.push_back(std::move(migrations));
    MetricFamily queue = MakeFamily("ferry_controller_migration_queue_length",
                                    "PENDING migrations waiting for a target or "
                                    "a concurrency slot.", MetricType::Gauge);
    AddSample(queue, {}, counts->migrations.at("pending"));
    out.push_back(std::move(queue));
  } else {
    // A scrape must not fail because the store did; the counter says so.
    scrape_errors_->Increment();
  }
  for (MetricFamily& f : registry_->Collect()) out.push_back(std::move(f));
  return out;
}

void ControllerMetrics::RecordRequest(absl::string_view method, int code,
                                      absl::Duration latency) {
  static constexpr const char* kCodes[] = {
      "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
      "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
      "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
      "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  const std::string code_name = code >= 0 && code < 17 ? kCodes[code] : "UNKNOWN";
  const std::string m(method);
  requests_->Add({{"method", m}, {"code", code_name}}).Increment();
  request_seconds_->Add({{"method", m}}, LatencyBuckets())
      .Observe(absl::ToDoubleSeconds(latency));
}

void ControllerMetrics::ObserveStoreCommit(absl::Duration latency) {
  commit_seconds_->Observe(absl::ToDoubleSeconds(latency));
}

}  // namespace ferry::controller
