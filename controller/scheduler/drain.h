// Drain planning: where every VM of a host would go, in which wave, and which
// VMs cannot leave and why — computed before anything moves, so DrainHost
// can report the whole picture up front.
//
// VMs are placed largest first (memory, then vCPUs, then name): first-fit
// decreasing packs the hard ones while capacity remains, so a drain fails on
// fewer VMs than name order would. Each placement is charged before the next,
// and the drained host counts as cordoned.
//
// Waves respect the limits: within one wave the drained host sends at most
// min(max_parallel, max_outbound_per_host) migrations (less what it already
// sends), each target receives at most max_inbound_per_host, and the cluster
// total stays within max_cluster. Waves are an estimate of the schedule for
// people; execution still goes through the queue (queue.h), which applies
// the same limits to the real state.
#ifndef FERRY_CONTROLLER_SCHEDULER_DRAIN_H_
#define FERRY_CONTROLLER_SCHEDULER_DRAIN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "controller/scheduler/ledger.h"

namespace ferry::controller::scheduler {

enum class DrainAction {
  kMigrate,         // target_host and wave set
  kAlreadyMigrating,  // a migration of it is in flight (migration_id)
  kSkip,            // not migratable now (not RUNNING)
  kUnplaceable,     // no host can take it; reason/message say why
};

struct DrainItem {
  std::string vm_name;
  DrainAction action = DrainAction::kSkip;
  std::string target_host;
  uint32_t wave = 0;
  std::string migration_id;
  v1::PendingReason reason = v1::PENDING_REASON_UNSPECIFIED;
  std::string message;
};

struct DrainPlan {
  std::string host;
  // In planning order (largest VM first).
  std::vector<DrainItem> items;
  uint32_t waves = 0;
  // "drain h1: 18 VMs, 15 to migrate in 8 waves, 1 skipped, 2 unplaceable".
  std::string summary;
};

// NOT_FOUND if `host` is not in the snapshot. max_parallel 0 = the per-host
// outbound limit.
absl::StatusOr<DrainPlan> PlanDrain(const ClusterSnapshot& snapshot,
                                    const std::string& host,
                                    const Limits& limits,
                                    uint32_t max_parallel = 0);

}  // namespace ferry::controller::scheduler

#endif  // FERRY_CONTROLLER_SCHEDULER_DRAIN_H_
