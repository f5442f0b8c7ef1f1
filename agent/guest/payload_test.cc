// The embedded payload image exists, fits its region, and starts with the
// entry stub (so the VMM's RIP = FERRY_GUEST_ENTRY_GPA lands on _start).
#include "agent/guest/payload.h"

#include "gtest/gtest.h"

namespace {

using ferry::guest::kGuestEntryGpa;
using ferry::guest::kGuestLoadGpa;
using ferry::guest::kGuestPayload;
using ferry::guest::kGuestPayloadMax;
using ferry::guest::kGuestPayloadSize;

TEST(Payload, IsNonEmptyAndFitsItsRegion) {
  EXPECT_GT(kGuestPayloadSize, 64u);
  EXPECT_LE(kGuestPayloadSize, kGuestPayloadMax);
  EXPECT_LE(kGuestPayloadMax, 64u * 1024);
  EXPECT_EQ(kGuestLoadGpa, 0x100000u);
  EXPECT_EQ(kGuestEntryGpa, kGuestLoadGpa);
}

TEST(Payload, StartsWithTheEntryStub) {
  // entry.S begins with `cmp $FERRY_GUEST_MAX_VCPUS, %rdi` = 48 83 ff imm8.
  ASSERT_GE(kGuestPayloadSize, 4u);
  EXPECT_EQ(kGuestPayload[0], 0x48);
  EXPECT_EQ(kGuestPayload[1], 0x83);
  EXPECT_EQ(kGuestPayload[2], 0xff);
  EXPECT_EQ(kGuestPayload[3], FERRY_GUEST_MAX_VCPUS);
}

}  // namespace
