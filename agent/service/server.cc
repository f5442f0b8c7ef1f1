#include "agent/service/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>

#include <chrono>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ferry::service {

absl::Status SplitHostPort(const std::string& address, std::string* host,
                           int* port) {
  const size_t colon = address.rfind(':');
  auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", address, "\" is not host:port (e.g. 127.0.0.1:0, [::]:7070)"));
  };
  if (colon == std::string::npos || colon == 0) return bad();
  *host = address.substr(0, colon);
  if (host->front() == '[' && host->back() != ']') return bad();
  if (!absl::SimpleAtoi(address.substr(colon + 1), port) || *port < 0 ||
      *port > 65535) {
    return bad();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(
    const ServerOptions& options) {
  std::string host;
  int requested_port;
  if (absl::Status s = SplitHostPort(options.listen, &host, &requested_port);
      !s.ok()) {
    return s;
  }
  if (options.reflection) {
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  }
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(),
                           &port);
  // gRPC sets SO_REUSEPORT by default: a second agent on the same fixed
  // port would then bind "successfully" and steal half the connections.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  for (grpc::Service* service : options.services) {
    builder.RegisterService(service);
  }
  if (options.configure) options.configure(builder);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", options.listen,
        " (address in use, not local, or malformed); pick another --listen"));
  }
  return std::unique_ptr<GrpcServer>(
      new GrpcServer(std::move(server), absl::StrCat(host, ":", port), port));
}

GrpcServer::~GrpcServer() { Shutdown(absl::ZeroDuration()); }

void GrpcServer::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
  server_->Shutdown(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(absl::ToInt64Milliseconds(grace)));
  server_->Wait();
}

}  // namespace ferry::service
