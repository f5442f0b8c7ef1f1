// MetricsServer: one HTTP endpoint serving /metrics in the Prometheus text
// format, over prometheus-cpp's Exposer (civetweb), for every ferry daemon.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<MetricsServer> m,
//                    MetricsServer::Start("127.0.0.1:0"));
//   m->AddCollectable(my_collector);  // collect-on-scrape
//   prometheus::BuildCounter().Name(...).Register(m->registry());
//   LogInfo("metrics on ", m->url());
//
// Decisions:
//  * prometheus-cpp reports a bind failure by throwing from the Exposer's
//    constructor; Start() is the one place that catches it, so callers see
//    an absl::Status like everywhere else in ferry.
//  * `listen` must be host:port (or [v6]:port) with a numeric port. Civetweb
//    gives meaning to suffixes ("8443s" = TLS, "8080r" = redirect, "+" =
//    dual-stack); we accept none of them so a typo cannot silently change
//    what the endpoint is.
//  * The server keeps a strong reference to every collectable added, so a
//    collector lives at least as long as the endpoint that calls it.
#ifndef FERRY_COMMON_METRICS_METRICS_SERVER_H_
#define FERRY_COMMON_METRICS_METRICS_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/collectable.h"
#include "prometheus/registry.h"

namespace prometheus {
class Exposer;
}

namespace ferry::metrics {

// Splits and checks "host:port" / "[v6]:port". INVALID_ARGUMENT naming what
// is wrong. Port 0 is allowed (a free port is picked).
struct ListenAddress {
  std::string host;  // without brackets
  int port = 0;
};
absl::StatusOr<ListenAddress> ParseListenAddress(absl::string_view listen);

class MetricsServer {
 public:
  // INVALID_ARGUMENT for a malformed `listen`, UNAVAILABLE if it cannot be
  // bound (in use, no such address).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      absl::string_view listen);
  ~MetricsServer();  // stops serving

  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // host:port actually bound (the picked port when listen had port 0).
  const std::string& address() const { return address_; }
  // http://<address>/metrics
  std::string url() const;

  // For metrics kept as state (counters, histograms) rather than computed
  // on scrape.
  prometheus::Registry& registry() { return *registry_; }
  std::shared_ptr<prometheus::Registry> shared_registry() { return registry_; }

  // Served on every scrape from now on; kept alive by the server.
  // Thread-safe.
  void AddCollectable(std::shared_ptr<prometheus::Collectable> collectable)
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  MetricsServer() = default;

  std::string address_;
  std::shared_ptr<prometheus::Registry> registry_;
  absl::Mutex mu_;
  std::vector<std::shared_ptr<prometheus::Collectable>> owned_
      ABSL_GUARDED_BY(mu_);
  std::unique_ptr<prometheus::Exposer> exposer_;  // last: stops first
};

}  // namespace ferry::metrics

#endif  // FERRY_COMMON_METRICS_METRICS_SERVER_H_
