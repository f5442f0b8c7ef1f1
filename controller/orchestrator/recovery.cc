#include "controller/orchestrator/recovery.h"

#include "absl/strings/str_cat.h"

namespace ferry::controller {
namespace {

using State = AgentView::State;

bool Found(const AgentView& v) { return v.state == State::kFound; }

std::string Describe(const char* side, const AgentView& v) {
  switch (v.state) {
    case State::kUnreachable:
      return absl::StrCat(side, " unreachable");
    case State::kNotFound:
      return absl::StrCat(side, " does not know the migration");
    case State::kFound:
      return absl::StrCat(side, " ", v1::MigrationPhase_Name(v.migration.phase()),
                          v.migration.handoff() != v1::HANDOFF_STATE_UNSPECIFIED
                              ? absl::StrCat(
                                    "/", v1::HandoffState_Name(v.migration.handoff()))
                              : "");
  }
  return side;
}

bool BeforeSwitchover(v1::MigrationPhase p) {
  return p == v1::MIGRATION_PHASE_PENDING || p == v1::MIGRATION_PHASE_PREPARING ||
         p == v1::MIGRATION_PHASE_TRANSFERRING ||
         p == v1::MIGRATION_PHASE_THROTTLING;
}

}  // namespace

const char* RecoveryActionName(RecoveryAction action) {
  switch (action) {
    case RecoveryAction::kConfirmHandedOff: return "confirm-handed-off";
    case RecoveryAction::kFinishOnDestination: return "finish-on-destination";
    case RecoveryAction::kAdoptSourceResult: return "adopt-source-result";
    case RecoveryAction::kRollBack: return "roll-back";
    case RecoveryAction::kRetryLater: return "retry-later";
  }
  return "?";
}

RecoveryAction DecideRecovery(const v1::Migration& record, const AgentView& src,
                              const AgentView& dst, std::string* why) {
  const std::string seen =
      absl::StrCat(Describe("source", src), ", ", Describe("destination", dst));
  auto out = [&](RecoveryAction a, const std::string& text) {
    if (why != nullptr) *why = absl::StrCat(text, " (", seen, ")");
    return a;
  };
  // 1. The destination is authoritative.
  if (Found(dst) && (dst.migration.handoff() == v1::HANDOFF_STATE_RESUMED ||
                     dst.migration.phase() == v1::MIGRATION_PHASE_SUCCEEDED ||
                     dst.migration.phase() == v1::MIGRATION_PHASE_CONFIRMING)) {
    return out(RecoveryAction::kConfirmHandedOff,
               "the destination resumed the VM: completing the migration");
  }
  if (Found(src) && src.migration.phase() == v1::MIGRATION_PHASE_SUCCEEDED) {
    return out(RecoveryAction::kConfirmHandedOff,
               "the source reports the handoff done: completing the migration");
  }
  // 2. Armed: finish forward.
  if (Found(dst) && dst.migration.handoff() == v1::HANDOFF_STATE_ARMED) {
    return out(RecoveryAction::kFinishOnDestination,
               "the destination is ARMED: finishing on the destination");
  }
  // 3. The source already ended it.
  if (Found(src) && (src.migration.phase() == v1::MIGRATION_PHASE_FAILED ||
                     src.migration.phase() == v1::MIGRATION_PHASE_CANCELLED)) {
    return out(RecoveryAction::kAdoptSourceResult,
               "the source ended the migration before the handoff");
  }
  // 4. Nothing armed.
  if (dst.state != State::kUnreachable) {
    // An unreachable source is retried by the rollback until it answers.
    return out(RecoveryAction::kRollBack,
               "not armed: rolling back, the VM stays on the source");
  }
  if (Found(src) && BeforeSwitchover(src.migration.phase())) {
    return out(RecoveryAction::kRollBack,
               "destination unreachable but the source is before switchover: "
               "cancelling the source keeps the VM there");
  }
  if (src.state == State::kNotFound && record.phase() == v1::MIGRATION_PHASE_PREPARING) {
    // Nothing started on the source; an unreachable destination holds at
    // most a reservation that expires by its TTL.
    return out(RecoveryAction::kRollBack,
               "the source never started: failing, the destination's "
               "reservation expires by itself");
  }
  return out(RecoveryAction::kRetryLater,
             "the outcome depends on an agent that does not answer; retrying");
}

}  // namespace ferry::controller
