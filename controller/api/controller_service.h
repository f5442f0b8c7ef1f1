// ControllerServiceImpl: proto/controller.proto over the store, the host
// registry and the orchestrator.
//
// Every RPC validates first and changes nothing on bad input (codes:
// INVALID_ARGUMENT for malformed requests, NOT_FOUND for unknown names,
// FAILED_PRECONDITION when the current state forbids the call, ABORTED for a
// stale resource_version, UNAVAILABLE when an agent does not answer).
//
// CreateVm: the scheduler picks a host (or checks the pinned one) under the
// orchestrator's placement lock, the record is committed CREATING with its
// host BEFORE the agent is asked, then RUNNING (the agent's status) after.
// A definite agent refusal deletes the record again; an unknown outcome
// leaves it FAILED with the reason, and the host's next heartbeat puts it
// right if the VM does run (heartbeats reconcile VM phases).
//
// request_id (CreateVm, CreateMigration): persisted in the store (aux
// records "request/<kind>/<request_id>": a fingerprint of the request
// without its request_id, the result's name/id, the expiry) for 24 h, so a
// retry, also after a controller restart, returns the current record of the
// first call's result. The same request_id with a DIFFERENT request is
// INVALID_ARGUMENT (the client reused an id; retrying cannot help).
// Expired records are ignored and pruned (at most once a minute, on use).
// The record is written right after the create commits: a crash between
// the two forgets the id (a retried CreateVm then gets ALREADY_EXISTS for
// the name; a retried CreateMigration FAILED_PRECONDITION, VM migrating).
//
// Streams (DrainHost, WatchMigration) use the synchronous server API: each
// holds one server thread while open, and polls the store on every commit
// (Store::WaitForRevision), ending when the client goes away.
#ifndef FERRY_CONTROLLER_API_CONTROLLER_SERVICE_H_
#define FERRY_CONTROLLER_API_CONTROLLER_SERVICE_H_

#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/cluster/host_registry.h"
#include "controller/orchestrator/orchestrator.h"
#include "controller/store/store.h"
#include "proto/controller.grpc.pb.h"

namespace ferry::controller {

struct ControllerServiceOptions {
  // Agent CreateVm/DeleteVm calls (creating a VM allocates its memory).
  absl::Duration agent_timeout = absl::Seconds(60);
  absl::Duration request_id_ttl = absl::Hours(24);
  // How often a stream re-checks the client when nothing changes.
  absl::Duration stream_poll = absl::Milliseconds(500);
};

class ControllerServiceImpl final : public v1::ControllerService::Service {
 public:
  ControllerServiceImpl(Store* store, HostRegistry* hosts, Orchestrator* orchestrator,
                        ControllerServiceOptions options = {});

  grpc::Status RegisterHost(grpc::ServerContext*, const v1::RegisterHostRequest*,
                            v1::RegisterHostResponse*) override;
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest*,
                         v1::HeartbeatResponse*) override;
  grpc::Status ListHosts(grpc::ServerContext*, const v1::ListHostsRequest*,
                         v1::ListHostsResponse*) override;
  grpc::Status GetHost(grpc::ServerContext*, const v1::GetHostRequest*,
                       v1::Host*) override;
  grpc::Status CordonHost(grpc::ServerContext*, const v1::CordonHostRequest*,
                          v1::Host*) override;
  grpc::Status UncordonHost(grpc::ServerContext*, const v1::UncordonHostRequest*,
                            v1::Host*) override;
  grpc::Status DrainHost(grpc::ServerContext*, const v1::DrainHostRequest*,
                         grpc::ServerWriter<v1::DrainHostUpdate>*) override;

  grpc::Status CreateVm(grpc::ServerContext*, const v1::CreateVmRequest*,
                        v1::Vm*) override;
  grpc::Status GetVm(grpc::ServerContext*, const v1::GetVmRequest*, v1::Vm*) override;
  grpc::Status ListVms(grpc::ServerContext*, const v1::ListVmsRequest*,
                       v1::ListVmsResponse*) override;
  grpc::Status DeleteVm(grpc::ServerContext*, const v1::DeleteVmRequest*,
                        v1::DeleteVmResponse*) override;

  grpc::Status CreateMigration(grpc::ServerContext*, const v1::CreateMigrationRequest*,
                               v1::Migration*) override;
  grpc::Status GetMigration(grpc::ServerContext*, const v1::GetMigrationRequest*,
                            v1::Migration*) override;
  grpc::Status ListMigrations(grpc::ServerContext*, const v1::ListMigrationsRequest*,
                              v1::ListMigrationsResponse*) override;
  grpc::Status WatchMigration(grpc::ServerContext*, const v1::WatchMigrationRequest*,
                              grpc::ServerWriter<v1::Migration>*) override;
  grpc::Status CancelMigration(grpc::ServerContext*, const v1::CancelMigrationRequest*,
                               v1::Migration*) override;

  grpc::Status ListEvents(grpc::ServerContext*, const v1::ListEventsRequest*,
                          v1::ListEventsResponse*) override;

 private:
  absl::StatusOr<v1::Vm> DoCreateVm(const v1::CreateVmRequest& req);
  absl::Status DoDeleteVm(const v1::DeleteVmRequest& req);
  // Heartbeat's VM summaries -> VM record phases (only VMs not migrating
  // whose uid matches, only when something changed). A RUNNING/PAUSED
  // record the agent has stopped reporting is marked FAILED ("lost") once
  // it has been missing, unchanged, for 3 heartbeat intervals — the delay
  // keeps a heartbeat that raced with a migration's handoff from counting.
  void ReconcileVms(const v1::HeartbeatRequest& req);
  // CreateVm lost a race with DeleteVm (the record is gone or another
  // incarnation's): deletes the copy `uid` the agent at `address` just
  // started, records an event; always ABORTED, saying what happened.
  absl::Status RemoveOrphan(const std::string& name, const std::string& uid,
                            const std::string& host, const std::string& address);
  // The key a request_id produced, if seen within the TTL ("" if not);
  // INVALID_ARGUMENT if it was seen with another request (`fingerprint`).
  absl::StatusOr<std::string> LookupRequest(const std::string& kind,
                                            const std::string& request_id,
                                            const std::string& fingerprint);
  void RememberRequest(const std::string& kind, const std::string& request_id,
                       const std::string& fingerprint, const std::string& key);

  Store* const store_;
  HostRegistry* const hosts_;
  Orchestrator* const orchestrator_;
  const ControllerServiceOptions options_;

  struct Missing {
    uint64_t resource_version = 0;
    absl::Time since;
  };
  // The latest heartbeat figures per VM (dirty rate, guest counters,
  // self-check errors). They change every second, so they live in memory
  // and are laid over Get/List answers instead of being written to RocksDB
  // on every heartbeat; a sample older than three heartbeats, or from
  // another host or incarnation (uid), is not used.
  struct LiveSample {
    std::string uid;
    std::string host;
    v1::VmSummary summary;
    absl::Time time;
  };
  void RecordLive(const v1::HeartbeatRequest& req);
  void OverlayLive(v1::Vm* vm);
  absl::Mutex live_mu_;
  absl::flat_hash_map<std::string, LiveSample> live_ ABSL_GUARDED_BY(live_mu_);

  absl::Mutex missing_mu_;
  absl::flat_hash_map<std::string, Missing> missing_ ABSL_GUARDED_BY(missing_mu_);
  absl::Mutex requests_mu_;
  absl::Time last_request_prune_ ABSL_GUARDED_BY(requests_mu_) = absl::InfinitePast();
};

// DNS label: [a-z0-9-], 1..63, starting and ending alphanumeric.
absl::Status ValidateName(const std::string& field, const std::string& name);

}  // namespace ferry::controller

#endif  // FERRY_CONTROLLER_API_CONTROLLER_SERVICE_H_
