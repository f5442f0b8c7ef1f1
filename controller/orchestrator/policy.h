// Migration policy: the cluster defaults, validation of requested
// overrides, and merging (defaults <- per-request, each field by presence).
//
// Defaults and why:
//  * max_downtime 300 ms — QEMU's default downtime-limit; short enough that
//    TCP sessions and most latency-sensitive guests ride it out.
//  * progress_timeout 150 s — KubeVirt's progressTimeout: if remaining bytes
//    set no new minimum for this long the migration is not going anywhere.
//  * completion_timeout_per_gib 800 s — KubeVirt's
//    completionTimeoutPerGiB: generous (a 4 GiB VM gets ~53 min), so it only
//    catches migrations that crawl, not merely slow ones.
//  * max_rounds 0 (no round cap) with auto_converge on, throttling 20% then
//    +10% up to 99% (QEMU's cpu-throttle-initial/increment/max): a VM that
//    dirties faster than the link drains is slowed rather than failed.
//  * streams 4, compression AUTO, xor_delta off (its per-page cache costs
//    source memory; opt in per migration), handoff CONTROLLER (the controller
//    records the decision before the destination resumes), SAMPLED memory
//    verification of 1024 pages.
// The agents enforce progress/completion/rounds themselves (they see every
// round); the controller passes the full policy and keeps a looser backstop
// on the completion deadline in case an agent stops reporting.
#ifndef FERRY_CONTROLLER_ORCHESTRATOR_POLICY_H_
#define FERRY_CONTROLLER_ORCHESTRATOR_POLICY_H_

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "proto/migration.pb.h"

namespace ferry::controller {

v1::MigrationPolicy DefaultMigrationPolicy();

// INVALID_ARGUMENT naming the field for values no agent would accept:
// negative or malformed durations, max_downtime 0 when set, streams outside
// 1..16, throttle percents > 99 or initial > max, a sample count of 0 with
// SAMPLED verification.
absl::Status ValidateMigrationPolicy(const v1::MigrationPolicy& policy);

// `base` with every field `overrides` sets replaced.
v1::MigrationPolicy MergeMigrationPolicy(const v1::MigrationPolicy& base,
                                         const v1::MigrationPolicy& overrides);

// completion_timeout_per_gib * memory in GiB (at least one GiB's worth);
// InfiniteDuration if the policy has no completion timeout.
absl::Duration CompletionDeadline(const v1::MigrationPolicy& policy,
                                  uint64_t memory_bytes);

}  // namespace ferry::controller

#endif  // FERRY_CONTROLLER_ORCHESTRATOR_POLICY_H_
