// AgentServiceImpl: proto/agent.proto's AgentService over a VmRegistry.
//
// VM lifecycle, stats and host info are served here. The migration-control
// RPCs are forwarded to MigrationHooks (the engine's seam), unchanged.
//
// API choice: the sync API for the unary calls — PauseVm can wait seconds
// for vCPUs to park and CreateVm allocates guest memory, and a blocking
// handler belongs on the sync server's own threads, not on the callback
// executor (STYLE.md "Daemons": never block in a callback). The one
// streaming call, WatchMigration, uses the callback API (a reactor per
// stream, made by the hooks).
//
// Every handler validates its request first: a bad request never changes
// anything, and errors carry the registry's absl codes mapped 1:1.
#ifndef FERRY_AGENT_SERVICE_AGENT_SERVICE_H_
#define FERRY_AGENT_SERVICE_AGENT_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/service/migration_hooks.h"
#include "agent/service/vm_registry.h"
#include "proto/agent.grpc.pb.h"

namespace ferry::service {

using AgentServiceBase =
    v1::AgentService::WithCallbackMethod_WatchMigration<v1::AgentService::Service>;

class AgentServiceImpl final : public AgentServiceBase {
 public:
  // `host` is GetHostInfo's static part (name, labels, kvm, backends,
  // version, instance_id, start_time); capacity and allocated come from the
  // registry, the rest from the hooks. Registry and hooks outlive this.
  AgentServiceImpl(VmRegistry& registry, MigrationHooks& hooks,
                   v1::HostInfo host);

  // Known only once the server is bound (port 0).
  void SetAgentAddress(const std::string& address) ABSL_LOCKS_EXCLUDED(mu_);

  // First step of shutdown (Envoy-style drain): from now on unary calls
  // fail UNAVAILABLE "agent is shutting down"; returns true once no unary
  // call is in flight, false if `deadline` passed first. The caller then
  // shuts the server down at once: gRPC's own graceful Shutdown(deadline)
  // also waits for idle client connections to go away, which a connected
  // controller never does, so it would always take the whole grace period.
  bool Drain(absl::Time deadline) ABSL_LOCKS_EXCLUDED(drain_mu_);

  grpc::Status CreateVm(grpc::ServerContext* context,
                        const v1::AgentCreateVmRequest* request,
                        v1::Vm* response) override;
  grpc::Status GetVm(grpc::ServerContext* context,
                     const v1::AgentGetVmRequest* request,
                     v1::Vm* response) override;
  grpc::Status ListVms(grpc::ServerContext* context,
                       const v1::AgentListVmsRequest* request,
                       v1::AgentListVmsResponse* response) override;
  grpc::Status PauseVm(grpc::ServerContext* context,
                       const v1::PauseVmRequest* request,
                       v1::Vm* response) override;
  grpc::Status ResumeVm(grpc::ServerContext* context,
                        const v1::ResumeVmRequest* request,
                        v1::Vm* response) override;
  grpc::Status DeleteVm(grpc::ServerContext* context,
                        const v1::AgentDeleteVmRequest* request,
                        v1::AgentDeleteVmResponse* response) override;
  grpc::Status GetVmStats(grpc::ServerContext* context,
                          const v1::GetVmStatsRequest* request,
                          v1::VmStats* response) override;
  grpc::Status GetHostInfo(grpc::ServerContext* context,
                           const v1::GetHostInfoRequest* request,
                           v1::HostInfo* response) override;

  // Migration control: forwarded to MigrationHooks.
  grpc::Status PrepareIncoming(grpc::ServerContext* context,
                               const v1::PrepareIncomingRequest* request,
                               v1::PrepareIncomingResponse* response) override;
  grpc::Status StartOutgoing(grpc::ServerContext* context,
                             const v1::StartOutgoingRequest* request,
                             v1::StartOutgoingResponse* response) override;
  grpc::ServerWriteReactor<v1::MigrationProgress>* WatchMigration(
      grpc::CallbackServerContext* context,
      const v1::AgentWatchMigrationRequest* request) override;
  grpc::Status CancelMigration(
      grpc::ServerContext* context,
      const v1::AgentCancelMigrationRequest* request,
      v1::AgentCancelMigrationResponse* response) override;
  grpc::Status FinishIncoming(grpc::ServerContext* context,
                              const v1::FinishIncomingRequest* request,
                              v1::FinishIncomingResponse* response) override;
  grpc::Status ConfirmOutgoing(grpc::ServerContext* context,
                               const v1::ConfirmOutgoingRequest* request,
                               v1::ConfirmOutgoingResponse* response) override;
  grpc::Status GetMigration(grpc::ServerContext* context,
                            const v1::AgentGetMigrationRequest* request,
                            v1::AgentMigration* response) override;
  grpc::Status ListMigrations(grpc::ServerContext* context,
                              const v1::AgentListMigrationsRequest* request,
                              v1::AgentListMigrationsResponse* response) override;

 private:
  // Counts one unary call in flight, or refuses it while draining.
  class CallScope {
   public:
    explicit CallScope(AgentServiceImpl& service);
    ~CallScope();
    bool admitted() const { return admitted_; }
    static grpc::Status Refusal();

   private:
    AgentServiceImpl& service_;
    bool admitted_;
  };

  VmRegistry& registry_;
  MigrationHooks& hooks_;
  mutable absl::Mutex mu_;
  v1::HostInfo host_ ABSL_GUARDED_BY(mu_);
  absl::Mutex drain_mu_;
  bool draining_ ABSL_GUARDED_BY(drain_mu_) = false;
  int in_flight_ ABSL_GUARDED_BY(drain_mu_) = 0;
};

}  // namespace ferry::service

#endif  // FERRY_AGENT_SERVICE_AGENT_SERVICE_H_
