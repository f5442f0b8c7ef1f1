#include "common/metrics/metrics_server.h"

#include <exception>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"

namespace ferry::metrics {

absl::StatusOr<ListenAddress> ParseListenAddress(absl::string_view listen) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics listen address \"", listen, "\": ", why,
        "; expected host:port, e.g. 127.0.0.1:9464 or [::1]:0"));
  };
  ListenAddress out;
  absl::string_view port;
  if (absl::StartsWith(listen, "[")) {
    const size_t close = listen.find(']');
    if (close == absl::string_view::npos) return bad("unclosed '['");
    out.host = std::string(listen.substr(1, close - 1));
    if (close + 1 >= listen.size() || listen[close + 1] != ':') {
      return bad("missing :port after ']'");
    }
    port = listen.substr(close + 2);
  } else {
    const size_t colon = listen.rfind(':');
    if (colon == absl::string_view::npos) return bad("missing :port");
    out.host = std::string(listen.substr(0, colon));
    if (out.host.find(':') != std::string::npos) {
      return bad("an IPv6 host must be in brackets");
    }
    port = listen.substr(colon + 1);
  }
  if (out.host.empty()) return bad("empty host");
  if (port.empty()) return bad("empty port");
  for (char c : port) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) {
      return bad("port must be a number");
    }
  }
  if (port.size() > 5 || !absl::SimpleAtoi(port, &out.port) || out.port > 65535) {
    return bad("port out of range 0-65535");
  }
  return out;
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    absl::string_view listen) {
  absl::StatusOr<ListenAddress> parsed = ParseListenAddress(listen);
  if (!parsed.ok()) return parsed.status();
  const bool v6 = parsed->host.find(':') != std::string::npos;
  const std::string civet =
      v6 ? absl::StrCat("[", parsed->host, "]:", parsed->port)
         : absl::StrCat(parsed->host, ":", parsed->port);
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->registry_ = std::make_shared<prometheus::Registry>();
  // The only exception boundary in ferry's metrics code: civetweb throws
  // CivetException when it cannot bind (see the header).
  try {
    // Two threads: a scrape never waits behind another one (Prometheus and a
    // curl at the same time) while the daemon's own threads stay free.
    server->exposer_ = std::make_unique<prometheus::Exposer>(civet, 2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat(
        "cannot serve metrics on ", listen, ": ", e.what(),
        " (is the port in use or the address not local?)"));
  }
  const std::vector<int> ports = server->exposer_->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", listen, ": no port bound"));
  }
  server->address_ = v6 ? absl::StrCat("[", parsed->host, "]:", ports[0])
                        : absl::StrCat(parsed->host, ":", ports[0]);
  server->exposer_->RegisterCollectable(server->registry_);
  return server;
}

MetricsServer::~MetricsServer() {
  // Stop serving before the collectables go away.
  exposer_.reset();
}

std::string MetricsServer::url() const {
  return absl::StrCat("http://", address_, "/metrics");
}

void MetricsServer::AddCollectable(
    std::shared_ptr<prometheus::Collectable> collectable) {
  {
    absl::MutexLock lock(&mu_);
    owned_.push_back(collectable);
  }
  exposer_->RegisterCollectable(collectable);
}

}  // namespace ferry::metrics
