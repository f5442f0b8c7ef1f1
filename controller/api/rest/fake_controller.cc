#include "controller/api/rest/fake_controller.h"

#include <thread>

namespace ferry::rest::testing {

using namespace ferry::v1;  // NOLINT: test fake, every type is ferry::v1

grpc::Status FakeController::Record(const std::string& rpc,
                                    const google::protobuf::Message& request) {
  absl::MutexLock lock(&mu_);
  last_[rpc] = request.SerializeAsString();
  last_rpc_ = rpc;
  ++calls_;
  return fail_;
}

grpc::Status FakeController::RegisterHost(grpc::ServerContext*,
                                          const RegisterHostRequest* req,
                                          RegisterHostResponse* resp) {
  grpc::Status s = Record("RegisterHost", *req);
  if (!s.ok()) return s;
  resp->mutable_host()->set_name(req->info().name());
  resp->mutable_heartbeat_interval()->set_seconds(5);
  return s;
}

grpc::Status FakeController::Heartbeat(grpc::ServerContext*,
                                       const HeartbeatRequest* req,
                                       HeartbeatResponse* resp) {
  grpc::Status s = Record("Heartbeat", *req);
  resp->mutable_heartbeat_interval()->set_seconds(5);
  resp->set_cordoned(true);
  return s;
}

grpc::Status FakeController::ListHosts(grpc::ServerContext*,
                                       const ListHostsRequest* req,
                                       ListHostsResponse* resp) {
  grpc::Status s = Record("ListHosts", *req);
  resp->add_hosts()->set_name("host-a");
  resp->add_hosts()->set_name("host-b");
  resp->set_next_page_token("next-token");
  return s;
}

grpc::Status FakeController::GetHost(grpc::ServerContext*,
                                     const GetHostRequest* req, Host* resp) {
  grpc::Status s = Record("GetHost", *req);
  resp->set_name(req->name());
  resp->set_readiness(HOST_READINESS_READY);
  resp->set_cordon_reason("none");
  resp->set_resource_version(42);
  resp->mutable_last_heartbeat_time()->set_seconds(1700000000);
  return s;
}

grpc::Status FakeController::CordonHost(grpc::ServerContext*,
                                        const CordonHostRequest* req,
                                        Host* resp) {
  grpc::Status s = Record("CordonHost", *req);
  resp->set_name(req->name());
  resp->set_cordoned(true);
  resp->set_cordon_reason(req->reason());
  return s;
}

grpc::Status FakeController::UncordonHost(grpc::ServerContext*,
                                          const UncordonHostRequest* req,
                                          Host* resp) {
  grpc::Status s = Record("UncordonHost", *req);
  resp->set_name(req->name());
  return s;
}

grpc::Status FakeController::DrainHost(
    grpc::ServerContext*, const DrainHostRequest* req,
    grpc::ServerWriter<DrainHostUpdate>* writer) {
  grpc::Status s = Record("DrainHost", *req);
  if (!s.ok()) return s;
  DrainHostUpdate u;
  u.set_vm_name("vm-1");
  u.set_migration_id("m-1");
  u.set_outcome(DRAIN_OUTCOME_STARTED);
  u.set_vms_remaining(1);
  writer->Write(u);
  u.set_outcome(DRAIN_OUTCOME_MIGRATED);
  u.set_vms_remaining(0);
  writer->Write(u);
  return s;
}

grpc::Status FakeController::CreateVm(grpc::ServerContext*,
                                      const CreateVmRequest* req, Vm* resp) {
  grpc::Status s = Record("CreateVm", *req);
  *resp->mutable_spec() = req->spec();
  resp->set_uid("uid-1");
  resp->mutable_status()->set_phase(VM_PHASE_PENDING);
  return s;
}

grpc::Status FakeController::GetVm(grpc::ServerContext* ctx,
                                   const GetVmRequest* req, Vm* resp) {
  grpc::Status s = Record("GetVm", *req);
  const absl::Time until = absl::Now() + absl::Milliseconds(get_vm_delay_ms.load());
  while (absl::Now() < until) {
    if (ctx->IsCancelled()) return grpc::Status::CANCELLED;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  resp->mutable_spec()->set_name(req->name());
  resp->mutable_status()->set_phase(VM_PHASE_RUNNING);
  return s;
}

grpc::Status FakeController::ListVms(grpc::ServerContext*,
                                     const ListVmsRequest* req,
                                     ListVmsResponse* resp) {
  grpc::Status s = Record("ListVms", *req);
  resp->add_vms()->mutable_spec()->set_name("vm-1");
  return s;
}

grpc::Status FakeController::DeleteVm(grpc::ServerContext*,
                                      const DeleteVmRequest* req,
                                      DeleteVmResponse*) {
  return Record("DeleteVm", *req);
}

grpc::Status FakeController::CreateMigration(grpc::ServerContext*,
                                             const CreateMigrationRequest* req,
                                             Migration* resp) {
  grpc::Status s = Record("CreateMigration", *req);
  resp->set_id("m-1");
  resp->set_vm_name(req->vm_name());
  resp->set_phase(MIGRATION_PHASE_PENDING);
  resp->set_pending_reason(PENDING_REASON_NO_CAPACITY);
  return s;
}

grpc::Status FakeController::GetMigration(grpc::ServerContext*,
                                          const GetMigrationRequest* req,
                                          Migration* resp) {
  grpc::Status s = Record("GetMigration", *req);
  resp->set_id(req->id());
  resp->set_phase(MIGRATION_PHASE_TRANSFERRING);
  return s;
}

grpc::Status FakeController::ListMigrations(grpc::ServerContext*,
                                            const ListMigrationsRequest* req,
                                            ListMigrationsResponse* resp) {
  grpc::Status s = Record("ListMigrations", *req);
  resp->add_migrations()->set_id("m-1");
  return s;
}

grpc::Status FakeController::WatchMigration(
    grpc::ServerContext* ctx, const WatchMigrationRequest* req,
    grpc::ServerWriter<Migration>* writer) {
  grpc::Status s = Record("WatchMigration", *req);
  if (!s.ok()) return s;
  static constexpr MigrationPhase kPhases[] = {
      MIGRATION_PHASE_PREPARING, MIGRATION_PHASE_TRANSFERRING,
      MIGRATION_PHASE_SWITCHOVER, MIGRATION_PHASE_SUCCEEDED};
  Migration m;
  m.set_id(req->id());
  if (watch_hang) {
    m.set_phase(MIGRATION_PHASE_TRANSFERRING);
    writer->Write(m);
    const absl::Time give_up = absl::Now() + absl::Seconds(20);
    while (!ctx->IsCancelled() && absl::Now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    watch_saw_cancel = ctx->IsCancelled();
    watch_done = true;
    return grpc::Status::CANCELLED;
  }
  for (int i = 0; i < watch_messages; ++i) {
    if (i == watch_fail_after) {
      watch_done = true;
      return grpc::Status(grpc::StatusCode::ABORTED, "store write conflict");
    }
    m.set_phase(kPhases[std::min(i, 3)]);
    m.set_resource_version(i + 1);
    if (!writer->Write(m)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(watch_interval_ms.load()));
  }
  watch_done = true;
  return s;
}

grpc::Status FakeController::CancelMigration(grpc::ServerContext*,
                                             const CancelMigrationRequest* req,
                                             Migration* resp) {
  grpc::Status s = Record("CancelMigration", *req);
  resp->set_id(req->id());
  resp->set_cancel_requested(true);
  resp->set_cancel_reason(req->reason());
  return s;
}

grpc::Status FakeController::ListEvents(grpc::ServerContext*,
                                        const ListEventsRequest* req,
                                        ListEventsResponse* resp) {
  grpc::Status s = Record("ListEvents", *req);
  Event* e = resp->add_events();
  e->set_sequence(7);
  e->set_severity(EVENT_SEVERITY_WARNING);
  e->set_object_kind(OBJECT_KIND_VM);
  e->set_object_name("vm-1");
  (*e->mutable_attributes())["from"] = "TRANSFERRING";
  return s;
}

}  // namespace ferry::rest::testing
