// ETA smoothing for the migration progress bar.
//
// Raw estimates (remaining / (bandwidth - dirty rate)) jump around with
// every harvest. What a person watching wants is a countdown they can
// trust: the shown ETA never drops faster than the wall clock runs (so it
// never "jumps backwards"), and rises only when the smoothed estimate is
// clearly above the countdown (a re-estimate upward, with hysteresis so
// noise does not make it twitch).
#ifndef FERRY_CLI_ETA_H_
#define FERRY_CLI_ETA_H_

#include <optional>

#include "absl/time/time.h"

namespace ferry::cli {

class EtaSmoother {
 public:
  // Feeds one raw estimate taken at `now` (nullopt = cannot tell, e.g. the
  // guest dirties faster than the link drains). Returns what to show.
  std::optional<absl::Duration> Update(absl::Time now,
                                       std::optional<absl::Duration> raw);

  // What to show at `now` without a new sample: the countdown.
  std::optional<absl::Duration> Current(absl::Time now) const;

 private:
  std::optional<absl::Duration> shown_;  // As of shown_at_.
  absl::Time shown_at_;
  std::optional<double> ewma_seconds_;
};

// The raw estimate from one sample: time until remaining bytes drain at
// bandwidth minus the rate the guest re-dirties them. nullopt when that
// difference is not positive or nothing is known.
std::optional<absl::Duration> RawEta(uint64_t remaining_bytes,
                                     uint64_t bandwidth_bytes_per_s,
                                     uint64_t dirty_rate_bytes_per_s);

}  // namespace ferry::cli

#endif  // FERRY_CLI_ETA_H_
