// EngineMigrationHooks: MigrationHooks over the migration engine — the
// destination's IncomingMigrations (whose MigrationService is served on the
// agent's one port) and one OutgoingMigration per source migration — tied
// to the agent's VmRegistry through its engine methods.
//
//   destination  PrepareIncoming  registry Reserve (INCOMING shell: name and
//                                  capacity) + IncomingMigrations::Prepare
//                FinishIncoming   IncomingMigrations::Finish -> adopt
//                                  callback: registry Adopt + Activate
//                (ABORTED for any reason: TTL, idle source, Abort, Cancel,
//                 bad data)        the shell is released by the janitor
//   source       StartOutgoing    registry Acquire + AttachMigration +
//                                  OutgoingMigration::Start; its release
//                                  callback = MarkMigrated + Release
//                terminal, not SUCCEEDED  DetachMigration (VM stays here)
//
// Decisions (DESIGN.md: write them down):
//  * The engine has no "aborted" callback, so a janitor thread polls the
//    destination migrations (every `janitor_interval`) and drops the
//    registry shell of every ABORTED one; terminal records are forgotten
//    after `retention`.
//  * IncomingMigrations runs one backend. The agent gives it the preferred
//    one; PrepareIncoming for a spec that resolves to another backend is
//    FAILED_PRECONDITION (see the report: the engine should take a backend
//    per Prepare).
//  * CancelMigration on the source waits (bounded, `cancel_wait`) for the
//    rollback to finish, so that a forced DeleteVm right after it never
//    races a resume.
//  * Nothing here resumes a VM on its own: the engine's safety rule (the
//    source resumes only on an explicit ABORTED) is left intact.
//  * WatchMigration coalesces samples (a slow reader sees the newest one)
//    but never drops a phase change or the terminal sample. Destination
//    watches are synthesized from IncomingMigrations::Get by the janitor.
#ifndef FERRY_AGENT_SERVICE_ENGINE_HOOKS_H_
#define FERRY_AGENT_SERVICE_ENGINE_HOOKS_H_

#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "agent/migration/destination/incoming.h"
#include "agent/migration/source/outgoing.h"
#include "agent/service/migration_hooks.h"
#include "agent/service/vm_registry.h"
#include "agent/vmm/backend.h"

namespace ferry::service {

struct EngineHooksOptions {
  std::string host_name;  // peer name in Hello and results
  // The backend incoming VMs are restored on. Required.
  vmm::Backend* incoming_backend = nullptr;
  // Default prepare TTL (PrepareIncomingRequest.ttl = 0) and the receiver's
  // idle timeout (no data from the source for this long -> ABORTED).
  absl::Duration prepare_ttl = absl::Seconds(60);
  absl::Duration idle_timeout = absl::Seconds(60);
  absl::Duration janitor_interval = absl::Milliseconds(50);
  absl::Duration retention = absl::Minutes(10);
  absl::Duration cancel_wait = absl::Seconds(10);
};

class EngineMigrationHooks final : public MigrationHooks {
 public:
  EngineMigrationHooks(VmRegistry& registry, EngineHooksOptions options);
  ~EngineMigrationHooks() override;  // Shutdown()

  // The data plane, to be registered on the agent's server.
  grpc::Service* migration_service();
  // host:port of the MigrationService, once the server is bound.
  void SetEndpoint(const std::string& endpoint) ABSL_LOCKS_EXCLUDED(mu_);

  absl::StatusOr<v1::PrepareIncomingResponse> PrepareIncoming(
      const v1::PrepareIncomingRequest& request) override;
  absl::StatusOr<v1::StartOutgoingResponse> StartOutgoing(
      const v1::StartOutgoingRequest& request) override;
  absl::StatusOr<v1::AgentCancelMigrationResponse> CancelMigration(
      const v1::AgentCancelMigrationRequest& request) override;
  absl::StatusOr<v1::FinishIncomingResponse> FinishIncoming(
      const v1::FinishIncomingRequest& request) override;
  absl::StatusOr<v1::ConfirmOutgoingResponse> ConfirmOutgoing(
      const v1::ConfirmOutgoingRequest& request) override;
  absl::StatusOr<v1::AgentMigration> GetMigration(
      const v1::AgentGetMigrationRequest& request) override;
  absl::StatusOr<v1::AgentListMigrationsResponse> ListMigrations(
      const v1::AgentListMigrationsRequest& request) override;
  grpc::ServerWriteReactor<v1::MigrationProgress>* WatchMigration(
      grpc::CallbackServerContext* context,
      const v1::AgentWatchMigrationRequest* request) override;
  void FillHostInfo(v1::HostInfo* info) override;
  void Shutdown() override;

  struct Outgoing;   // engine_hooks.cc
  struct Incoming;   // engine_hooks.cc
  class Sink;        // one WatchMigration stream's shared state

 private:
  void Adopt(const std::string& migration_id, std::unique_ptr<vmm::Vm> vm);
  void JanitorLoop();
  // Drops the registry shell of an ABORTED incoming migration (once).
  void ReleaseShell(Incoming& in);
  void OnOutgoingTerminal(Outgoing& out);
  v1::AgentMigration Describe(const Outgoing& out) const;
  v1::AgentMigration Describe(const Incoming& in) const;
  v1::MigrationProgress IncomingProgress(const Incoming& in) const;
  std::shared_ptr<Outgoing> FindOutgoing(const std::string& id) const
      ABSL_LOCKS_EXCLUDED(mu_);
  std::shared_ptr<Incoming> FindIncoming(const std::string& id) const
      ABSL_LOCKS_EXCLUDED(mu_);

  VmRegistry& registry_;
  const EngineHooksOptions options_;
  std::unique_ptr<migration::IncomingMigrations> incoming_;

  absl::Mutex op_mu_;  // serializes PrepareIncoming / StartOutgoing
  mutable absl::Mutex mu_;
  std::string endpoint_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, std::shared_ptr<Outgoing>> outgoing_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Incoming>> incoming_records_
      ABSL_GUARDED_BY(mu_);
  std::map<Sink*, std::shared_ptr<Sink>> sinks_ ABSL_GUARDED_BY(mu_);

  absl::Notification stop_;
  std::thread janitor_;
};

}  // namespace ferry::service

#endif  // FERRY_AGENT_SERVICE_ENGINE_HOOKS_H_
