// AgentCollector: the agent's Prometheus metrics, computed when scraped
// from the VmRegistry and the migration engine (docs/metrics.md lists every
// series with its labels).
//
// Decisions:
//  * Collect-on-scrape. Per-VM and per-migration series are built fresh on
//    every scrape from what exists right now, so a deleted or migrated-away
//    VM's series and a finished migration's series vanish by themselves, and
//    values are never older than the registry's last sample.
//  * Totals (completed migrations by result and reason, downtime and total
//    time histograms) must count each migration once, but the engine has no
//    "migration ended" callback. ObserveMigrations() diffs the engine's list
//    (which keeps terminal migrations for minutes) against the ids already
//    counted; it runs on every scrape and on a background poll, so nothing
//    is missed when nobody scrapes for a while.
//  * Cardinality: migration ids appear only on the per-migration
//    ferry_migration_info series, which exist while the migration is in
//    flight. Long-lived series carry role / result / reason / phase, all
//    from fixed enums.
#ifndef FERRY_AGENT_METRICS_AGENT_COLLECTOR_H_
#define FERRY_AGENT_METRICS_AGENT_COLLECTOR_H_

#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "agent/service/migration_hooks.h"
#include "agent/service/vm_registry.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "proto/agent.pb.h"

namespace ferry::agent_metrics {

struct AgentCollectorOptions {
  // The agent's name: the `host` label of every series.
  std::string host;
  // Background ObserveMigrations() period; zero = only on scrape (tests).
  absl::Duration observe_interval = absl::Seconds(1);
};

class AgentCollector : public prometheus::Collectable {
 public:
  // `registry` must outlive the collector; `migrations` may be null (no
  // migration metrics) and must outlive it otherwise.
  AgentCollector(service::VmRegistry& registry,
                 service::MigrationHooks* migrations,
                 AgentCollectorOptions options);
  ~AgentCollector() override;  // stops the poll thread

  AgentCollector(const AgentCollector&) = delete;
  AgentCollector& operator=(const AgentCollector&) = delete;

  std::vector<prometheus::MetricFamily> Collect() const override;

  // Counts migrations that became terminal since the last call into the
  // totals. Thread-safe.
  void ObserveMigrations() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void CollectVms(std::vector<prometheus::MetricFamily>& out) const;
  void CollectHost(std::vector<prometheus::MetricFamily>& out) const;
  void CollectMigrations(const std::vector<v1::AgentMigration>& list,
                         std::vector<prometheus::MetricFamily>& out) const;
  std::vector<v1::AgentMigration> ListMigrations() const;
  void CountTerminal(const v1::AgentMigration& m) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ObserveList(const std::vector<v1::AgentMigration>& list) const
      ABSL_LOCKS_EXCLUDED(mu_);
  void PollLoop();

  service::VmRegistry& registry_;
  service::MigrationHooks* const migrations_;
  const AgentCollectorOptions options_;

  // Totals live in a registry of their own: prometheus-cpp's counters and
  // histograms are thread-safe and keep their series across scrapes.
  std::shared_ptr<prometheus::Registry> totals_;
  prometheus::Family<prometheus::Counter>* completed_;
  prometheus::Family<prometheus::Counter>* over_limit_;
  prometheus::Family<prometheus::Counter>* wire_bytes_;
  prometheus::Family<prometheus::Histogram>* downtime_;
  prometheus::Family<prometheus::Histogram>* total_time_;
  prometheus::Family<prometheus::Histogram>* rounds_;
  prometheus::Family<prometheus::Histogram>* scrape_time_;
  prometheus::Histogram* collect_seconds_;

  mutable absl::Mutex mu_;
  // Terminal migrations already counted, pruned to those still listed.
  mutable std::set<std::string> counted_ ABSL_GUARDED_BY(mu_);

  absl::Notification stop_;
  std::thread poller_;
};

}  // namespace ferry::agent_metrics

#endif  // FERRY_AGENT_METRICS_AGENT_COLLECTOR_H_
