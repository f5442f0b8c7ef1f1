// ControllerMetrics: the controller's Prometheus metrics (docs/metrics.md).
//
//   * State gauges computed from the Store on every scrape: hosts by
//     readiness (and cordoned), VMs by phase, migrations by phase, the
//     pending queue length. Reading the store is the truth after a restart,
//     unlike counters kept in memory.
//   * Request counts and latency by method and gRPC code, recorded by the
//     API layer through RecordRequest() (method = the full gRPC method name
//     from the service definition, never anything from the request, so the
//     label set stays bounded).
//   * RocksDB commit latency, recorded by whoever times Store::Commit
//     through ObserveStoreCommit().
//
// The lead wires it into the controller daemon:
//   auto m = std::make_shared<ControllerMetrics>(*store);
//   metrics_server->AddCollectable(m);
//   ... m->RecordRequest("/ferry.v1.ControllerService/CreateVm", code, dt);
//
// Cost: each scrape lists every host, VM and migration (pages of
// kMaxPageSize). Fine for thousands of records at a 5-15 s scrape interval;
// a larger cluster should keep these counts incrementally from the store's
// commit listener instead.
#ifndef FERRY_CONTROLLER_METRICS_CONTROLLER_METRICS_H_
#define FERRY_CONTROLLER_METRICS_CONTROLLER_METRICS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "controller/store/store.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace ferry::controller {

class ControllerMetrics : public prometheus::Collectable {
 public:
  // `store` must outlive this object.
  explicit ControllerMetrics(Store& store);

  std::vector<prometheus::MetricFamily> Collect() const override;

  // One finished API call. `code` is the gRPC status code (grpc::StatusCode
  // or absl::StatusCode values coincide); out-of-range codes count as
  // "unknown".
  void RecordRequest(absl::string_view method, int code, absl::Duration latency);
  // One Store::Commit (the RocksDB write with its synced WAL).
  void ObserveStoreCommit(absl::Duration latency);

 private:
  struct Counts;
  absl::StatusOr<Counts> CountRecords() const;

  Store& store_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* request_seconds_;
  prometheus::Histogram* commit_seconds_;
  prometheus::Counter* scrape_errors_;
};

}  // namespace ferry::controller

#endif  // FERRY_CONTROLLER_METRICS_CONTROLLER_METRICS_H_
