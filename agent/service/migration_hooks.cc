#include "agent/service/migration_hooks.h"

#include "agent/service/status_conversion.h"

namespace ferry::service {
namespace {

// Finishes the stream at once with a status.
class FinishedWriteReactor
    : public grpc::ServerWriteReactor<v1::MigrationProgress> {
 public:
  explicit FinishedWriteReactor(const absl::Status& status) {
    Finish(ToGrpcStatus(status));
  }
  void OnDone() override { delete this; }
};

}  // namespace

absl::Status MigrationEngineNotWired() {
  return absl::UnimplementedError("migration engine not wired yet");
}

absl::StatusOr<v1::PrepareIncomingResponse>
UnwiredMigrationHooks::PrepareIncoming(const v1::PrepareIncomingRequest&) {
  return MigrationEngineNotWired();
}
absl::StatusOr<v1::StartOutgoingResponse> UnwiredMigrationHooks::StartOutgoing(
    const v1::StartOutgoingRequest&) {
  return MigrationEngineNotWired();
}
absl::StatusOr<v1::AgentCancelMigrationResponse>
UnwiredMigrationHooks::CancelMigration(const v1::AgentCancelMigrationRequest&) {
  return MigrationEngineNotWired();
}
absl::StatusOr<v1::FinishIncomingResponse>
UnwiredMigrationHooks::FinishIncoming(const v1::FinishIncomingRequest&) {
  return MigrationEngineNotWired();
}
absl::StatusOr<v1::ConfirmOutgoingResponse>
UnwiredMigrationHooks::ConfirmOutgoing(const v1::ConfirmOutgoingRequest&) {
  return MigrationEngineNotWired();
}
absl::StatusOr<v1::AgentMigration> UnwiredMigrationHooks::GetMigration(
    const v1::AgentGetMigrationRequest&) {
  return MigrationEngineNotWired();
}
absl::StatusOr<v1::AgentListMigrationsResponse>
UnwiredMigrationHooks::ListMigrations(const v1::AgentListMigrationsRequest&) {
  return MigrationEngineNotWired();
}
grpc::ServerWriteReactor<v1::MigrationProgress>*
UnwiredMigrationHooks::WatchMigration(grpc::CallbackServerContext*,
                                      const v1::AgentWatchMigrationRequest*) {
  return new FinishedWriteReactor(MigrationEngineNotWired());
}
void UnwiredMigrationHooks::FillHostInfo(v1::HostInfo* info) {
  info->set_min_protocol_version(0);
  info->set_max_protocol_version(0);
}

}  // namespace ferry::service
