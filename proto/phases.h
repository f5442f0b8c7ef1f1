// Small facts about the MigrationPhase enum that every side (agent engine,
// agent service, metrics, controller) needs; one definition here instead
// of a private copy in each .cc.
#ifndef FERRY_PROTO_PHASES_H_
#define FERRY_PROTO_PHASES_H_

#include "proto/migration.pb.h"

namespace ferry::v1 {

// SUCCEEDED, FAILED or CANCELLED: the migration will not change again.
inline bool IsTerminalPhase(MigrationPhase phase) {
  return phase == MIGRATION_PHASE_SUCCEEDED || phase == MIGRATION_PHASE_FAILED ||
         phase == MIGRATION_PHASE_CANCELLED;
}

}  // namespace ferry::v1

#endif  // FERRY_PROTO_PHASES_H_
