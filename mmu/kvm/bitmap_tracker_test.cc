// BitmapTracker against the fake kernel: classic GET (get + re-protect),
// partial-failure behaviour, and the VMs it refuses.
#include "mmu/kvm/bitmap_tracker.h"

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "mmu/dirty_set.h"
#include "mmu/kvm/fake_kvm_kernel.h"

namespace ferry::mmu::kvm {
namespace {

const std::vector<Memslot> kSlots = {{0, 0, 100 * kPageSize},
                                     {1, 1 << 20, 70 * kPageSize}};

std::shared_ptr<FakeKvmKernel> Kernel(uint32_t ring_bytes = 0) {
  FakeKvmKernel::Options o;
  o.ring_bytes = ring_bytes;
  return *FakeKvmKernel::Create(o, kSlots);
}

TEST(BitmapTrackerTest, CollectReportsAndReprotects) {
  auto k = Kernel();
  BitmapTracker t(FakeKvmKernel::Ops(k));
  EXPECT_FALSE(t.needs_reprotect());
  ASSERT_TRUE(t.Start(kSlots).ok());
  EXPECT_TRUE(k->logging(0) && k->logging(1));
  ASSERT_TRUE(k->GuestWrite(0, 5 * kPageSize).ok());
  ASSERT_TRUE(k->GuestWrite(0, (1 << 20) + 69 * kPageSize).ok());
  DirtySet out = DirtySet::ForSlots(kSlots);
  absl::StatusOr<CollectStats> stats = t.Collect(&out);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->pages, 2u);
  EXPECT_GE(stats->duration_ns, 0);
  EXPECT_TRUE((*out.Get(0))->Test(5));
  EXPECT_TRUE((*out.Get(1))->Test(69));
  EXPECT_TRUE(k->write_protected(0, 5));
  out.ClearAll();
  ASSERT_TRUE(t.Collect(&out).ok());
  EXPECT_TRUE(out.Empty());
  ASSERT_TRUE(t.Stop().ok());
  EXPECT_FALSE(k->logging(0));
  EXPECT_EQ(t.Collect(&out).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(BitmapTrackerTest, AFailedGetKeepsWhatEarlierSlotsReturned) {
  auto k = Kernel();
  BitmapTracker t(FakeKvmKernel::Ops(k));
  ASSERT_TRUE(t.Start(kSlots).ok());
  ASSERT_TRUE(k->GuestWrite(0, 5 * kPageSize).ok());
  ASSERT_TRUE(k->GuestWrite(0, (1 << 20) + 1 * kPageSize).ok());
  // Slot 0's GET succeeds (and consumes its bits), slot 1's fails: slot 0's
  // page must already be in `out` (DirtyLog merges it even on error), and
  // slot 1's stays in the kernel for the next Collect.
  k->FailNextGet(absl::InternalError("EFAULT"), /*after=*/1);
  DirtySet out = DirtySet::ForSlots(kSlots);
  EXPECT_FALSE(t.Collect(&out).ok());
  EXPECT_TRUE((*out.Get(0))->Test(5));
  out.ClearAll();
  ASSERT_TRUE(t.Collect(&out).ok());
  EXPECT_TRUE((*out.Get(1))->Test(1));
  EXPECT_EQ(out.Count(), 1u);
}

TEST(BitmapTrackerTest, CollectChecksTheSetShape) {
  auto k = Kernel();
  BitmapTracker t(FakeKvmKernel::Ops(k));
  ASSERT_TRUE(t.Start(kSlots).ok());
  DirtySet other = DirtySet::ForSlots({kSlots[0]});
  EXPECT_EQ(t.Collect(&other).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(BitmapTrackerTest, RefusesRingAndManualProtectVms) {
  BitmapTracker ring(FakeKvmKernel::Ops(Kernel(2048)));
  EXPECT_EQ(ring.Start(kSlots).code(), absl::StatusCode::kFailedPrecondition);
  auto k = Kernel();
  ASSERT_TRUE(k->EnableManualProtect(false).ok());
  BitmapTracker manual(FakeKvmKernel::Ops(k));
  EXPECT_EQ(manual.Start(kSlots).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(k->logging(0));
}

TEST(BitmapTrackerTest, StartValidatesSlots) {
  BitmapTracker t(FakeKvmKernel::Ops(Kernel()));
  EXPECT_EQ(t.Start({}).code(), absl::StatusCode::kInvalidArgument);
  std::vector<Memslot> dup = {kSlots[0], kSlots[0]};
  EXPECT_EQ(t.Start(dup).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ferry::mmu::kvm
