// MigrationDriver: runs one live migration between two agents over
// AgentService, in libvirt v3 order (proto/agent.proto, migration.proto):
//
//   source.GetVm(vm)                 -> spec, uid
//   destination.PrepareIncoming      -> endpoint, token
//   source.StartOutgoing(endpoint, token, policy)
//   source.WatchMigration            -> progress callback, until ARMED
//   destination.FinishIncoming       -> RESUMED (the commit point)
//   source.ConfirmOutgoing(HANDED_OFF)
//
// Failure before the handoff: CancelMigration on both agents (the source
// rolls back and keeps the VM running). Safety rule — never resume the
// source after the destination may have resumed:
//  * ConfirmOutgoing(ABORTED) is sent only with the destination's ABORTED
//    in hand (FinishIncoming answered FAILED_PRECONDITION naming ABORTED,
//    or CancelMigration answered handoff ABORTED).
//  * Once the source reported ARMED (FINISHING), the driver never cancels
//    the source; if the destination's answer is unknown it retries, then
//    gives up with the source left paused (`handoff_unknown`) for a
//    controller to reconcile with GetMigration on both.
//  * If the source agent is lost mid-migration, the destination is asked:
//    not yet ARMED -> cancel it; ARMED -> finish it (the source never
//    resumes by itself after Switchover, so this is safe and keeps the VM).
//
// Depends only on proto, gRPC and absl (the controller reuses it).
#ifndef FERRY_CONTROLLER_ORCHESTRATOR_MIGRATION_DRIVER_H_
#define FERRY_CONTROLLER_ORCHESTRATOR_MIGRATION_DRIVER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/agent.grpc.pb.h"
#include "proto/migration.pb.h"

namespace ferry::controller {

struct MigrationRequest {
  // Controller-assigned idempotency key; empty = a random one.
  std::string migration_id;
  std::string vm_name;
  // AgentService addresses (host:port).
  std::string source_address;
  std::string destination_address;
  // Host names (StartOutgoing.destination_host, PrepareIncoming.source_host,
  // MigrationResult.vm_host); default: the addresses.
  std::string source_host;
  std::string destination_host;
  v1::MigrationPolicy policy;
  // PrepareIncomingRequest.ttl; zero = the destination's default.
  absl::Duration prepare_ttl = absl::ZeroDuration();
  // Per unary call.
  absl::Duration rpc_timeout = absl::Seconds(15);
  // ConfirmOutgoing destroys the source copy; allow for large VMs.
  absl::Duration confirm_timeout = absl::Seconds(60);
  // How long an unreachable agent is retried before it counts as lost.
  absl::Duration agent_lost_after = absl::Seconds(5);
  // Whole-migration bound on the watch (beyond the agents' own timeouts).
  absl::Duration watch_deadline = absl::Minutes(30);
  // WatchMigration.min_interval.
  absl::Duration progress_interval = absl::ZeroDuration();
  std::shared_ptr<grpc::ChannelCredentials> credentials;  // default insecure
  // Called before the driver acts on a phase it decides itself, so a
  // controller can persist the transition first: FINISHING before
  // FinishIncoming, CONFIRMING before ConfirmOutgoing(HANDED_OFF). A
  // non-OK status at FINISHING stops the driver before it calls the
  // destination (handoff_unknown: the source stays paused, the destination
  // ARMED, for a later reconcile); at CONFIRMING the destination already
  // runs, so the status is ignored. May be empty.
  std::function<absl::Status(v1::MigrationPhase)> before_phase;
};

// What the driver saw besides the result.
struct MigrationDetails {
  std::string migration_id;
  // GetVm + PrepareIncoming + StartOutgoing.
  absl::Duration setup_time = absl::ZeroDuration();
  // The last progress sample from the source (cumulative counters).
  v1::MigrationProgress last_progress;
  // FinishIncomingResponse.downtime (source pause -> destination resume).
  absl::Duration destination_downtime = absl::ZeroDuration();
  // The handoff's outcome could not be learned; the source copy stays
  // paused until a controller confirms. result.phase is FAILED then.
  bool handoff_unknown = false;
  // Abandon() stopped the driver: nothing was decided, the agents keep
  // their state, and the result means nothing.
  bool abandoned = false;
};

using ProgressCallback = std::function<void(const v1::MigrationProgress&)>;

class MigrationDriver {
 public:
  explicit MigrationDriver(MigrationRequest request);

  // Runs the migration to a terminal phase and returns its result (always
  // set: phase SUCCEEDED / FAILED / CANCELLED, vm_host, error_code and
  // message on failure). `progress` (may be empty) is called on this
  // thread with every sample. Call once.
  v1::MigrationResult Run(const ProgressCallback& progress = nullptr,
                          MigrationDetails* details = nullptr);

  // From any thread: asks for a cancel. Honoured before the handoff only
  // (the source refuses once Switchover was sent).
  void Cancel(const std::string& reason = "cancelled by the caller");

  // For a controller resuming a migration whose destination is ARMED (or
  // whose source reported FINISHING): runs only the handoff steps
  // (FinishIncoming, then ConfirmOutgoing). Call instead of Run().
  v1::MigrationResult FinishHandoff(MigrationDetails* details = nullptr);

  // From any thread: stop at the next step without asking any agent to do
  // anything (controller shutdown; a restarted controller reconciles).
  void Abandon();

  const std::string& migration_id() const { return request_.migration_id; }

 private:
  v1::MigrationResult Fail(v1::MigrationFailure failure, const grpc::Status& status,
                           const std::string& what, const std::string& vm_host);
  // Cancel on the destination (best effort). True if it answered ABORTED
  // (or never heard of the migration).
  bool CancelDestination(const std::string& reason);
  void CancelSource(const std::string& reason);
  // Steps after ARMED; returns the result.
  v1::MigrationResult Handoff(MigrationDetails* details);
  std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration timeout) const;
  bool abandoned();
  v1::MigrationResult AbandonedResult(MigrationDetails* details);

  MigrationRequest request_;
  std::unique_ptr<v1::AgentService::Stub> source_;
  std::unique_ptr<v1::AgentService::Stub> destination_;
  absl::Time start_;

  absl::Mutex mu_;
  bool cancel_requested_ ABSL_GUARDED_BY(mu_) = false;
  std::string cancel_reason_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;  // StartOutgoing accepted
  bool abandoned_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* watch_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
};

// Convenience: one call.
v1::MigrationResult RunMigration(MigrationRequest request,
                                 const ProgressCallback& progress = nullptr,
                                 MigrationDetails* details = nullptr);

}  // namespace ferry::controller

#endif  // FERRY_CONTROLLER_ORCHESTRATOR_MIGRATION_DRIVER_H_
