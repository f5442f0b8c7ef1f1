#include "agent/migration/source/convergence.h"

#include "gtest/gtest.h"

namespace ferry::migration {
namespace {

using Kind = ConvergenceDecision::Kind;

TEST(ConvergenceTest, SwitchesOverWhenRemainingFitsTheDowntime) {
  EffectivePolicy p;  // 300 ms
  EXPECT_EQ(DecideRound(p, {1, 100 << 20, 1e9, absl::ZeroDuration(), 0, 0}).kind,
            Kind::kSwitchover);
  EXPECT_EQ(DecideRound(p, {1, uint64_t{1} << 30, 1e9, absl::ZeroDuration(), 0, 0}).kind,
            Kind::kContinue);
  EXPECT_EQ(DecideRound(p, {1, 0, 0, absl::ZeroDuration(), 0, 0}).kind,
            Kind::kSwitchover);
  EXPECT_EQ(DecideRound(p, {1, 4096, 0, absl::ZeroDuration(), 0, 0}).kind,
            Kind::kContinue) << "no bandwidth measured yet";
}

TEST(ConvergenceTest, FailsAtMaxRoundsWithoutAutoConverge) {
  EffectivePolicy p;
  p.max_rounds = 3;
  EXPECT_EQ(DecideRound(p, {3, uint64_t{1} << 30, 1e9, {}, 0, 0}).kind, Kind::kContinue);
  ConvergenceDecision d = DecideRound(p, {4, uint64_t{1} << 30, 1e9, {}, 0, 0});
  EXPECT_EQ(d.kind, Kind::kFail);
  EXPECT_EQ(d.failure, v1::MIGRATION_FAILURE_NOT_CONVERGING);
  // Merely stuck, without a round limit: left to progress_timeout.
  p.max_rounds = 0;
  EXPECT_EQ(DecideRound(p, {9, uint64_t{1} << 30, 1e9, {}, kStuckRounds, 0}).kind,
            Kind::kContinue);
}

TEST(ConvergenceTest, AutoConvergeStepsThenFailsAtMax) {
  EffectivePolicy p;
  p.auto_converge = true;
  p.throttle_initial_percent = 20;
  p.throttle_increment_percent = 30;
  p.throttle_max_percent = 80;
  const uint64_t big = uint64_t{1} << 30;
  ConvergenceDecision d = DecideRound(p, {2, big, 1e9, {}, kStuckRounds, 0});
  ASSERT_EQ(d.kind, Kind::kThrottle);
  EXPECT_EQ(d.throttle_percent, 20u);
  d = DecideRound(p, {3, big, 1e9, {}, kStuckRounds, 20});
  EXPECT_EQ(d.throttle_percent, 50u);
  d = DecideRound(p, {4, big, 1e9, {}, kStuckRounds, 50});
  EXPECT_EQ(d.throttle_percent, 80u) << "capped at the maximum";
  d = DecideRound(p, {5, big, 1e9, {}, kStuckRounds, 80});
  EXPECT_EQ(d.kind, Kind::kFail);
}

TEST(ConvergenceTest, PolicyDefaultsAndClamps) {
  v1::MigrationPolicy pol;
  EffectivePolicy e = ResolvePolicy(pol);
  EXPECT_EQ(e.max_downtime, absl::Milliseconds(300));
  EXPECT_EQ(e.streams, 1u);
  EXPECT_EQ(e.handoff, v1::HANDOFF_MODE_CONTROLLER);
  pol.set_streams(99);
  pol.set_throttle_max_percent(150);
  e = ResolvePolicy(pol);
  EXPECT_EQ(e.streams, 16u);
  EXPECT_EQ(e.throttle_max_percent, 99u);
}

}  // namespace
}  // namespace ferry::migration
