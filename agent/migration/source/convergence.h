// When pre-copy switches over, throttles or gives up: a pure function of
// the effective policy and what the last rounds measured, so the rules can
// be tested without a VM.
//
//   expected downtime = remaining_bytes / bandwidth + state-transfer estimate
//   switch over       when expected downtime <= max_downtime (or nothing
//                     is left);
//   not converging    when more than max_rounds rounds followed round 0, or
//                     remaining bytes failed to shrink by 10% for
//                     kStuckRounds rounds in a row;
//   then              auto_converge: throttle initial%, +increment% per
//                     further non-converging round, fail once at max%;
//                     otherwise fail at max_rounds (a merely stuck run
//                     without a round limit is left to progress_timeout).
#ifndef FERRY_AGENT_MIGRATION_SOURCE_CONVERGENCE_H_
#define FERRY_AGENT_MIGRATION_SOURCE_CONVERGENCE_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "proto/migration.pb.h"

namespace ferry::migration {

inline constexpr uint32_t kStuckRounds = 3;

// MigrationPolicy with every default applied.
struct EffectivePolicy {
  absl::Duration max_downtime = absl::Milliseconds(300);
  uint64_t max_bandwidth_bytes_per_s = 0;  // 0 = unlimited
  uint32_t max_rounds = 0;                 // 0 = no limit
  absl::Duration completion_timeout_per_gib = absl::ZeroDuration();  // 0 = none
  absl::Duration progress_timeout = absl::Seconds(30);
  bool auto_converge = false;
  uint32_t throttle_initial_percent = 20;
  uint32_t throttle_increment_percent = 10;
  uint32_t throttle_max_percent = 99;
  uint32_t streams = 1;
  v1::HandoffMode handoff = v1::HANDOFF_MODE_CONTROLLER;
  v1::MemoryVerification verify_memory = v1::MEMORY_VERIFICATION_SAMPLED;
  uint32_t verify_sample_pages = 1024;
  // Page codec (agent/migration/codec): AUTO picks per batch.
  v1::Compression compression = v1::COMPRESSION_AUTO;
  bool xor_delta = false;
  uint64_t xor_delta_cache_bytes = uint64_t{64} << 20;  // all streams together
};
EffectivePolicy ResolvePolicy(const v1::MigrationPolicy& policy);

struct ConvergenceInput {
  uint32_t round = 0;  // the round about to be sent (>= 1)
  uint64_t remaining_bytes = 0;
  double bandwidth_bytes_per_s = 0;  // 0 = not measured yet
  absl::Duration state_transfer = absl::ZeroDuration();
  uint32_t stuck_rounds = 0;
  uint32_t throttle_percent = 0;
};

struct ConvergenceDecision {
  enum class Kind { kContinue, kSwitchover, kThrottle, kFail };
  Kind kind = Kind::kContinue;
  absl::Duration expected_downtime = absl::InfiniteDuration();
  uint32_t throttle_percent = 0;  // kThrottle: the new setting
  v1::MigrationFailure failure = v1::MIGRATION_FAILURE_UNSPECIFIED;
  std::string message;  // kFail
};

absl::Duration ExpectedDowntime(uint64_t remaining_bytes, double bandwidth,
                                absl::Duration state_transfer);
ConvergenceDecision DecideRound(const EffectivePolicy& policy,
                                const ConvergenceInput& in);

}  // namespace ferry::migration

#endif  // FERRY_AGENT_MIGRATION_SOURCE_CONVERGENCE_H_
