#include "agent/migration/source/convergence.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "google/protobuf/duration.pb.h"

namespace ferry::migration {
namespace {

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

}  // namespace

EffectivePolicy ResolvePolicy(const v1::MigrationPolicy& p) {
  EffectivePolicy e;
  if (p.has_max_downtime()) e.max_downtime = FromProto(p.max_downtime());
  if (p.has_max_bandwidth_bytes_per_s()) {
    e.max_bandwidth_bytes_per_s = p.max_bandwidth_bytes_per_s();
  }
  if (p.has_max_rounds()) e.max_rounds = p.max_rounds();
  if (p.has_completion_timeout_per_gib()) {
    e.completion_timeout_per_gib = FromProto(p.completion_timeout_per_gib());
  }
  if (p.has_progress_timeout()) e.progress_timeout = FromProto(p.progress_timeout());
  if (p.has_auto_converge()) e.auto_converge = p.auto_converge();
  if (p.has_throttle_initial_percent()) {
    e.throttle_initial_percent = p.throttle_initial_percent();
  }
  if (p.has_throttle_increment_percent()) {
    e.throttle_increment_percent = p.throttle_increment_percent();
  }
  if (p.has_throttle_max_percent()) e.throttle_max_percent = p.throttle_max_percent();
  e.throttle_max_percent = std::min<uint32_t>(e.throttle_max_percent, 99);
  if (p.has_streams()) e.streams = std::clamp<uint32_t>(p.streams(), 1, 16);
  if (p.handoff() != v1::HANDOFF_MODE_UNSPECIFIED) e.handoff = p.handoff();
  if (p.verify_memory() != v1::MEMORY_VERIFICATION_UNSPECIFIED) {
    e.verify_memory = p.verify_memory();
  }
  if (p.has_verify_sample_pages()) e.verify_sample_pages = p.verify_sample_pages();
  if (p.compression() != v1::COMPRESSION_UNSPECIFIED) e.compression = p.compression();
  if (p.has_xor_delta()) e.xor_delta = p.xor_delta();
  if (p.has_xor_delta_cache_bytes()) {
    e.xor_delta_cache_bytes = p.xor_delta_cache_bytes();
  }
  return e;
}

absl::Duration ExpectedDowntime(uint64_t remaining_bytes, double bandwidth,
                                absl::Duration state_transfer) {
  if (remaining_bytes == 0) return state_transfer;
  if (bandwidth <= 0) return absl::InfiniteDuration();
  return absl::Seconds(static_cast<double>(remaining_bytes) / bandwidth) +
         state_transfer;
}

ConvergenceDecision DecideRound(const EffectivePolicy& policy,
                                const ConvergenceInput& in) {
  ConvergenceDecision d;
  d.expected_downtime = ExpectedDowntime(in.remaining_bytes,
                                         in.bandwidth_bytes_per_s,
                                         in.state_transfer);
  if (in.remaining_bytes == 0 || d.expected_downtime <= policy.max_downtime) {
    d.kind = ConvergenceDecision::Kind::kSwitchover;
    return d;
  }
  const bool over_rounds = policy.max_rounds > 0 && in.round > policy.max_rounds;
  const bool stuck = in.stuck_rounds >= kStuckRounds;
  if (!over_rounds && !stuck) return d;
  if (policy.auto_converge) {
    if (in.throttle_percent >= policy.throttle_max_percent) {
      d.kind = ConvergenceDecision::Kind::kFail;
      d.failure = v1::MIGRATION_FAILURE_NOT_CONVERGING;
      d.message = absl::StrCat(
          "not converging with the vCPUs throttled ", in.throttle_percent,
          "% (the policy's maximum): ", in.remaining_bytes,
          " bytes remain, expected downtime ",
          absl::FormatDuration(d.expected_downtime), " > max ",
          absl::FormatDuration(policy.max_downtime));
      return d;
    }
    d.kind = ConvergenceDecision::Kind::kThrottle;
    d.throttle_percent =
        in.throttle_percent == 0
            ? policy.throttle_initial_percent
            : in.throttle_percent + policy.throttle_increment_percent;
    d.throttle_percent = std::min(d.throttle_percent, policy.throttle_max_percent);
    return d;
  }
  if (over_rounds) {
    d.kind = ConvergenceDecision::Kind::kFail;
    d.failure = v1::MIGRATION_FAILURE_NOT_CONVERGING;
    d.message = absl::StrCat(
        "not converging after ", policy.max_rounds, " rounds (auto-converge "
        "off): ", in.remaining_bytes, " bytes remain, expected downtime ",
        absl::FormatDuration(d.expected_downtime), " > max ",
        absl::FormatDuration(policy.max_downtime),
        "; allow auto_converge, a longer max_downtime or more bandwidth");
  }
  return d;
}

}  // namespace ferry::migration
