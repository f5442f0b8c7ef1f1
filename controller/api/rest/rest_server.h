// RestServer: the controller's REST/JSON API, a front for ControllerService.
// The daemon starts it next to its gRPC server and hands it a channel to
// that server (grpc::Server::InProcessChannel), so REST and gRPC share one
// implementation, one validation and one set of status codes. See
// routes.h for the surface and openapi.json for its description.
#ifndef FERRY_CONTROLLER_API_REST_REST_SERVER_H_
#define FERRY_CONTROLLER_API_REST_REST_SERVER_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include <grpcpp/grpcpp.h>
#include "controller/api/rest/http_server.h"

namespace ferry::rest {

struct RestOptions {
  // Listen address ("host:port"; port 0 picks a free port, read it back
  // with address()), worker and queue sizes, size caps and timeouts.
  HttpServerOptions http;
  // gRPC deadline of each unary call forwarded to the backend.
  absl::Duration rpc_timeout = absl::Seconds(30);
  // Deadline of streamed calls (drain, watch); infinite by default because
  // a drain or a migration may take long. Client disconnect cancels them.
  absl::Duration stream_timeout = absl::InfiniteDuration();
};

class RestServer {
 public:
  static absl::StatusOr<std::unique_ptr<RestServer>> Start(
      const RestOptions& options, std::shared_ptr<grpc::Channel> backend);
  ~RestServer();

  std::string address() const;
  // Closes the listener and every connection, cancels in-flight backend
  // calls and joins all threads. Idempotent; also run by the destructor.
  void Stop();

  // The (method, path template) pairs served, in registration order.
  std::vector<std::pair<std::string, std::string>> routes() const;

 private:
  struct State;
  explicit RestServer(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace ferry::rest

#endif  // FERRY_CONTROLLER_API_REST_REST_SERVER_H_
