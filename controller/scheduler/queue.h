// The migration queue: which PENDING migrations may start now, and where.
//
// Order is FIFO by create_time, ties broken by id, so a given snapshot always
// yields the same decisions. A migration that cannot start does not block the
// ones behind it that can (no head-of-line blocking: a VM too big for any
// host must not stall a drain), but it keeps its place, so when a slot or
// capacity frees up it is considered before later arrivals.
//
// Each admission is charged to the ledger before the next one is considered:
// two migrations in one pass never take the same last slot or GiB.
#ifndef FERRY_CONTROLLER_SCHEDULER_QUEUE_H_
#define FERRY_CONTROLLER_SCHEDULER_QUEUE_H_

#include <string>
#include <vector>

#include "controller/scheduler/ledger.h"
#include "proto/controller.pb.h"

namespace ferry::controller::scheduler {

struct Decision {
  std::string migration_id;
  std::string vm_name;
  std::string source_host;
  // Set when admitted: move the migration to PREPARING with this target.
  bool admitted = false;
  std::string target_host;
  // Set when not admitted: store as Migration.pending_reason/_message.
  v1::PendingReason reason = v1::PENDING_REASON_UNSPECIFIED;
  std::string message;
};

// One decision per PENDING migration in `snapshot`, in queue order.
std::vector<Decision> ScheduleMigrations(const ClusterSnapshot& snapshot,
                                         const Limits& limits);

// Queue order of the PENDING migrations (pointers into `snapshot`).
std::vector<const v1::Migration*> PendingInQueueOrder(
    const ClusterSnapshot& snapshot);

}  // namespace ferry::controller::scheduler

#endif  // FERRY_CONTROLLER_SCHEDULER_QUEUE_H_
