#include "agent/service/agent_service.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "agent/service/log.h"
#include "agent/service/proto_util.h"
#include "agent/service/status_conversion.h"

namespace ferry::service {
namespace {

// Copies a StatusOr's value into a response, or maps its error.
template <typename T>
grpc::Status Reply(absl::StatusOr<T> result, T* response) {
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = std::move(*result);
  return grpc::Status::OK;
}

// Validates a name field before anything looks it up, so an unknown VM is
// NOT_FOUND and a malformed name INVALID_ARGUMENT.
absl::Status CheckName(const std::string& name) {
  return ValidateVmName(name);
}

}  // namespace

AgentServiceImpl::AgentServiceImpl(VmRegistry& registry, MigrationHooks& hooks,
                                   v1::HostInfo host)
    : registry_(registry), hooks_(hooks), host_(std::move(host)) {}

AgentServiceImpl::CallScope::CallScope(AgentServiceImpl& service)
    : service_(service) {
  absl::MutexLock lock(&service_.drain_mu_);
  admitted_ = !service_.draining_;
  if (admitted_) ++service_.in_flight_;
}

AgentServiceImpl::CallScope::~CallScope() {
  if (!admitted_) return;
  absl::MutexLock lock(&service_.drain_mu_);
  --service_.in_flight_;
}

grpc::Status AgentServiceImpl::CallScope::Refusal() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "agent is shutting down; retry on another agent or "
                      "after it restarts");
}

bool AgentServiceImpl::Drain(absl::Time deadline) {
  absl::MutexLock lock(&drain_mu_);
  draining_ = true;
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(drain_mu_) {
    return in_flight_ == 0;
  };
  return drain_mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
}

void AgentServiceImpl::SetAgentAddress(const std::string& address) {
  absl::MutexLock lock(&mu_);
  host_.set_agent_address(address);
  // The data plane (MigrationService) is served on the same port unless
  // the engine says otherwise in FillHostInfo.
  host_.set_migration_address(address);
}

grpc::Status AgentServiceImpl::CreateVm(grpc::ServerContext*,
                                        const v1::AgentCreateVmRequest* request,
                                        v1::Vm* response) {
  CallScope scope(*this);
  if (!scope.admitted()) return CallScope::Refusal();
  if (!request->has_spec()) {
    return ToGrpcStatus(absl::InvalidArgumentError("spec is required"));
  }
  return Reply(registry_.Create(request->spec(), request->uid()), response);
}

grpc::Status AgentServiceImpl::GetVm(grpc::ServerContext*,
                                     const v1::AgentGetVmRequest* request,
                                     v1::Vm* response) {
  CallScope scope(*this);
  if (!scope.admitted()) return CallScope::Refusal();
  if (absl::Status s = CheckName(request->name()); !s.ok()) {
    return ToGrpcStatus(s);
  }
  return Reply(registry_.Get(request->name()), response);
}

grpc::Status AgentServiceImpl::ListVms(grpc::ServerContext*,
                                       const v1::AgentListVmsRequest*,
                                       v1::AgentListVmsResponse* response) {
  CallScope scope(*this);
  if (!scope.admitted()) return CallScope::Refusal();
  for (v1::Vm& vm : registry_.List()) *response->add_vms() = std::move(vm);
  return grpc::Status::OK;
}

grpc::Status AgentServiceImpl::PauseVm(grpc::ServerContext*,
                                       const v1::PauseVmRequest* request,
                                       v1::Vm* response) {
  CallScope scope(*this);
  if (!scope.admitted()) return CallScope::Refusal();
  if (absl::Status s = CheckName(request->name()); !s.ok()) {
    return ToGrpcStatus(s);
  }
  return Reply(registry_.Pause(request->name()), response);
}

grpc::Status AgentServiceImpl::ResumeVm(grpc::ServerContext*,
                                        const v1::ResumeVmRequest* request,
                                        v1::Vm* response) {
  CallScope scope(*this);
  if (!scope.admitted()) return CallScope::Refusal();
  if (absl::Status s = CheckName(request->name()); !s.ok()) {
    return ToGrpcStatus(s);
  }
  return Reply(registry_.Resume(request->name()), response);
}

grpc::Status AgentServiceImpl::DeleteVm(grpc::ServerContext*,
                                        const v1::AgentDeleteVmRequest* request,
                                        v1::AgentDeleteVmResponse*) {
  CallScope scope(*this);
  if (!scope.admitted()) return CallScope::Refusal();
  if (absl::Status s = CheckName(request->name()); !s.ok()) {
    return ToGrpcStatus(s);
  }
  bool cancelled_migration = false;
  if (request->force()) {
    // agent.proto: a forced delete cancels the VM's migration first. The
    // engine refuses (FAILED_PRECONDITION) once a destination RESUMED; that
    // refusal stands.
    absl::StatusOr<std::string> migration = registry_.MigrationOf(request->name());
    if (!migration.ok()) return ToGrpcStatus(migration.status());
    if (!migration->empty()) {
      cancelled_migration = true;
      v1::AgentCancelMigrationRequest cancel;
      cancel.set_migration_id(*migration);
      cancel.set_reason(absl::StrCat("VM ", request->name(), " force-deleted"));
      absl::StatusOr<v1::AgentCancelMigrationResponse> cancelled =
          hooks_.CancelMigration(cancel);
      if (!cancelled.ok() &&
          cancelled.status().code() != absl::StatusCode::kUnimplemented &&
          cancelled.status().code() != absl::StatusCode::kNotFound) {
        return ToGrpcStatus(cancelled.status());
      }
    }
  }
  absl::Status deleted = registry_.Delete(request->name(), request->force());
  // Cancelling an incoming migration drops its shell already.
  if (cancelled_migration && deleted.code() == absl::StatusCode::kNotFound) {
    return grpc::Status::OK;
  }
  return ToGrpcStatus(deleted);
}

grpc::Status AgentServiceImpl::GetVmStats(grpc::ServerContext*,
                                          const v1::GetVmStatsRequest* request,
                                          v1::VmStats* response) {
  CallScope scope(*this);
  if (!scope.admitted()) return CallScope::Refusal();
  if (absl::Status s = CheckName(request->name()); !s.ok()) {
    return ToGrpcStatus(s);
  }
  const absl::Duration window = FromProtoDuration(request->window());
  if (window < absl::ZeroDuration() || window > absl::Hours(1)) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        "window must be between 0 (the default, 1s) and 1h"));
  }
  return Reply(registry_.GetStats(request->name(), window), response);
}

grpc::Status AgentServiceImpl::GetHostInfo(grpc::ServerContext*,
                                           const v1::GetHostInfoRequest*,
                                           v1::HostInfo* response) {
  CallScope scope(*this);
  if (!scope.admitted()) return CallScope::Refusal();
  {
    absl::MutexLock lock(&mu_);
    *response = host_;
  }
  v1::HostResources* cap = response->mutable_capacity();
  cap->set_memory_bytes(registry_.capacity().memory_bytes);
  cap->set_vcpus(registry_.capacity().vcpus);
  *response->mutable_allocated() = registry_.Allocated();
  hooks_.FillHostInfo(response);
  return grpc::Status::OK;
}

grpc::Status AgentServiceImpl::PrepareIncoming(
    grpc::ServerContext*, const v1::PrepareIncomingRequest* request,
    v1::PrepareIncomingResponse* response) {
  CallScope scope(*this);
  if (!scope.admitted()) return CallScope::Refusal();
  return Reply(hooks_.PrepareIncoming(*request), response);
}

grpc::Status AgentServiceImpl::StartOutgoing(
    grpc::ServerContext*, const v1::StartOutgoingRequest* request,
    v1::StartOutgoingResponse* response) {
  CallScope scope(*this);
  if (!scope.admitted()) return CallScope::Refusal();
  return Reply(hooks_.StartOutgoing(*request), response);
}

grpc::ServerWriteReactor<v1::MigrationProgress>*
AgentServiceImpl::WatchMigration(grpc::CallbackServerContext* context,
                                 const v1::AgentWatchMigrationRequest* request) {
  return hooks_.WatchMigration(context, request);
}

grpc::Status AgentServiceImpl::CancelMigration(
    grpc::ServerContext*, const v1::AgentCancelMigrationRequest* request,
    v1::AgentCancelMigrationResponse* response) {
  CallScope scope(*this);
  if (!scope.admitted()) return CallScope::Refusal();
  return Reply(hooks_.CancelMigration(*request), response);
}

grpc::Status AgentServiceImpl::FinishIncoming(
    grpc::ServerContext*, const v1::FinishIncomingRequest* request,
    v1::FinishIncomingResponse* response) {
  CallScope scope(*this);
  if (!scope.admitted()) return CallScope::Refusal();
  return Reply(hooks_.FinishIncoming(*request), response);
}

grpc::Status AgentServiceImpl::ConfirmOutgoing(
    grpc::ServerContext*, const v1::ConfirmOutgoingRequest* request,
    v1::ConfirmOutgoingResponse* response) {
  CallScope scope(*this);
  if (!scope.admitted()) return CallScope::Refusal();
  return Reply(hooks_.ConfirmOutgoing(*request), response);
}

grpc::Status AgentServiceImpl::GetMigration(
    grpc::ServerContext*, const v1::AgentGetMigrationRequest* request,
    v1::AgentMigration* response) {
  CallScope scope(*this);
  if (!scope.admitted()) return CallScope::Refusal();
  return Reply(hooks_.GetMigration(*request), response);
}

grpc::Status AgentServiceImpl::ListMigrations(
    grpc::ServerContext*, const v1::AgentListMigrationsRequest* request,
    v1::AgentListMigrationsResponse* response) {
  CallScope scope(*this);
  if (!scope.admitted()) return CallScope::Refusal();
  return Reply(hooks_.ListMigrations(*request), response);
}

}  // namespace ferry::service
