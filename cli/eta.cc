#include "cli/eta.h"

#include <algorithm>

namespace ferry::cli {
namespace {

// Weight of a new sample in the moving average.
constexpr double kAlpha = 0.3;
// Rise only when the average beats the countdown by this factor plus the
// slack, so a noisy estimate hovering around the countdown leaves it alone.
constexpr double kRiseFactor = 1.2;
constexpr double kRiseSlackSeconds = 1.0;

}  // namespace

std::optional<absl::Duration> RawEta(uint64_t remaining_bytes,
                                     uint64_t bandwidth_bytes_per_s,
                                     uint64_t dirty_rate_bytes_per_s) {
  if (remaining_bytes == 0) return absl::ZeroDuration();
  if (bandwidth_bytes_per_s <= dirty_rate_bytes_per_s) return std::nullopt;
  double net = static_cast<double>(bandwidth_bytes_per_s -
                                   dirty_rate_bytes_per_s);
  return absl::Seconds(static_cast<double>(remaining_bytes) / net);
}

std::optional<absl::Duration> EtaSmoother::Current(absl::Time now) const {
  if (!shown_) return std::nullopt;
  return std::max(absl::ZeroDuration(), *shown_ - (now - shown_at_));
}

std::optional<absl::Duration> EtaSmoother::Update(
    absl::Time now, std::optional<absl::Duration> raw) {
  if (!raw) return Current(now);
  double sample = absl::ToDoubleSeconds(*raw);
  ewma_seconds_ = ewma_seconds_ ? kAlpha * sample + (1 - kAlpha) * *ewma_seconds_
                                : sample;
  std::optional<absl::Duration> countdown = Current(now);
  if (!countdown) {
    shown_ = absl::Seconds(*ewma_seconds_);
  } else {
    double c = absl::ToDoubleSeconds(*countdown);
    // Upward re-estimate; otherwise keep counting down with the clock,
    // even when the average says sooner: dropping faster than time passes
    // is exactly the jump this class exists to prevent.
    shown_ = *ewma_seconds_ > c * kRiseFactor + kRiseSlackSeconds
                 ? absl::Seconds(*ewma_seconds_)
                 : *countdown;
  }
  shown_at_ = now;
  return shown_;
}

}  // namespace ferry::cli
