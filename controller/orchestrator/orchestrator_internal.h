// Helpers shared by orchestrator.cc and reconcile.cc. Not a public API.
#ifndef FERRY_CONTROLLER_ORCHESTRATOR_ORCHESTRATOR_INTERNAL_H_
#define FERRY_CONTROLLER_ORCHESTRATOR_ORCHESTRATOR_INTERNAL_H_

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "proto/controller.pb.h"

namespace ferry::controller::internal {

inline v1::Event MigrationEvent(const v1::Migration& m, v1::EventSeverity severity,
                                const std::string& reason,
                                const std::string& message) {
  v1::Event e;
  e.set_severity(severity);
  e.set_object_kind(v1::OBJECT_KIND_MIGRATION);
  e.set_object_name(m.id());
  e.set_reason(reason);
  e.set_message(message);
  (*e.mutable_attributes())["vm"] = m.vm_name();
  return e;
}

inline std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return ctx;
}

inline bool Unreachable(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE ||
         s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
         s.error_code() == grpc::StatusCode::CANCELLED ||
         s.error_code() == grpc::StatusCode::UNKNOWN ||
         s.error_code() == grpc::StatusCode::INTERNAL;
}

}  // namespace ferry::controller::internal

#endif  // FERRY_CONTROLLER_ORCHESTRATOR_ORCHESTRATOR_INTERNAL_H_
