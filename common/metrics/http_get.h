// A minimal blocking HTTP/1.0 GET, for tests and benchmarks that scrape
// /metrics or ask Prometheus's HTTP API. Not for daemons: no TLS, no
// redirects, no chunked encoding (HTTP/1.0 servers send none).
#ifndef FERRY_COMMON_METRICS_HTTP_GET_H_
#define FERRY_COMMON_METRICS_HTTP_GET_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace ferry::metrics {

struct HttpResponse {
  int status = 0;
  std::string content_type;
  std::string body;
};

// `host_port` as "127.0.0.1:9090" or "[::1]:9090"; `target` is the path
// and query, already URL-encoded. UNAVAILABLE when the connection fails,
// DEADLINE_EXCEEDED past `timeout`, INTERNAL for an unparsable reply.
absl::StatusOr<HttpResponse> HttpGet(absl::string_view host_port,
                                     absl::string_view target,
                                     absl::Duration timeout = absl::Seconds(5));

// Percent-encodes a query parameter value (RFC 3986 unreserved kept).
std::string UrlEncode(absl::string_view s);

}  // namespace ferry::metrics

#endif  // FERRY_COMMON_METRICS_HTTP_GET_H_
