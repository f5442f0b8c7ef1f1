#include "cli/eta.h"

#include <random>

#include "gtest/gtest.h"

namespace ferry::cli {
namespace {

TEST(RawEta, DrainRateIsBandwidthMinusDirty) {
  EXPECT_EQ(*RawEta(1000, 300, 100), absl::Seconds(5));
  EXPECT_EQ(*RawEta(0, 0, 0), absl::ZeroDuration());
  EXPECT_FALSE(RawEta(1000, 100, 100).has_value());
  EXPECT_FALSE(RawEta(1000, 0, 0).has_value());
}

// A noisy migration: the true ETA counts down from 60s, each raw sample is
// off by up to +-50%, some samples are missing. The shown ETA must never
// drop by more than the time that passed.
TEST(EtaSmoother, NeverJumpsBackwardsOnNoisySamples) {
  const uint32_t seed = 12345;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> noise(0.5, 1.5);
  std::uniform_int_distribution<int> missing(0, 9);
  EtaSmoother eta;
  absl::Time t = absl::FromUnixSeconds(1000);
  std::optional<absl::Duration> prev;
  absl::Time prev_t;
  int rises = 0;
  for (int i = 0; i < 300; ++i) {
    double truth = std::max(0.0, 60.0 - i * 0.2);
    std::optional<absl::Duration> raw;
    if (missing(rng) != 0) raw = absl::Seconds(truth * noise(rng));
    std::optional<absl::Duration> shown = eta.Update(t, raw);
    if (prev && shown) {
      EXPECT_GE(*shown, *prev - (t - prev_t))
          << "sample " << i << " (seed " << seed << ")";
      if (*shown > *prev) ++rises;
    }
    if (shown) {
      EXPECT_GE(*shown, absl::ZeroDuration());
      prev = shown;
      prev_t = t;
    }
    t += absl::Milliseconds(200);
  }
  // Hysteresis keeps +-50% noise from causing many upward re-estimates.
  EXPECT_LT(rises, 10) << "seed " << seed;
}

TEST(EtaSmoother, ReEstimatesUpwardWhenItGetsSlower) {
  EtaSmoother eta;
  absl::Time t = absl::FromUnixSeconds(0);
  EXPECT_EQ(*eta.Update(t, absl::Seconds(10)), absl::Seconds(10));
  // A steady 10s estimate while time passes: the countdown runs.
  t += absl::Seconds(2);
  EXPECT_EQ(*eta.Update(t, absl::Seconds(10)), absl::Seconds(8));
  // The link slowed down: sustained 60s estimates lift the ETA.
  for (int i = 0; i < 5; ++i) {
    t += absl::Seconds(1);
    eta.Update(t, absl::Seconds(60));
  }
  EXPECT_GT(*eta.Current(t), absl::Seconds(30));
}

TEST(EtaSmoother, CountsDownWithoutSamplesAndStopsAtZero) {
  EtaSmoother eta;
  absl::Time t = absl::FromUnixSeconds(0);
  EXPECT_FALSE(eta.Current(t).has_value());
  EXPECT_FALSE(eta.Update(t, std::nullopt).has_value());
  eta.Update(t, absl::Seconds(3));
  EXPECT_EQ(*eta.Current(t + absl::Seconds(1)), absl::Seconds(2));
  EXPECT_EQ(*eta.Update(t + absl::Seconds(2), std::nullopt), absl::Seconds(1));
  EXPECT_EQ(*eta.Current(t + absl::Seconds(10)), absl::ZeroDuration());
}

}  // namespace
}  // namespace ferry::cli
