// What to do with a migration the controller finds non-terminal without a
// driver running it (controller restart, or a driver that could not learn
// the handoff's outcome), decided from what BOTH agents say about it.
//
// The rules keep DESIGN.md's invariant — never two running copies, never a
// lost VM:
//  1. The destination RESUMED (or already reports SUCCEEDED/CONFIRMING), or
//     the source reports SUCCEEDED (DIRECT handoff): the destination is
//     authoritative. Confirm the source (destroy its paused copy), the VM
//     record moves to the target, SUCCEEDED.
//  2. The destination is ARMED: the source handed over everything and stays
//     paused until told; finish on the destination (FinishIncoming, then
//     ConfirmOutgoing(HANDED_OFF)).
//  3. The source ended the migration by itself (FAILED/CANCELLED): adopt its
//     result, make sure the destination is aborted; the VM is on the source.
//  4. Otherwise nothing is armed: roll back — abort the destination (its
//     ABORTED, or NOT_FOUND after a restart, in hand), then cancel the
//     source, or ConfirmOutgoing(ABORTED) if it is already past switchover.
//     The VM stays on the source. If the destination cannot be reached, a
//     source still before switchover may be cancelled alone (without
//     switchover the destination can never arm); anything else waits.
//  5. Not enough is known (an agent unreachable where its answer matters):
//     retry later; the record keeps its phase.
#ifndef FERRY_CONTROLLER_ORCHESTRATOR_RECOVERY_H_
#define FERRY_CONTROLLER_ORCHESTRATOR_RECOVERY_H_

#include <string>

#include "proto/agent.pb.h"
#include "proto/controller.pb.h"

namespace ferry::controller {

struct AgentView {
  enum class State { kUnreachable, kNotFound, kFound };
  State state = State::kUnreachable;
  v1::AgentMigration migration;  // when kFound
};

enum class RecoveryAction {
  kConfirmHandedOff,
  kFinishOnDestination,
  kAdoptSourceResult,
  kRollBack,
  kRetryLater,
};

const char* RecoveryActionName(RecoveryAction action);

// Pure: the rules above. `why` gets one line for the event log.
RecoveryAction DecideRecovery(const v1::Migration& record,
                              const AgentView& source,
                              const AgentView& destination, std::string* why);

}  // namespace ferry::controller

#endif  // FERRY_CONTROLLER_ORCHESTRATOR_RECOVERY_H_
