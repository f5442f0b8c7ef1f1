#include "controller/orchestrator/policy.h"

#include <algorithm>
#include <tuple>

#include "absl/strings/str_cat.h"

namespace ferry::controller {
namespace {

constexpr uint32_t kMaxStreams = 16;

void SetSeconds(int64_t s, google::protobuf::Duration* d) {
  d->set_seconds(s);
  d->set_nanos(0);
}

absl::Status CheckDuration(const v1::MigrationPolicy& p,
                           const google::protobuf::Duration& d, bool present,
                           const char* field, bool allow_zero) {
  if (!present) return absl::OkStatus();
  if (d.seconds() < 0 || d.nanos() < 0 || d.nanos() >= 1000000000) {
    return absl::InvalidArgumentError(absl::StrCat(
        "policy.", field, " must be a non-negative duration, got ",
        d.seconds(), "s ", d.nanos(), "ns"));
  }
  if (!allow_zero && d.seconds() == 0 && d.nanos() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy.", field, " must be > 0 when set"));
  }
  (void)p;
  return absl::OkStatus();
}

}  // namespace

v1::MigrationPolicy DefaultMigrationPolicy() {
  v1::MigrationPolicy p;
  p.mutable_max_downtime()->set_nanos(300 * 1000 * 1000);
  p.set_max_bandwidth_bytes_per_s(0);
  p.set_max_rounds(0);
  SetSeconds(800, p.mutable_completion_timeout_per_gib());
  SetSeconds(150, p.mutable_progress_timeout());
  p.set_auto_converge(true);
  p.set_throttle_initial_percent(20);
  p.set_throttle_increment_percent(10);
  p.set_throttle_max_percent(99);
  p.set_compression(v1::COMPRESSION_AUTO);
  p.set_streams(4);
  p.set_xor_delta(false);
  p.set_xor_delta_cache_bytes(uint64_t{64} << 20);
  p.set_handoff(v1::HANDOFF_MODE_CONTROLLER);
  p.set_verify_memory(v1::MEMORY_VERIFICATION_SAMPLED);
  p.set_verify_sample_pages(1024);
  return p;
}

absl::Status ValidateMigrationPolicy(const v1::MigrationPolicy& p) {
  if (absl::Status s = CheckDuration(p, p.max_downtime(), p.has_max_downtime(),
                                     "max_downtime", /*allow_zero=*/false);
      !s.ok()) {
    return s;
  }
  // 0 = no timeout, as in KubeVirt.
  if (absl::Status s = CheckDuration(p, p.completion_timeout_per_gib(),
                                     p.has_completion_timeout_per_gib(),
                                     "completion_timeout_per_gib", true);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckDuration(p, p.progress_timeout(),
                                     p.has_progress_timeout(),
                                     "progress_timeout", true);
      !s.ok()) {
    return s;
  }
  if (p.has_streams() && (p.streams() < 1 || p.streams() > kMaxStreams)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "policy.streams must be 1..", kMaxStreams, ", got ", p.streams()));
  }
  for (auto [present, value, field] :
       {std::make_tuple(p.has_throttle_initial_percent(),
                        p.throttle_initial_percent(), "throttle_initial_percent"),
        std::make_tuple(p.has_throttle_increment_percent(),
                        p.throttle_increment_percent(),
                        "throttle_increment_percent"),
        std::make_tuple(p.has_throttle_max_percent(), p.throttle_max_percent(),
                        "throttle_max_percent")}) {
    if (present && value > 99) {
      return absl::InvalidArgumentError(absl::StrCat(
          "policy.", field, " must be 0..99 (percent of vCPU time), got ", value));
    }
  }
  if (p.has_throttle_initial_percent() && p.has_throttle_max_percent() &&
      p.throttle_initial_percent() > p.throttle_max_percent()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "policy.throttle_initial_percent (", p.throttle_initial_percent(),
        ") must not exceed throttle_max_percent (", p.throttle_max_percent(), ")"));
  }
  if (!v1::Compression_IsValid(p.compression()) ||
      !v1::HandoffMode_IsValid(p.handoff()) ||
      !v1::MemoryVerification_IsValid(p.verify_memory())) {
    return absl::InvalidArgumentError(
        "policy.compression, handoff or verify_memory holds an unknown enum value");
  }
  if (p.verify_memory() == v1::MEMORY_VERIFICATION_SAMPLED &&
      p.has_verify_sample_pages() && p.verify_sample_pages() == 0) {
    return absl::InvalidArgumentError(
        "policy.verify_sample_pages must be > 0 with SAMPLED verification");
  }
  return absl::OkStatus();
}

v1::MigrationPolicy MergeMigrationPolicy(const v1::MigrationPolicy& base,
                                         const v1::MigrationPolicy& o) {
  v1::MigrationPolicy p = base;
  if (o.has_max_downtime()) *p.mutable_max_downtime() = o.max_downtime();
  if (o.has_max_bandwidth_bytes_per_s()) {
    p.set_max_bandwidth_bytes_per_s(o.max_bandwidth_bytes_per_s());
  }
  if (o.has_max_rounds()) p.set_max_rounds(o.max_rounds());
  if (o.has_completion_timeout_per_gib()) {
    *p.mutable_completion_timeout_per_gib() = o.completion_timeout_per_gib();
  }
  if (o.has_progress_timeout()) *p.mutable_progress_timeout() = o.progress_timeout();
  if (o.has_auto_converge()) p.set_auto_converge(o.auto_converge());
  if (o.has_throttle_initial_percent()) {
    p.set_throttle_initial_percent(o.throttle_initial_percent());
  }
  if (o.has_throttle_increment_percent()) {
    p.set_throttle_increment_percent(o.throttle_increment_percent());
  }
  if (o.has_throttle_max_percent()) p.set_throttle_max_percent(o.throttle_max_percent());
  if (o.compression() != v1::COMPRESSION_UNSPECIFIED) p.set_compression(o.compression());
  if (o.has_streams()) p.set_streams(o.streams());
  if (o.has_xor_delta()) p.set_xor_delta(o.xor_delta());
  if (o.has_xor_delta_cache_bytes()) {
    p.set_xor_delta_cache_bytes(o.xor_delta_cache_bytes());
  }
  if (o.handoff() != v1::HANDOFF_MODE_UNSPECIFIED) p.set_handoff(o.handoff());
  if (o.verify_memory() != v1::MEMORY_VERIFICATION_UNSPECIFIED) {
    p.set_verify_memory(o.verify_memory());
  }
  if (o.has_verify_sample_pages()) p.set_verify_sample_pages(o.verify_sample_pages());
  return p;
}

absl::Duration CompletionDeadline(const v1::MigrationPolicy& policy,
                                  uint64_t memory_bytes) {
  const google::protobuf::Duration& d = policy.completion_timeout_per_gib();
  const absl::Duration per_gib = absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
  if (per_gib <= absl::ZeroDuration()) return absl::InfiniteDuration();
  const double gib = std::max(1.0, static_cast<double>(memory_bytes) / (1ull << 30));
  return per_gib * gib;
}

}  // namespace ferry::controller
