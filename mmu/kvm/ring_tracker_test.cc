// RingTracker against rings the fake kernel fills exactly as KVM does (the
// FakeKernelRing technique of kmod/dirty_ring_test.cc): (slot, offset) →
// bitmap mapping, per-vCPU counts, the RING_FULL pending path, batching of
// resets, Start/Stop draining.
#include "mmu/kvm/ring_tracker.h"

#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mmu/dirty_set.h"
#include "mmu/kvm/fake_kvm_kernel.h"

namespace ferry::mmu::kvm {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::vector<Memslot> kSlots = {{1, 0, 100 * kPageSize},
                                     {4, 1 << 20, 1000 * kPageSize}};

TEST(RingWindowTest, MapsSlotAndOffsetToBitsAndDeduplicates) {
  SlotTable table = *SlotTable::Create(kSlots, "test");
  RingWindow w(table, 2);
  w.Add(0, {4, 999});
  w.Add(1, {1, 0});
  w.Add(1, {4, 999});  // same page from another vCPU: counted once
  w.Add(0, {4, 3});
  EXPECT_EQ(w.pages(), 3u);
  DirtySet out = DirtySet::ForSlots(kSlots);
  CollectStats stats;
  w.DrainInto(&out, &stats);
  EXPECT_EQ(stats.pages, 3u);
  EXPECT_THAT(stats.per_vcpu_pages, ElementsAre(2u, 1u));
  EXPECT_TRUE((*out.Get(4))->Test(999));
  EXPECT_TRUE((*out.Get(4))->Test(3));
  EXPECT_TRUE((*out.Get(1))->Test(0));
  EXPECT_EQ(out.Count(), 3u);
  // Drained: empty again, and the same page counts anew.
  EXPECT_EQ(w.pages(), 0u);
  w.Add(1, {4, 999});
  EXPECT_EQ(w.pages(), 1u);
}

TEST(RingWindowTest, EntriesOutsideTheTrackedPagesAreCountedNotMapped) {
  SlotTable table = *SlotTable::Create(kSlots, "test");
  RingWindow w(table, 1);
  w.Add(0, {2, 0});                // untracked slot
  w.Add(0, {1, 100});              // past the slot's 100 pages
  w.Add(0, {(1u << 16) | 1, 5});   // SMM address space
  EXPECT_EQ(w.pages(), 0u);
  EXPECT_EQ(w.bad_entries(), 3u);
  EXPECT_THAT(w.TakeBadEntries(), HasSubstr("3 ring entries"));
  EXPECT_EQ(w.bad_entries(), 0u);
}

struct Fixture {
  std::shared_ptr<FakeKvmKernel> kernel;
  std::unique_ptr<RingTracker> tracker;

  explicit Fixture(int vcpus = 2, uint32_t ring_bytes = 2048) {
    FakeKvmKernel::Options o;
    o.ring_bytes = ring_bytes;
    o.num_vcpus = vcpus;
    kernel = *FakeKvmKernel::Create(o, kSlots);
    tracker = *RingTracker::Create(FakeKvmKernel::Ops(kernel), kernel->rings());
  }
  FakeKvmKernel::WriteResult Write(int vcpu, uint32_t slot, uint64_t page) {
    uint64_t gpa = slot == 1 ? page * kPageSize : (1 << 20) + page * kPageSize;
    absl::StatusOr<FakeKvmKernel::WriteResult> r = kernel->GuestWrite(vcpu, gpa);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : FakeKvmKernel::WriteResult::kOk;
  }
};

TEST(RingTrackerTest, CollectHarvestsEveryRingResetsOnceAndReprotects) {
  Fixture f;
  ASSERT_TRUE(f.tracker->Start(kSlots).ok());
  EXPECT_TRUE(f.tracker->has_per_vcpu_counts());
  f.Write(0, 4, 10);
  f.Write(0, 4, 10);  // now writable: no second entry
  f.Write(1, 1, 7);
  f.Write(1, 4, 11);
  DirtySet out = DirtySet::ForSlots(kSlots);
  absl::StatusOr<CollectStats> stats = f.tracker->Collect(&out);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->pages, 3u);
  EXPECT_THAT(stats->per_vcpu_pages, ElementsAre(1u, 2u));
  EXPECT_TRUE((*out.Get(4))->Test(10));
  EXPECT_TRUE((*out.Get(4))->Test(11));
  EXPECT_TRUE((*out.Get(1))->Test(7));
  // The reset re-protected them: the next write is recorded again.
  EXPECT_TRUE(f.kernel->write_protected(4, 10));
  f.Write(0, 4, 10);
  out.ClearAll();
  stats = f.tracker->Collect(&out);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->pages, 1u);
  EXPECT_THAT(stats->per_vcpu_pages, ElementsAre(1u, 0u));
}

TEST(RingTrackerTest, RingFullPagesArePendingUntilTheNextCollect) {
  Fixture f(/*vcpus=*/1, /*ring_bytes=*/2048);  // soft-full at 64 entries
  ASSERT_TRUE(f.tracker->Start(kSlots).ok());
  int full_exits = 0;
  for (uint64_t page = 0; page < 1000; ++page) {
    if (f.Write(0, 4, page) == FakeKvmKernel::WriteResult::kRingSoftFull) {
      ++full_exits;
      ASSERT_TRUE(f.tracker->OnRingFull(0).ok());
      ASSERT_FALSE(f.kernel->RingSoftFull(0)) << "reset must free the ring";
    }
  }
  EXPECT_EQ(full_exits, 1000 / 64);
  EXPECT_EQ(f.tracker->ring_full_events(), 1000u / 64);
  EXPECT_EQ(f.tracker->pending_pages(), 1000u / 64 * 64);
  DirtySet out = DirtySet::ForSlots(kSlots);
  absl::StatusOr<CollectStats> stats = f.tracker->Collect(&out);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->pages, 1000u);  // pending + the ring's remainder
  EXPECT_EQ((*out.Get(4))->Count(), 1000u);
  EXPECT_EQ(f.tracker->pending_pages(), 0u);
}

TEST(RingTrackerTest, RingFullThenRewriteIsReportedOnce) {
  Fixture f(1, 2048);
  ASSERT_TRUE(f.tracker->Start(kSlots).ok());
  for (uint64_t page = 0; page < 64; ++page) f.Write(0, 4, page);
  ASSERT_TRUE(f.tracker->OnRingFull(0).ok());
  f.Write(0, 4, 5);  // re-protected by that reset: a second entry
  DirtySet out = DirtySet::ForSlots(kSlots);
  absl::StatusOr<CollectStats> stats = f.tracker->Collect(&out);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->pages, 64u);
  EXPECT_THAT(stats->per_vcpu_pages, ElementsAre(64u));
}

TEST(RingTrackerTest, WithoutOnRingFullTheRingOverflows) {
  Fixture f(1, 2048);
  ASSERT_TRUE(f.tracker->Start(kSlots).ok());
  for (uint64_t page = 0; page < 128; ++page) f.Write(0, 4, page);
  EXPECT_FALSE(f.kernel->GuestWrite(0, (1 << 20) + 200 * kPageSize).ok());
}

TEST(RingTrackerTest, OnRingFullBeforeStartDiscardsAndUnblocks) {
  Fixture f(1, 2048);
  EXPECT_TRUE(f.tracker->OnRingFull(0).ok());
  EXPECT_EQ(f.tracker->OnRingFull(1).code(), absl::StatusCode::kInvalidArgument);
}

TEST(RingTrackerTest, StopDisablesLoggingThenDrainsSoNothingIsLeftInTheRings) {
  Fixture f(1, 2048);
  ASSERT_TRUE(f.tracker->Start(kSlots).ok());
  for (uint64_t page = 0; page < 10; ++page) f.Write(0, 1, page);
  ASSERT_TRUE(f.tracker->Stop().ok());
  EXPECT_FALSE(f.kernel->logging(1));
  EXPECT_FALSE(f.kernel->RingSoftFull(0));
  // Writes with logging off leave no entries; a restart reports only new
  // writes.
  f.Write(0, 1, 50);
  ASSERT_TRUE(f.tracker->Start(kSlots).ok());
  f.Write(0, 1, 60);
  DirtySet out = DirtySet::ForSlots(kSlots);
  absl::StatusOr<CollectStats> stats = f.tracker->Collect(&out);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->pages, 1u);
  EXPECT_TRUE((*out.Get(1))->Test(60));
  ASSERT_TRUE(f.tracker->Stop().ok());
  EXPECT_EQ(f.tracker->Collect(&out).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(RingTrackerTest, NeedsARingOnTheVmAndEveryVcpusRing) {
  FakeKvmKernel::Options o;  // ring off
  std::shared_ptr<FakeKvmKernel> k = *FakeKvmKernel::Create(o, kSlots);
  EXPECT_EQ(RingTracker::Create(FakeKvmKernel::Ops(k), {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  Fixture f(2);
  std::vector<kmod::DirtyRing*> rings = f.kernel->rings();
  rings[1] = nullptr;
  EXPECT_EQ(RingTracker::Create(FakeKvmKernel::Ops(f.kernel), rings)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RingTrackerTest, AsRingTrackerFindsIt) {
  Fixture f(1);
  EXPECT_EQ(AsRingTracker(f.tracker.get()), f.tracker.get());
  EXPECT_EQ(AsRingTracker(nullptr), nullptr);
}

}  // namespace
}  // namespace ferry::mmu::kvm
