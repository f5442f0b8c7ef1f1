// MigrationHooks: the seam between AgentService and the migration engine
// (agent/migration/{source,destination}). AgentService forwards every
// migration-control RPC here; wiring the engine is one implementation of
// this interface handed to AgentService in agent/main.cc.
//
// The engine reaches the VMs through VmRegistry's engine methods (Reserve,
// Adopt, Activate, Acquire, AttachMigration, MarkMigrated, Release).
//
// Threading: unary hooks are called on gRPC's sync-server threads and may
// block (they should still return promptly: StartOutgoing "returns once
// accepted"). WatchMigration uses the callback API (STYLE.md "Daemons"):
// the hook returns a reactor that deletes itself in OnDone().
#ifndef FERRY_AGENT_SERVICE_MIGRATION_HOOKS_H_
#define FERRY_AGENT_SERVICE_MIGRATION_HOOKS_H_

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/agent.pb.h"

namespace ferry::service {

class MigrationHooks {
 public:
  virtual ~MigrationHooks() = default;

  virtual absl::StatusOr<v1::PrepareIncomingResponse> PrepareIncoming(
      const v1::PrepareIncomingRequest& request) = 0;
  virtual absl::StatusOr<v1::StartOutgoingResponse> StartOutgoing(
      const v1::StartOutgoingRequest& request) = 0;
  virtual absl::StatusOr<v1::AgentCancelMigrationResponse> CancelMigration(
      const v1::AgentCancelMigrationRequest& request) = 0;
  virtual absl::StatusOr<v1::FinishIncomingResponse> FinishIncoming(
      const v1::FinishIncomingRequest& request) = 0;
  virtual absl::StatusOr<v1::ConfirmOutgoingResponse> ConfirmOutgoing(
      const v1::ConfirmOutgoingRequest& request) = 0;
  virtual absl::StatusOr<v1::AgentMigration> GetMigration(
      const v1::AgentGetMigrationRequest& request) = 0;
  virtual absl::StatusOr<v1::AgentListMigrationsResponse> ListMigrations(
      const v1::AgentListMigrationsRequest& request) = 0;

  // Server-streaming progress. Returns a reactor owned by gRPC (it deletes
  // itself in OnDone()).
  virtual grpc::ServerWriteReactor<v1::MigrationProgress>* WatchMigration(
      grpc::CallbackServerContext* context,
      const v1::AgentWatchMigrationRequest* request) = 0;

  // Adds what the engine knows to GetHostInfo: migration_address (if the
  // data plane listens elsewhere) and the PROTOCOL_VERSION range.
  virtual void FillHostInfo(v1::HostInfo* info) = 0;

  // Agent shutdown, after the server stopped taking calls and before the
  // VMs are destroyed: abort everything in flight (before the handoff the
  // source keeps the VM; a destination shell is dropped).
  virtual void Shutdown() = 0;
};
}  // namespace ferry::service

#endif  // FERRY_AGENT_SERVICE_MIGRATION_HOOKS_H_
