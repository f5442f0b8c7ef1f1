#include "controller/api/rest/rest_server.h"

#include "controller/api/rest/router.h"
#include "controller/api/rest/routes.h"

namespace ferry::rest {

struct RestServer::State {
  Router router;
  std::unique_ptr<HttpServer> http;
};

absl::StatusOr<std::unique_ptr<RestServer>> RestServer::Start(
    const RestOptions& options, std::shared_ptr<grpc::Channel> channel) {
  if (channel == nullptr) {
    return absl::InvalidArgumentError("RestServer needs a backend channel");
  }
  if (options.rpc_timeout <= absl::ZeroDuration() ||
      options.stream_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "rpc_timeout and stream_timeout must be positive");
  }
  auto backend = std::make_shared<Backend>();
  backend->stub = ferry::v1::ControllerService::NewStub(std::move(channel));
  backend->rpc_timeout = options.rpc_timeout;
  backend->stream_timeout = options.stream_timeout;

  auto state = std::make_unique<State>();
  if (absl::Status s = AddControllerRoutes(backend, &state->router); !s.ok()) {
    return s;
  }
  // The router outlives the HTTP server: State destroys `http` (joining
  // its workers) before `router`, in reverse declaration order.
  const Router* router = &state->router;
  absl::StatusOr<std::unique_ptr<HttpServer>> server = HttpServer::Start(
      options.http, [router](const HttpRequest& request, ResponseWriter& writer) {
        router->Dispatch(request, writer);
      });
  if (!server.ok()) return server.status();
  state->http = *std::move(server);
  return std::unique_ptr<RestServer>(new RestServer(std::move(state)));
}

RestServer::RestServer(std::unique_ptr<State> state)
    : state_(std::move(state)) {}

RestServer::~RestServer() { Stop(); }

std::string RestServer::address() const { return state_->http->address(); }

void RestServer::Stop() { state_->http->Stop(); }

std::vector<std::pair<std::string, std::string>> RestServer::routes() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const Router::Route& r : state_->router.routes()) {
    out.emplace_back(r.method, r.path.text());
  }
  return out;
}

}  // namespace ferry::rest
