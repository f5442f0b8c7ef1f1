// Orchestrator's recovery half: reconciling an in-flight migration nobody
// drives with what both agents say (the rules are in recovery.h), and
// carrying out the decision — finish forward, confirm, or roll back.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "controller/orchestrator/orchestrator.h"
#include "controller/orchestrator/orchestrator_internal.h"
#include "controller/scheduler/ledger.h"

namespace ferry::controller {

using internal::Ctx;
using internal::MigrationEvent;
using internal::Unreachable;
using scheduler::IsTerminal;

AgentView Orchestrator::AskAgent(const std::string& host, const std::string& id) {
  AgentView v;
  const std::string address = AgentAddress(host);
  if (address.empty()) return v;
  auto stub = v1::AgentService::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  v1::AgentGetMigrationRequest req;
  req.set_migration_id(id);
  grpc::Status s = stub->GetMigration(Ctx(options_.probe_timeout).get(), req, &v.migration);
  if (s.ok()) {
    v.state = AgentView::State::kFound;
  } else if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
    v.state = AgentView::State::kNotFound;
  }
  return v;
}

bool Orchestrator::Reconcile(const std::string& id) {
  absl::StatusOr<v1::Migration> m = store_->Get<v1::Migration>(id);
  if (!m.ok() || IsTerminal(m->phase())) return true;
  const AgentView src = AskAgent(m->source_host(), id);
  const AgentView dst = AskAgent(m->target_host(), id);
  if (stopping()) return false;
  std::string why;
  const RecoveryAction action = DecideRecovery(*m, src, dst, &why);
  {
    v1::Event e = MigrationEvent(*m, action == RecoveryAction::kRetryLater
                                         ? v1::EVENT_SEVERITY_WARNING
                                         : v1::EVENT_SEVERITY_INFO,
                                 "MigrationReconciled", why);
    (*e.mutable_attributes())["action"] = RecoveryActionName(action);
    WriteTxn txn;
    txn.AppendEvent(std::move(e));
    (void)store_->Commit(txn);
  }
  switch (action) {
    case RecoveryAction::kConfirmHandedOff:
      return ConfirmHandedOff(*m, why);
    case RecoveryAction::kFinishOnDestination: {
      MigrationRequest req;
      req.migration_id = id;
      req.vm_name = m->vm_name();
      req.source_address = AgentAddress(m->source_host());
      req.destination_address = AgentAddress(m->target_host());
      req.source_host = m->source_host();
      req.destination_host = m->target_host();
      req.policy = m->policy();
      req.rpc_timeout = options_.rpc_timeout;
      req.agent_lost_after = options_.agent_lost_after;
      req.before_phase = [this, id](v1::MigrationPhase phase) {
        return SetPhase(id, phase, "");
      };
      auto driver = std::make_shared<MigrationDriver>(std::move(req));
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) return false;
        runners_[id]->driver = driver;
      }
      MigrationDetails details;
      v1::MigrationResult r = driver->FinishHandoff(&details);
      if (details.abandoned || details.handoff_unknown) return false;
      return Finish(id, r, nullptr).ok();
    }
    case RecoveryAction::kAdoptSourceResult: {
      // Make sure the destination shell is gone, then adopt.
      if (dst.state == AgentView::State::kFound) {
        auto stub = v1::AgentService::NewStub(grpc::CreateChannel(
            AgentAddress(m->target_host()), grpc::InsecureChannelCredentials()));
        v1::AgentCancelMigrationRequest creq;
        creq.set_migration_id(id);
        creq.set_reason("the source ended the migration");
        v1::AgentCancelMigrationResponse cresp;
        (void)stub->CancelMigration(Ctx(options_.rpc_timeout).get(), creq, &cresp);
      }
      v1::MigrationResult r = src.migration.result();
      r.set_phase(src.migration.phase());
      r.set_vm_host(m->source_host());
      if (r.message().empty()) r.set_message(why);
      return Finish(id, r, nullptr).ok();
    }
    case RecoveryAction::kRollBack:
      return RollBack(*m, src, dst, why);
    case RecoveryAction::kRetryLater:
      return false;
  }
  return false;
}

bool Orchestrator::ConfirmHandedOff(const v1::Migration& m, const std::string& why) {
  if (!SetPhase(m.id(), v1::MIGRATION_PHASE_CONFIRMING, why).ok()) return false;
  const std::string address = AgentAddress(m.source_host());
  std::string note;
  if (!address.empty()) {
    auto stub = v1::AgentService::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    v1::ConfirmOutgoingRequest req;
    req.set_migration_id(m.id());
    req.set_outcome(v1::CONFIRM_OUTCOME_HANDED_OFF);
    v1::ConfirmOutgoingResponse resp;
    grpc::Status s = stub->ConfirmOutgoing(Ctx(options_.rpc_timeout).get(), req, &resp);
    if (Unreachable(s)) {
      return false;  // the source's paused copy must be destroyed: retry
    }
    if (!s.ok()) note = absl::StrCat(" (ConfirmOutgoing: ", s.error_message(), ")");
  }
  v1::MigrationResult r;
  r.set_phase(v1::MIGRATION_PHASE_SUCCEEDED);
  r.set_vm_host(m.target_host());
  r.set_message(absl::StrCat("completed by reconciliation: ", why, note));
  return Finish(m.id(), r, nullptr).ok();
}

bool Orchestrator::RollBack(const v1::Migration& m, const AgentView& src,
                            const AgentView& dst, const std::string& why) {
  if (!SetPhase(m.id(), v1::MIGRATION_PHASE_ROLLING_BACK, why).ok()) return false;
  const std::string reason = absl::StrCat("controller reconciliation: ", why);
  bool dst_aborted = dst.state == AgentView::State::kNotFound;
  if (dst.state == AgentView::State::kFound) {
    auto stub = v1::AgentService::NewStub(grpc::CreateChannel(
        AgentAddress(m.target_host()), grpc::InsecureChannelCredentials()));
    v1::AgentCancelMigrationRequest req;
    req.set_migration_id(m.id());
    req.set_reason(reason);
    v1::AgentCancelMigrationResponse resp;
    grpc::Status s = stub->CancelMigration(Ctx(options_.rpc_timeout).get(), req, &resp);
    if (s.ok() || s.error_code() == grpc::StatusCode::NOT_FOUND) {
      dst_aborted = true;
    } else if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
      // It resumed after all (or cannot be aborted): decide again.
      return false;
    } else {
      return false;
    }
  }
  if (src.state == AgentView::State::kUnreachable) {
    // Without the source nothing is known about the VM's copy there.
    return false;
  }
  if (src.state == AgentView::State::kFound) {
    auto stub = v1::AgentService::NewStub(grpc::CreateChannel(
        AgentAddress(m.source_host()), grpc::InsecureChannelCredentials()));
    v1::AgentCancelMigrationRequest req;
    req.set_migration_id(m.id());
    req.set_reason(reason);
    v1::AgentCancelMigrationResponse resp;
    grpc::Status s = stub->CancelMigration(Ctx(options_.rpc_timeout).get(), req, &resp);
    if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
      // Past switchover: the source resumes only with ConfirmOutgoing(ABORTED),
      // sent only with the destination's ABORTED in hand.
      if (!dst_aborted) return false;
      v1::ConfirmOutgoingRequest creq;
      creq.set_migration_id(m.id());
      creq.set_outcome(v1::CONFIRM_OUTCOME_ABORTED);
      v1::ConfirmOutgoingResponse cresp;
      grpc::Status cs =
          stub->ConfirmOutgoing(Ctx(options_.rpc_timeout).get(), creq, &cresp);
      if (!cs.ok() && cs.error_code() != grpc::StatusCode::NOT_FOUND &&
          cs.error_code() != grpc::StatusCode::FAILED_PRECONDITION) {
        return false;
      }
    } else if (!s.ok() && s.error_code() != grpc::StatusCode::NOT_FOUND) {
      return false;
    }
  }
  v1::MigrationResult r;
  r.set_phase(m.cancel_requested() ? v1::MIGRATION_PHASE_CANCELLED
                                   : v1::MIGRATION_PHASE_FAILED);
  r.set_failure(m.cancel_requested() ? v1::MIGRATION_FAILURE_CANCELLED
                                     : v1::MIGRATION_FAILURE_INTERRUPTED);
  r.set_vm_host(m.source_host());
  r.set_message(absl::StrCat("rolled back, the VM stays on ", m.source_host(), ": ", why));
  return Finish(m.id(), r, nullptr).ok();
}


}  // namespace ferry::controller
