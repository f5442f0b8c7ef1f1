// GrpcServer: one gRPC server, one port, any number of services (the
// agent registers AgentService and the migration engine's MigrationService
// side by side), with server reflection for grpcurl.
#ifndef FERRY_AGENT_SERVICE_SERVER_H_
#define FERRY_AGENT_SERVICE_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ferry::service {

struct ServerOptions {
  // host:port; port 0 picks a free one (see GrpcServer::address()).
  std::string listen = "127.0.0.1:0";
  // Not owned; must outlive the server.
  std::vector<grpc::Service*> services;
  bool reflection = true;
  // Guest memory travels in bounded chunks (migration.proto), so the
  // default 4 MiB receive limit is raised only modestly.
  int max_receive_message_bytes = 16 << 20;
  // Extra builder settings, applied last (the migration data plane's
  // flow-control windows: IncomingMigrations::ConfigureServer).
  std::function<void(grpc::ServerBuilder&)> configure;
};

class GrpcServer {
 public:
  // Binds and starts. UNAVAILABLE naming the address if it cannot bind;
  // INVALID_ARGUMENT for a malformed address.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(
      const ServerOptions& options);
  ~GrpcServer();  // Shutdown(0) if still running

  // host:port with the real port.
  const std::string& address() const { return address_; }
  int port() const { return port_; }

  // Stops accepting calls, lets in-flight calls finish for `grace`, then
  // cancels the rest. Idempotent.
  void Shutdown(absl::Duration grace);

 private:
  GrpcServer(std::unique_ptr<grpc::Server> server, std::string address,
             int port)
      : server_(std::move(server)), address_(std::move(address)), port_(port) {}

  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  int port_;
  bool shut_down_ = false;
};

// Splits "host:port" / "[v6]:port". INVALID_ARGUMENT otherwise.
absl::Status SplitHostPort(const std::string& address, std::string* host,
                           int* port);

}  // namespace ferry::service

#endif  // FERRY_AGENT_SERVICE_SERVER_H_
