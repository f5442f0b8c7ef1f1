#include "agent/metrics/agent_collector.h"

#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/service/proto_util.h"
#include "common/metrics/families.h"
#include "proto/phases.h"
#include "proto/migration.pb.h"
#include "proto/vm.pb.h"

namespace ferry::agent_metrics {
namespace {

using metrics::AddSample;
using metrics::LabelList;
using metrics::MakeFamily;
using prometheus::MetricFamily;
using prometheus::MetricType;

std::string PhaseWord(v1::MigrationPhase p) {
  return metrics::EnumLabel(v1::MigrationPhase_Name(p), "MIGRATION_PHASE_");
}

std::string RoleWord(v1::MigrationRole r) {
  return metrics::EnumLabel(v1::MigrationRole_Name(r), "MIGRATION_ROLE_");
}

// The phases a migration can be in on an agent while in flight; every one
// gets a ferry_migrations_in_flight series (0 included) so dashboards and
// rules always find them.
constexpr v1::MigrationPhase kInFlightPhases[] = {
    v1::MIGRATION_PHASE_PREPARING,  v1::MIGRATION_PHASE_TRANSFERRING,
    v1::MIGRATION_PHASE_THROTTLING, v1::MIGRATION_PHASE_SWITCHOVER,
    v1::MIGRATION_PHASE_FINISHING,  v1::MIGRATION_PHASE_CONFIRMING,
    v1::MIGRATION_PHASE_ROLLING_BACK};
constexpr v1::MigrationRole kRoles[] = {v1::MIGRATION_ROLE_SOURCE,
                                        v1::MIGRATION_ROLE_DESTINATION};

double Seconds(const google::protobuf::Duration& d) {
  return absl::ToDoubleSeconds(service::FromProtoDuration(d));
}

}  // namespace

AgentCollector::AgentCollector(service::VmRegistry& registry,
                               service::MigrationHooks* migrations,
                               AgentCollectorOptions options)
    : registry_(registry),
      migrations_(migrations),
      options_(std::move(options)),
      totals_(std::make_shared<prometheus::Registry>()) {
  const std::map<std::string, std::string> host = {{"host", options_.host}};
  completed_ = &prometheus::BuildCounter()
                    .Name("ferry_migrations_completed_total")
                    .Help("Migrations that ended on this agent, by role, "
                          "result (succeeded|failed|cancelled) and failure "
                          "reason (none when succeeded).")
                    .Labels(host)
                    .Register(*totals_);
  over_limit_ = &prometheus::BuildCounter()
                     .Name("ferry_migration_downtime_over_limit_total")
                     .Help("Succeeded migrations whose measured downtime "
                           "exceeded their policy's max_downtime.")
                     .Labels(host)
                     .Register(*totals_);
  wire_bytes_ = &prometheus::BuildCounter()
                     .Name("ferry_migration_wire_bytes_total")
                     .Help("Bytes sent over the data plane by migrations that "
                           "ended on this agent.")
                     .Labels(host)
                     .Register(*totals_);
  downtime_ = &prometheus::BuildHistogram()
                   .Name("ferry_migration_downtime_seconds")
                   .Help("Guest pause of succeeded migrations, source pause "
                         "to destination resume.")
                   .Labels(host)
                   .Register(*totals_);
  total_time_ = &prometheus::BuildHistogram()
                     .Name("ferry_migration_duration_seconds")
                     .Help("Total time of ended migrations, by role and result.")
                     .Labels(host)
                     .Register(*totals_);
  rounds_ = &prometheus::BuildHistogram()
                 .Name("ferry_migration_rounds")
                 .Help("Pre-copy rounds of succeeded migrations.")
                 .Labels(host)
                 .Register(*totals_);
  scrape_time_ = &prometheus::BuildHistogram()
                      .Name("ferry_agent_metrics_collect_seconds")
                      .Help("Time spent computing the agent's metrics per "
                            "scrape (serialization excluded).")
                      .Labels(host)
                      .Register(*totals_);
  // Pre-create the series rules and dashboards rely on, so rate() and
  // histogram_quantile() have something to work on before the first
  // migration ends.
  for (v1::MigrationRole role : kRoles) {
    const std::string r = RoleWord(role);
    completed_->Add({{"role", r}, {"result", "succeeded"}, {"reason", "none"}});
    completed_->Add({{"role", r}, {"result", "failed"}, {"reason", "unspecified"}});
    over_limit_->Add({{"role", r}});
    wire_bytes_->Add({{"role", r}});
    total_time_->Add({{"role", r}, {"result", "succeeded"}},
                     prometheus::Histogram::BucketBoundaries{
                         0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800});
  }
  downtime_->Add({{"role", "source"}},
                 prometheus::Histogram::BucketBoundaries{
                     0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10});
  rounds_->Add({{"role", "source"}},
               prometheus::Histogram::BucketBoundaries{1, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50});
  collect_seconds_ = &scrape_time_->Add(
      {}, prometheus::Histogram::BucketBoundaries{0.0005, 0.001, 0.0025, 0.005,
                                                  0.01, 0.025, 0.05, 0.1, 0.25});
  if (migrations_ != nullptr && options_.observe_interval > absl::ZeroDuration()) {
    poller_ = std::thread([this] { PollLoop(); });
  }
}

AgentCollector::~AgentCollector() {
  stop_.Notify();
  if (poller_.joinable()) poller_.join();
}

void AgentCollector::PollLoop() {
  while (!stop_.WaitForNotificationWithTimeout(options_.observe_interval)) {
    ObserveMigrations();
  }
}

std::vector<v1::AgentMigration> AgentCollector::ListMigrations() const {
  std::vector<v1::AgentMigration> out;
  if (migrations_ == nullptr) return out;
  absl::StatusOr<v1::AgentListMigrationsResponse> list =
      migrations_->ListMigrations(v1::AgentListMigrationsRequest());
  // A failing list (agent shutting down) just yields no migration series.
  if (!list.ok()) return out;
  out.assign(list->migrations().begin(), list->migrations().end());
  return out;
}

void AgentCollector::ObserveMigrations() const {
  ObserveList(ListMigrations());
}

void AgentCollector::ObserveList(const std::vector<v1::AgentMigration>& list) const {
  absl::MutexLock lock(&mu_);
  std::set<std::string> listed;
  for (const v1::AgentMigration& m : list) {
    listed.insert(m.migration_id());
    if (!v1::IsTerminalPhase(m.phase())) continue;
    if (counted_.insert(m.migration_id()).second) CountTerminal(m);
  }
  // Forget ids the engine forgot: bounded memory, and an id cannot come back.
  for (auto it = counted_.begin(); it != counted_.end();) {
    it = listed.count(*it) ? std::next(it) : counted_.erase(it);
  }
}

void AgentCollector::CountTerminal(const v1::AgentMigration& m) const {
  const v1::MigrationResult& r = m.result();
  const v1::MigrationPhase phase =
      r.phase() != v1::MIGRATION_PHASE_UNSPECIFIED ? r.phase() : m.phase();
  const std::string role = RoleWord(m.role());
  const std::string result = PhaseWord(phase);
  const bool ok = phase == v1::MIGRATION_PHASE_SUCCEEDED;
  const std::string reason =
      ok ? "none" : metrics::EnumLabel(v1::MigrationFailure_Name(r.failure()), "MIGRATION_FAILURE_");
  completed_->Add({{"role", role}, {"result", result}, {"reason", reason}}).Increment();
  wire_bytes_->Add({{"role", role}}).Increment(static_cast<double>(r.wire_bytes()));
  if (r.has_total_time()) {
    total_time_
        ->Add({{"role", role}, {"result", result}},
              prometheus::Histogram::BucketBoundaries{0.5, 1, 2, 5, 10, 20, 30,
                                                      60, 120, 300, 600, 1800})
        .Observe(Seconds(r.total_time()));
  }
  // Downtime and rounds as the source measures them (the destination's
  // record repeats them; counting both would double every migration).
  if (ok && m.role() == v1::MIGRATION_ROLE_SOURCE) {
    if (r.has_downtime()) {
      const double downtime = Seconds(r.downtime());
      downtime_
          ->Add({{"role", role}},
                prometheus::Histogram::BucketBoundaries{
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10})
          .Observe(downtime);
      if (m.policy().has_max_downtime() &&
          downtime > Seconds(m.policy().max_downtime()) &&
          Seconds(m.policy().max_downtime()) > 0) {
        over_limit_->Add({{"role", role}}).Increment();
      }
    }
    rounds_
        ->Add({{"role", role}},
              prometheus::Histogram::BucketBoundaries{1, 2, 3, 4, 5, 7, 10, 15,
                                                      20, 30, 50})
        .Observe(r.rounds());
  }
}

std::vector<prometheus::MetricFamily> AgentCollector::Collect() const {
  const absl::Time start = absl::Now();
  std::vector<MetricFamily> out;
  CollectVms(out);
  CollectHost(out);
  const std::vector<v1::AgentMigration> list = ListMigrations();
  ObserveList(list);
  CollectMigrations(list, out);
  collect_seconds_->Observe(absl::ToDoubleSeconds(absl::Now() - start));
  for (MetricFamily& f : totals_->Collect()) out.push_back(std::move(f));
  return out;
}

void AgentCollector::CollectVms(std::vector<MetricFamily>& out) const {
  MetricFamily phase = MakeFamily(
      "ferry_vm_phase", "1 for the VM's current phase (running, paused, "
      "incoming, migrated, ...).", MetricType::Gauge);
  MetricFamily memory = MakeFamily("ferry_vm_memory_bytes", "Guest RAM.",
                                   MetricType::Gauge);
  MetricFamily vcpus = MakeFamily("ferry_vm_vcpus", "vCPUs of the VM.",
                                  MetricType::Gauge);
  MetricFamily pages = MakeFamily(
      "ferry_vm_dirty_pages_per_second",
      "Distinct guest pages dirtied per second over the last sampling "
      "window (page sampling, or the migration's exact tracker).",
      MetricType::Gauge);
  MetricFamily bytes = MakeFamily("ferry_vm_dirty_bytes_per_second",
                                  "ferry_vm_dirty_pages_per_second times the "
                                  "page size.", MetricType::Gauge);
  MetricFamily vcpu_pages = MakeFamily(
      "ferry_vcpu_dirty_pages_per_second",
      "Dirty pages per second per vCPU; only where the tracker attributes "
      "writes to vCPUs (dirty ring, software MMU).", MetricType::Gauge);
  MetricFamily wss = MakeFamily(
      "ferry_vm_working_set_bytes",
      "Distinct pages dirtied over the estimation horizon (~10 windows), "
      "in bytes: what pre-copy keeps resending.", MetricType::Gauge);
  MetricFamily mode = MakeFamily(
      "ferry_vm_dirty_tracking_mode",
      "1 for the VM's dirty-tracking mode (off = page sampling only).",
      MetricType::Gauge);
  MetricFamily written = MakeFamily(
      "ferry_vm_guest_pages_written_total",
      "Page writes the guest workload reports (not distinct pages).",
      MetricType::Counter);
  MetricFamily selfcheck = MakeFamily(
      "ferry_vm_selfcheck_errors",
      "Pages the guest found corrupted; anything above 0 is lost memory.",
      MetricType::Gauge);

  // Newest-name-first, against the sampler's by-name pass: GetStats waits
  // for a VM's sample lock while the sampler hashes that VM (~ms), so a
  // scrape walking the same way as the sampler would trail it VM by VM for
  // a whole pass (measured: p99 430 ms with 100 VMs); walking the other way
  // it crosses the sampler once.
  const std::vector<v1::Vm> vms = registry_.List();
  for (auto it = vms.rbegin(); it != vms.rend(); ++it) {
    const v1::Vm& vm = *it;
    const std::string& name = vm.spec().name();
    const LabelList labels = {{"vm", name}, {"host", options_.host}};
    LabelList with_phase = labels;
    with_phase.emplace_back(
        "phase", metrics::EnumLabel(v1::VmPhase_Name(vm.status().phase()), "VM_PHASE_"));
    AddSample(phase, with_phase, 1);
    AddSample(memory, labels, static_cast<double>(vm.spec().memory_bytes()));
    AddSample(vcpus, labels, vm.spec().vcpu_count());
    // Window 0 = the registry's newest window: the freshest value.
    absl::StatusOr<v1::VmStats> stats = registry_.GetStats(name, absl::ZeroDuration());
    if (!stats.ok()) continue;  // CREATING / INCOMING: no guest to measure yet
    AddSample(pages, labels, static_cast<double>(stats->dirty_rate_pages_per_s()));
    AddSample(bytes, labels, static_cast<double>(stats->dirty_rate_bytes_per_s()));
    AddSample(wss, labels, static_cast<double>(stats->working_set_bytes()));
    for (const v1::VcpuDirtyRate& v : stats->vcpus()) {
      LabelList l = labels;
      l.emplace_back("vcpu", absl::StrCat(v.vcpu_index()));
      AddSample(vcpu_pages, l, static_cast<double>(v.dirty_rate_pages_per_s()));
    }
    LabelList with_mode = labels;
    with_mode.emplace_back(
        "mode", metrics::EnumLabel(v1::DirtyTrackingMode_Name(stats->tracking_mode()),
                         "DIRTY_TRACKING_MODE_"));
    AddSample(mode, with_mode, 1);
    AddSample(written, labels, static_cast<double>(stats->guest().pages_written()));
    AddSample(selfcheck, labels, static_cast<double>(stats->selfcheck_errors()));
  }
  for (MetricFamily* f : {&phase, &memory, &vcpus, &pages, &bytes, &vcpu_pages,
                          &wss, &mode, &written, &selfcheck}) {
    out.push_back(std::move(*f));
  }
}

void AgentCollector::CollectHost(std::vector<MetricFamily>& out) const {
  const LabelList host = {{"host", options_.host}};
  const service::HostCapacity cap = registry_.capacity();
  const v1::HostResources used = registry_.Allocated();
  auto gauge = [&](const char* name, const char* help, double v) {
    MetricFamily f = MakeFamily(name, help, MetricType::Gauge);
    AddSample(f, host, v);
    out.push_back(std::move(f));
  };
  gauge("ferry_host_memory_capacity_bytes", "Memory VMs may use on this host.",
        static_cast<double>(cap.memory_bytes));
  gauge("ferry_host_vcpu_capacity", "vCPUs VMs may use on this host.", cap.vcpus);
  gauge("ferry_host_memory_allocated_bytes",
        "Memory held by this host's VMs (every phase, incoming shells too).",
        static_cast<double>(used.memory_bytes()));
  gauge("ferry_host_vcpus_allocated", "vCPUs held by this host's VMs.",
        used.vcpus());
  gauge("ferry_host_vms", "VMs on this host, every phase.", used.vms());
  const service::VmRegistry::SamplingCost cost = registry_.sampling_cost();
  MetricFamily secs = MakeFamily(
      "ferry_agent_dirty_sampling_seconds_total",
      "Wall time the agent spent sampling dirty rates (all VMs).",
      MetricType::Counter);
  AddSample(secs, host, static_cast<double>(cost.total_ns) * 1e-9);
  out.push_back(std::move(secs));
  MetricFamily samples = MakeFamily("ferry_agent_dirty_samples_total",
                                    "Per-VM dirty-rate samples taken.",
                                    MetricType::Counter);
  AddSample(samples, host, static_cast<double>(cost.vm_samples));
  out.push_back(std::move(samples));
}

void AgentCollector::CollectMigrations(const std::vector<v1::AgentMigration>& list,
                                       std::vector<MetricFamily>& out) const {
  MetricFamily in_flight = MakeFamily(
      "ferry_migrations_in_flight", "Migrations in flight on this agent, by "
      "role and phase.", MetricType::Gauge);
  std::map<std::pair<std::string, std::string>, int> counts;
  for (v1::MigrationRole role : kRoles) {
    for (v1::MigrationPhase p : kInFlightPhases) counts[{RoleWord(role), PhaseWord(p)}] = 0;
  }
  struct PerMigration {
    const char* name;
    const char* help;
    double (*value)(const v1::AgentMigration&);
  };
  static const PerMigration kGauges[] = {
      {"ferry_migration_round", "Current pre-copy round (0 = full pass).",
       [](const v1::AgentMigration& m) -> double { return m.progress().round(); }},
      {"ferry_migration_total_bytes", "Guest memory being migrated.",
       [](const v1::AgentMigration& m) -> double { return m.progress().total_bytes(); }},
      {"ferry_migration_transferred_bytes", "Page data sent so far, before compression.",
       [](const v1::AgentMigration& m) -> double { return m.progress().payload_bytes(); }},
      {"ferry_migration_wire_bytes", "Bytes sent over the data plane so far.",
       [](const v1::AgentMigration& m) -> double { return m.progress().wire_bytes(); }},
      {"ferry_migration_remaining_bytes", "Dirty bytes not yet sent.",
       [](const v1::AgentMigration& m) -> double { return m.progress().remaining_bytes(); }},
      {"ferry_migration_pages_sent", "Pages sent with data, all rounds.",
       [](const v1::AgentMigration& m) -> double { return m.progress().pages_sent(); }},
      {"ferry_migration_zero_pages", "Pages sent as zero runs or skipped as zero.",
       [](const v1::AgentMigration& m) -> double { return m.progress().zero_pages(); }},
      {"ferry_migration_compression_ratio", "Payload bytes / compressed bytes (1 = none).",
       [](const v1::AgentMigration& m) -> double { return m.progress().compression_ratio(); }},
      {"ferry_migration_bandwidth_bytes_per_second",
       "Recent rate of page data moved (before compression).",
       [](const v1::AgentMigration& m) -> double {
         return m.progress().bandwidth_bytes_per_s();
       }},
      {"ferry_migration_dirty_bytes_per_second",
       "Dirty rate measured by the migration's tracker.",
       [](const v1::AgentMigration& m) -> double {
         return m.progress().dirty_rate_bytes_per_s();
       }},
      {"ferry_migration_expected_downtime_seconds",
       "remaining / bandwidth plus the measured state-transfer time.",
       [](const v1::AgentMigration& m) -> double {
         // NaN while unknown: no alert compares true, panels show a gap.
         return m.progress().has_expected_downtime()
                    ? Seconds(m.progress().expected_downtime())
                    : std::numeric_limits<double>::quiet_NaN();
       }},
      {"ferry_migration_downtime_limit_seconds", "The policy's max_downtime.",
       [](const v1::AgentMigration& m) -> double { return Seconds(m.policy().max_downtime()); }},
      {"ferry_migration_throttle_ratio", "vCPU throttle in force, 0-0.99.",
       [](const v1::AgentMigration& m) -> double {
         return m.progress().throttle_percent() / 100.0;
       }},
      {"ferry_migration_elapsed_seconds", "Time since the migration started.",
       [](const v1::AgentMigration& m) -> double { return Seconds(m.progress().elapsed()); }},
  };
  std::vector<MetricFamily> gauges;
  for (const PerMigration& g : kGauges) {
    gauges.push_back(MakeFamily(g.name, g.help, MetricType::Gauge));
  }
  MetricFamily info = MakeFamily(
      "ferry_migration_info", "1 per in-flight migration; the only series "
      "carrying the migration id.", MetricType::Gauge);
  MetricFamily phase = MakeFamily("ferry_migration_phase",
                                  "1 for an in-flight migration's phase.",
                                  MetricType::Gauge);
  for (const v1::AgentMigration& m : list) {
    if (v1::IsTerminalPhase(m.phase()) || m.phase() == v1::MIGRATION_PHASE_UNSPECIFIED) continue;
    const std::string role = RoleWord(m.role());
    ++counts[{role, PhaseWord(m.phase())}];
    const LabelList labels = {{"vm", m.vm_name()}, {"host", options_.host}, {"role", role}};
    for (size_t i = 0; i < gauges.size(); ++i) {
      AddSample(gauges[i], labels, kGauges[i].value(m));
    }
    LabelList l = labels;
    l.emplace_back("phase", PhaseWord(m.phase()));
    AddSample(phase, l, 1);
    l = labels;
    l.emplace_back("peer", m.peer_host());
    l.emplace_back("migration_id", m.migration_id());
    AddSample(info, l, 1);
  }
  for (const auto& [key, n] : counts) {
    AddSample(in_flight, {{"host", options_.host}, {"role", key.first}, {"phase", key.second}}, n);
  }
  out.push_back(std::move(in_flight));
  out.push_back(std::move(info));
  out.push_back(std::move(phase));
  for (MetricFamily& g : gauges) out.push_back(std::move(g));
}

}  // namespace ferry::agent_metrics
