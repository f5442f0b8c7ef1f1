// The REST surface of ControllerService: every RPC under /v1, each route
// transcoded to its gRPC request (path variables, query parameters or the
// JSON body) and forwarded to the backend channel. openapi.json in this
// folder documents exactly these routes (openapi_test keeps them in step).
#ifndef FERRY_CONTROLLER_API_REST_ROUTES_H_
#define FERRY_CONTROLLER_API_REST_ROUTES_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "controller/api/rest/router.h"
#include "proto/controller.grpc.pb.h"

namespace ferry::rest {

struct Backend {
  std::unique_ptr<ferry::v1::ControllerService::Stub> stub;
  // Deadline of each unary call.
  absl::Duration rpc_timeout = absl::Seconds(30);
  // Deadline of a streaming call (drain, watch); InfiniteDuration = none.
  absl::Duration stream_timeout = absl::InfiniteDuration();
};

// What documentation needs to know about a route (openapi_gen.cc).
struct RouteDoc {
  std::string method;
  std::string path;     // template, variables named by proto field
  std::string rpc;      // ControllerService method name
  bool json_body;       // request fields from the JSON body (else query)
  bool streaming;       // NDJSON stream of the RPC's response messages
  std::string summary;
};

// The served routes, in registration order.
std::vector<RouteDoc> ControllerRouteDocs();

absl::Status AddControllerRoutes(std::shared_ptr<const Backend> backend,
                                 Router* router);

}  // namespace ferry::rest

#endif  // FERRY_CONTROLLER_API_REST_ROUTES_H_
