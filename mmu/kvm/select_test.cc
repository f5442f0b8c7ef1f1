// Mode parsing and selection (pure), and tracker construction errors.
#include "mmu/kvm/select.h"

#include "kmod/kvm_abi.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::mmu::kvm {
namespace {

using M = DirtyTrackingMode;
using ::testing::HasSubstr;

TEST(ParseDirtyTrackingRequestTest, KnownNames) {
  EXPECT_EQ(*ParseDirtyTrackingRequest("auto"), M::kUnspecified);
  EXPECT_EQ(*ParseDirtyTrackingRequest(""), M::kUnspecified);
  EXPECT_EQ(*ParseDirtyTrackingRequest("bitmap"), M::kBitmap);
  EXPECT_EQ(*ParseDirtyTrackingRequest("clear-log"), M::kClearLog);
  EXPECT_EQ(*ParseDirtyTrackingRequest(" Ring "), M::kRing);
  EXPECT_EQ(*ParseDirtyTrackingRequest("softmmu"), M::kSoftMmu);
}

TEST(ParseDirtyTrackingRequestTest, UnknownNameSaysWhatIsAccepted) {
  absl::StatusOr<M> m = ParseDirtyTrackingRequest("clearlog");
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), HasSubstr("\"clearlog\""));
  EXPECT_THAT(m.status().message(),
              HasSubstr("auto, bitmap, clear-log, ring, softmmu"));
  EXPECT_FALSE(ParseDirtyTrackingRequest("fake").ok());
}

DirtyTrackingCaps Caps(uint64_t manual, uint32_t ring, bool rings) {
  DirtyTrackingCaps c;
  c.manual_protect_bits = manual;
  c.ring_bytes = ring;
  c.rings_available = rings;
  return c;
}

TEST(ChooseDirtyTrackingModeTest, AutoPrefersRingThenClearLogThenBitmap) {
  EXPECT_EQ(*ChooseDirtyTrackingMode(M::kUnspecified, Caps(3, 65536, true)),
            M::kRing);
  EXPECT_EQ(*ChooseDirtyTrackingMode(M::kUnspecified, Caps(3, 0, false)),
            M::kClearLog);
  EXPECT_EQ(*ChooseDirtyTrackingMode(M::kUnspecified, Caps(0, 0, false)),
            M::kBitmap);
  DirtyTrackingCaps none;
  none.kvm = false;
  EXPECT_EQ(*ChooseDirtyTrackingMode(M::kUnspecified, none), M::kSoftMmu);
}

TEST(ChooseDirtyTrackingModeTest, ExplicitModesThatCannotWorkAreErrors) {
  // Ring on the VM but no rings handed over: nothing can work.
  EXPECT_EQ(ChooseDirtyTrackingMode(M::kUnspecified, Caps(3, 65536, false))
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<M> ring = ChooseDirtyTrackingMode(M::kRing, Caps(3, 0, false));
  EXPECT_THAT(ring.status().message(), HasSubstr("before its first vCPU"));
  EXPECT_THAT(
      ChooseDirtyTrackingMode(M::kBitmap, Caps(3, 65536, true)).status().message(),
      HasSubstr("ENXIO"));
  EXPECT_THAT(
      ChooseDirtyTrackingMode(M::kClearLog, Caps(0, 0, false)).status().message(),
      HasSubstr("MANUAL_DIRTY_LOG_PROTECT2"));
  DirtyTrackingCaps manual_on = Caps(3, 0, false);
  manual_on.manual_protect_enabled = true;
  EXPECT_FALSE(ChooseDirtyTrackingMode(M::kBitmap, manual_on).ok());
  EXPECT_EQ(*ChooseDirtyTrackingMode(M::kBitmap, Caps(3, 0, false)), M::kBitmap);
  EXPECT_EQ(*ChooseDirtyTrackingMode(M::kSoftMmu, Caps(3, 0, false)),
            M::kSoftMmu);
  DirtyTrackingCaps none;
  none.kvm = false;
  EXPECT_FALSE(ChooseDirtyTrackingMode(M::kBitmap, none).ok());
  EXPECT_FALSE(ChooseDirtyTrackingMode(M::kFake, Caps(3, 0, false)).ok());
}

TEST(ShouldEnableDirtyRingTest, OnForRingAndAutoWhenTheKernelHasIt) {
  EXPECT_EQ(*ShouldEnableDirtyRing(M::kRing, 1 << 20), kDefaultDirtyRingBytes);
  EXPECT_EQ(*ShouldEnableDirtyRing(M::kUnspecified, 1 << 20),
            kDefaultDirtyRingBytes);
  EXPECT_EQ(*ShouldEnableDirtyRing(M::kUnspecified, 16384), 16384u);
  EXPECT_EQ(*ShouldEnableDirtyRing(M::kUnspecified, 0), 0u);
  EXPECT_EQ(*ShouldEnableDirtyRing(M::kClearLog, 1 << 20), 0u);
  EXPECT_EQ(ShouldEnableDirtyRing(M::kRing, 0).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(CreateKvmDirtyTrackerTest, RejectsNonKvmModes) {
  EXPECT_EQ(CreateKvmDirtyTracker(M::kSoftMmu, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ferry::mmu::kvm
