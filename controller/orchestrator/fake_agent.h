// FakeAgent: an in-process AgentService on a loopback port for controller
// unit tests. It keeps VMs and per-migration state in memory and plays the
// agent's side of the libvirt-v3 handshake just enough to drive the
// controller through every branch:
//   source:      StartOutgoing -> WatchMigration streams TRANSFERRING, then
//                FINISHING (armed) — or stays TRANSFERRING with hold_transfer
//   destination: PrepareIncoming -> (armed when the source reaches FINISHING)
//                FinishIncoming -> RESUMED
// Tests can also plant a migration in any state (SetMigration) to play a
// restarted controller's reconcile, and record which calls arrived.
#ifndef FERRY_CONTROLLER_ORCHESTRATOR_FAKE_AGENT_H_
#define FERRY_CONTROLLER_ORCHESTRATOR_FAKE_AGENT_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "proto/agent.grpc.pb.h"

namespace ferry::controller::testing {

class FakeAgent final : public v1::AgentService::Service {
 public:
  explicit FakeAgent(std::string name) : name_(std::move(name)) {
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(this);
    server_ = b.BuildAndStart();
    address_ = absl::StrCat("127.0.0.1:", port);
  }
  ~FakeAgent() override { Stop(); }
  void Stop() {
    if (server_) server_->Shutdown(absl::ToChronoTime(absl::Now()));
    server_.reset();
  }
  bool ok() const { return server_ != nullptr; }
  const std::string& name() const { return name_; }
  const std::string& address() const { return address_; }

  v1::HostInfo Info(const std::string& instance = "i-1") const {
    v1::HostInfo info;
    info.set_name(name_);
    info.set_agent_address(address_);
    info.set_migration_address(address_);
    info.mutable_capacity()->set_memory_bytes(uint64_t{4} << 30);
    info.mutable_capacity()->set_vcpus(8);
    info.mutable_capacity()->set_vms(32);
    info.add_backends(v1::VM_BACKEND_SOFT);
    info.set_instance_id(instance);
    return info;
  }

  // Knobs.
  void set_hold_transfer(bool v) { absl::MutexLock l(&mu_); hold_transfer_ = v; }
  void set_refuse_create(bool v) { absl::MutexLock l(&mu_); refuse_create_ = v; }
  // A source stays TRANSFERRING at least this long after StartOutgoing
  // (load benchmarks keep migrations in flight to exercise the queue).
  void set_transfer_time(absl::Duration d) { absl::MutexLock l(&mu_); transfer_time_ = d; }
  void SetMigration(const v1::AgentMigration& m) {
    absl::MutexLock l(&mu_);
    migrations_[m.migration_id()] = m;
  }
  void AddVm(const v1::Vm& vm) {
    absl::MutexLock l(&mu_);
    vms_[vm.spec().name()] = vm;
  }
  bool HasVm(const std::string& name) {
    absl::MutexLock l(&mu_);
    auto it = vms_.find(name);
    return it != vms_.end() && it->second.status().phase() == v1::VM_PHASE_RUNNING;
  }
  std::vector<v1::Vm> Vms() {
    absl::MutexLock l(&mu_);
    std::vector<v1::Vm> out;
    for (const auto& [name, vm] : vms_) out.push_back(vm);
    return out;
  }
  std::vector<std::string> calls() {
    absl::MutexLock l(&mu_);
    return calls_;
  }
  bool Called(const std::string& what) {
    absl::MutexLock l(&mu_);
    for (const std::string& c : calls_) {
      if (c == what) return true;
    }
    return false;
  }
  // The destination's migration, armed by the source's progress: `peer`,
  // else find_peer(destination endpoint) for clusters of many fakes.
  FakeAgent* peer = nullptr;
  std::function<FakeAgent*(const std::string& endpoint)> find_peer;
  // Called with the call's name (as in calls()) before it acts, without the
  // fake's lock: tests check what the controller had committed by then.
  std::function<void(const std::string&)> on_call;

  grpc::Status CreateVm(grpc::ServerContext*, const v1::AgentCreateVmRequest* req,
                        v1::Vm* resp) override {
    Note("CreateVm");
    absl::MutexLock l(&mu_);
    calls_.push_back("CreateVm");
    if (refuse_create_) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "no memory");
    }
    v1::Vm vm;
    *vm.mutable_spec() = req->spec();
    vm.set_uid(req->uid());
    vm.mutable_status()->set_phase(v1::VM_PHASE_RUNNING);
    vm.mutable_status()->set_host(name_);
    vms_[req->spec().name()] = vm;
    *resp = vm;
    return grpc::Status::OK;
  }
  grpc::Status GetVm(grpc::ServerContext*, const v1::AgentGetVmRequest* req,
                     v1::Vm* resp) override {
    absl::MutexLock l(&mu_);
    auto it = vms_.find(req->name());
    if (it == vms_.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no vm");
    *resp = it->second;
    return grpc::Status::OK;
  }
  grpc::Status DeleteVm(grpc::ServerContext*, const v1::AgentDeleteVmRequest* req,
                        v1::AgentDeleteVmResponse*) override {
    Note("DeleteVm");
    absl::MutexLock l(&mu_);
    calls_.push_back("DeleteVm");
    if (vms_.erase(req->name()) == 0) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no vm");
    }
    return grpc::Status::OK;
  }
  grpc::Status PrepareIncoming(grpc::ServerContext*, const v1::PrepareIncomingRequest* req,
                               v1::PrepareIncomingResponse* resp) override {
    Note("PrepareIncoming");
    absl::MutexLock l(&mu_);
    calls_.push_back("PrepareIncoming");
    v1::AgentMigration& m = migrations_[req->migration_id()];
    m.set_migration_id(req->migration_id());
    m.set_role(v1::MIGRATION_ROLE_DESTINATION);
    m.set_vm_name(req->spec().name());
    m.set_phase(v1::MIGRATION_PHASE_PREPARING);
    v1::Vm shell;
    *shell.mutable_spec() = req->spec();
    shell.set_uid(req->vm_uid());
    shell.mutable_status()->set_phase(v1::VM_PHASE_INCOMING);
    vms_[req->spec().name()] = shell;
    resp->set_migration_id(req->migration_id());
    resp->set_endpoint(address_);
    resp->set_token("t");
    return grpc::Status::OK;
  }
  grpc::Status StartOutgoing(grpc::ServerContext*, const v1::StartOutgoingRequest* req,
                             v1::StartOutgoingResponse* resp) override {
    Note("StartOutgoing");
    absl::MutexLock l(&mu_);
    calls_.push_back("StartOutgoing");
    v1::AgentMigration& m = migrations_[req->migration_id()];
    m.set_migration_id(req->migration_id());
    m.set_role(v1::MIGRATION_ROLE_SOURCE);
    m.set_vm_name(req->vm_name());
    m.set_phase(v1::MIGRATION_PHASE_TRANSFERRING);
    started_[req->migration_id()] = absl::Now();
    endpoints_[req->migration_id()] = req->destination_endpoint();
    resp->set_phase(m.phase());
    return grpc::Status::OK;
  }
  grpc::Status WatchMigration(grpc::ServerContext* ctx,
                              const v1::AgentWatchMigrationRequest* req,
                              grpc::ServerWriter<v1::MigrationProgress>* w) override {
    for (int i = 0;; ++i) {
      v1::MigrationProgress p;
      bool hold;
      FakeAgent* to_arm = nullptr;  // armed outside mu_ (two fakes may arm each other)
      {
        absl::MutexLock l(&mu_);
        auto it = migrations_.find(req->migration_id());
        if (it == migrations_.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "");
        hold = hold_transfer_ ||
               absl::Now() - started_[req->migration_id()] < transfer_time_;
        if (!hold && i >= 2 && it->second.phase() == v1::MIGRATION_PHASE_TRANSFERRING) {
          it->second.set_phase(v1::MIGRATION_PHASE_FINISHING);
          to_arm = peer;
          if (to_arm == nullptr && find_peer) to_arm = find_peer(endpoints_[req->migration_id()]);
        }
        p.set_migration_id(req->migration_id());
        p.set_phase(it->second.phase());
        p.set_round(i);
        p.set_total_bytes(64 << 20);
        p.set_remaining_bytes(uint64_t(64 << 20) >> i);
        const int64_t ns = absl::ToUnixNanos(absl::Now());
        p.mutable_sample_time()->set_seconds(ns / 1000000000);
        p.mutable_sample_time()->set_nanos(ns % 1000000000);
        if (it->second.phase() >= v1::MIGRATION_PHASE_SUCCEEDED &&
            it->second.phase() != v1::MIGRATION_PHASE_ROLLING_BACK) {
          *p.mutable_result() = it->second.result();
        }
      }
      if (to_arm != nullptr) to_arm->Arm(req->migration_id());
      if (!w->Write(p)) return grpc::Status::OK;
      if (p.phase() == v1::MIGRATION_PHASE_FINISHING ||
          p.phase() == v1::MIGRATION_PHASE_SUCCEEDED ||
          p.phase() == v1::MIGRATION_PHASE_FAILED ||
          p.phase() == v1::MIGRATION_PHASE_CANCELLED) {
        return grpc::Status::OK;
      }
      if (ctx->IsCancelled()) return grpc::Status::OK;
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  void Arm(const std::string& id) {
    absl::MutexLock l(&mu_);
    auto it = migrations_.find(id);
    if (it == migrations_.end()) return;
    it->second.set_phase(v1::MIGRATION_PHASE_FINISHING);
    it->second.set_handoff(v1::HANDOFF_STATE_ARMED);
  }
  grpc::Status CancelMigration(grpc::ServerContext*, const v1::AgentCancelMigrationRequest* req,
                               v1::AgentCancelMigrationResponse* resp) override {
    Note("CancelMigration");
    absl::MutexLock l(&mu_);
    calls_.push_back("CancelMigration");
    auto it = migrations_.find(req->migration_id());
    if (it == migrations_.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "");
    v1::AgentMigration& m = it->second;
    if (m.handoff() == v1::HANDOFF_STATE_RESUMED) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "RESUMED");
    }
    if (m.role() == v1::MIGRATION_ROLE_SOURCE &&
        (m.phase() == v1::MIGRATION_PHASE_SWITCHOVER ||
         m.phase() == v1::MIGRATION_PHASE_FINISHING)) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "past switchover");
    }
    m.set_phase(v1::MIGRATION_PHASE_CANCELLED);
    m.mutable_result()->set_phase(v1::MIGRATION_PHASE_CANCELLED);
    if (m.role() == v1::MIGRATION_ROLE_DESTINATION) {
      m.set_handoff(v1::HANDOFF_STATE_ABORTED);
      vms_.erase(m.vm_name());
    }
    resp->set_phase(m.phase());
    resp->set_handoff(m.handoff());
    return grpc::Status::OK;
  }
  grpc::Status FinishIncoming(grpc::ServerContext*, const v1::FinishIncomingRequest* req,
                              v1::FinishIncomingResponse* resp) override {
    Note("FinishIncoming");
    absl::MutexLock l(&mu_);
    calls_.push_back("FinishIncoming");
    auto it = migrations_.find(req->migration_id());
    if (it == migrations_.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "");
    v1::AgentMigration& m = it->second;
    if (m.handoff() != v1::HANDOFF_STATE_ARMED && m.handoff() != v1::HANDOFF_STATE_RESUMED) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "not armed");
    }
    m.set_handoff(v1::HANDOFF_STATE_RESUMED);
    m.set_phase(v1::MIGRATION_PHASE_SUCCEEDED);
    vms_[m.vm_name()].mutable_status()->set_phase(v1::VM_PHASE_RUNNING);
    resp->set_handoff(v1::HANDOFF_STATE_RESUMED);
    return grpc::Status::OK;
  }
  grpc::Status ConfirmOutgoing(grpc::ServerContext*, const v1::ConfirmOutgoingRequest* req,
                               v1::ConfirmOutgoingResponse* resp) override {
    Note(absl::StrCat("ConfirmOutgoing:", v1::ConfirmOutcome_Name(req->outcome())));
    absl::MutexLock l(&mu_);
    calls_.push_back(absl::StrCat("ConfirmOutgoing:",
                                  v1::ConfirmOutcome_Name(req->outcome())));
    auto it = migrations_.find(req->migration_id());
    if (it == migrations_.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "");
    v1::AgentMigration& m = it->second;
    const bool handed = req->outcome() == v1::CONFIRM_OUTCOME_HANDED_OFF;
    m.set_phase(handed ? v1::MIGRATION_PHASE_SUCCEEDED : v1::MIGRATION_PHASE_FAILED);
    m.mutable_result()->set_phase(m.phase());
    if (handed) vms_.erase(m.vm_name());
    resp->set_phase(m.phase());
    *resp->mutable_result() = m.result();
    return grpc::Status::OK;
  }
  grpc::Status GetMigration(grpc::ServerContext*, const v1::AgentGetMigrationRequest* req,
                            v1::AgentMigration* resp) override {
    absl::MutexLock l(&mu_);
    auto it = migrations_.find(req->migration_id());
    if (it == migrations_.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "");
    *resp = it->second;
    return grpc::Status::OK;
  }
  v1::AgentMigration Migration(const std::string& id) {
    absl::MutexLock l(&mu_);
    return migrations_[id];
  }

 private:
  void Note(const std::string& what) {
    if (on_call) on_call(what);
  }

  const std::string name_;
  std::string address_;
  std::unique_ptr<grpc::Server> server_;
  absl::Mutex mu_;
  bool hold_transfer_ ABSL_GUARDED_BY(mu_) = false;
  bool refuse_create_ ABSL_GUARDED_BY(mu_) = false;
  absl::Duration transfer_time_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();
  std::map<std::string, absl::Time> started_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> endpoints_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, v1::Vm> vms_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, v1::AgentMigration> migrations_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> calls_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::controller::testing

#endif  // FERRY_CONTROLLER_ORCHESTRATOR_FAKE_AGENT_H_
