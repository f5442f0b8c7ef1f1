// ClearLogTracker: the pure chunk planner, and the KVM_CLEAR_DIRTY_LOG
// calls the tracker issues against the fake kernel (which enforces
// VmFd::CheckClearRange's rules on every call).
#include "mmu/kvm/clear_log_tracker.h"

#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mmu/dirty_set.h"
#include "mmu/kvm/fake_kvm_kernel.h"

namespace ferry::mmu::kvm {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

DirtyBitmap Mask(uint64_t npages, std::vector<std::pair<uint64_t, uint64_t>> runs) {
  DirtyBitmap b(npages);
  for (auto [first, n] : runs) b.SetRange(first, n);
  return b;
}

TEST(PlanClearChunksTest, EmptyMaskPlansNothing) {
  EXPECT_THAT(PlanClearChunks(DirtyBitmap(1000), 128), IsEmpty());
}

TEST(PlanClearChunksTest, ChunksStartAlignedAtTheFirstDirtyWord) {
  // Page 70 is in word 1: the chunk starts at page 64.
  EXPECT_THAT(PlanClearChunks(Mask(1024, {{70, 1}}), 128),
              ElementsAre(ClearChunk{64, 128}));
}

TEST(PlanClearChunksTest, ARunStraddlingChunksIsSplit) {
  // [100, 300) with 128-page chunks: [64, 192) then [192, 320).
  EXPECT_THAT(PlanClearChunks(Mask(1024, {{100, 200}}), 128),
              ElementsAre(ClearChunk{64, 128}, ClearChunk{192, 128}));
}

TEST(PlanClearChunksTest, SkipsEmptyStretchesBetweenChunks) {
  EXPECT_THAT(PlanClearChunks(Mask(100000, {{5, 1}, {50000, 3}}), 256),
              ElementsAre(ClearChunk{0, 256}, ClearChunk{49984, 256}));
}

TEST(PlanClearChunksTest, CoalescesNearbyRunsIntoOneChunk) {
  EXPECT_THAT(PlanClearChunks(Mask(4096, {{0, 1}, {10, 5}, {900, 2}}), 1024),
              ElementsAre(ClearChunk{0, 1024}));
}

TEST(PlanClearChunksTest, TheLastChunkEndsShortAtTheSlotEnd) {
  // 1000 pages: the chunk from 960 may only span 40 pages (allowed: it
  // ends at the slot's end).
  EXPECT_THAT(PlanClearChunks(Mask(1000, {{999, 1}}), 128),
              ElementsAre(ClearChunk{960, 40}));
  EXPECT_THAT(PlanClearChunks(Mask(1000, {{850, 150}}), 128),
              ElementsAre(ClearChunk{832, 128}, ClearChunk{960, 40}));
  for (const ClearChunk& c : PlanClearChunks(Mask(1000, {{0, 1000}}), 128)) {
    EXPECT_TRUE(kmod::VmFd::CheckClearRange(1000, c.first_page, c.num_pages,
                                            DirtyBitmap::WordsFor(c.num_pages))
                    .ok());
  }
}

TEST(PlanClearChunksTest, RespectsTheWordWindow) {
  DirtyBitmap m = Mask(1024, {{0, 1}, {500, 1}});
  EXPECT_THAT(PlanClearChunks(m, 64, 2, 16), ElementsAre(ClearChunk{448, 64}));
}

// --- the tracker over the fake kernel ---

struct Fixture {
  std::vector<Memslot> slots = {{1, 0, 1000 * kPageSize},
                                {2, 8 << 20, 300000 * kPageSize}};
  std::shared_ptr<FakeKvmKernel> kernel;
  std::unique_ptr<ClearLogTracker> tracker;

  explicit Fixture(uint64_t bits = 3, uint64_t chunk = kDefaultClearChunkPages) {
    FakeKvmKernel::Options o;
    o.manual_protect_bits = bits;
    kernel = *FakeKvmKernel::Create(o, slots);
    ClearLogTracker::Options co;
    co.chunk_pages = chunk;
    tracker = *ClearLogTracker::Create(FakeKvmKernel::Ops(kernel), co);
  }
};

TEST(ClearLogTrackerTest, InitiallySetReportsEveryPageFirstAndProtectsLazily) {
  Fixture f;
  ASSERT_TRUE(f.tracker->Start(f.slots).ok());
  EXPECT_TRUE(f.tracker->initially_set());
  EXPECT_TRUE(f.kernel->initially_set());
  EXPECT_FALSE(f.kernel->write_protected(2, 5));  // nothing protected yet
  DirtySet out = DirtySet::ForSlots(f.slots);
  absl::StatusOr<CollectStats> stats = f.tracker->Collect(&out);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->pages, 301000u);
  EXPECT_EQ(out.Count(), 301000u);
  // GET did not re-protect: the same pages again.
  out.ClearAll();
  ASSERT_TRUE(f.tracker->Collect(&out).ok());
  EXPECT_EQ(out.Count(), 301000u);
  ASSERT_TRUE(f.tracker->Reprotect(2, 0, 10).ok());
  EXPECT_TRUE(f.kernel->write_protected(2, 5));
  EXPECT_FALSE(f.kernel->write_protected(2, 10));
}

TEST(ClearLogTrackerTest, WithoutInitiallySetStartProtectsEverything) {
  Fixture f(/*bits=*/1);
  ASSERT_TRUE(f.tracker->Start(f.slots).ok());
  EXPECT_FALSE(f.tracker->initially_set());
  EXPECT_TRUE(f.kernel->write_protected(2, 5));
  DirtySet out = DirtySet::ForSlots(f.slots);
  ASSERT_TRUE(f.tracker->Collect(&out).ok());
  EXPECT_TRUE(out.Empty());
}

TEST(ClearLogTrackerTest, OneCallPerChunkWithSomethingToClear) {
  Fixture f(3, /*chunk=*/65536);
  ASSERT_TRUE(f.tracker->Start(f.slots).ok());
  std::vector<PageRun> runs = {
      {2, 65530, 10, 0},    // straddles a 64K multiple: still one chunk,
                            // since chunks start at the first dirty word
      {2, 200000, 5, 0},    // one chunk
      {2, 299990, 10, 0},   // up to the slot end: a short last chunk
      {1, 999, 1, 0},       // slot 1's tail word
      {2, 200010, 1, 0},    // same word as the second run: coalesced
  };
  ASSERT_TRUE(f.tracker->ReprotectRuns(runs).ok());
  std::vector<FakeKvmKernel::ClearCall> calls = f.kernel->clear_calls();
  ASSERT_EQ(calls.size(), 4u);
  EXPECT_EQ(calls[0].slot, 1u);
  EXPECT_EQ(calls[0].first_page, 960u);
  EXPECT_EQ(calls[0].num_pages, 40u);
  EXPECT_EQ(calls[0].mask_pages, 1u);
  EXPECT_EQ(calls[1].first_page, 65472u);  // 65530 rounded down to 64
  EXPECT_EQ(calls[1].num_pages, 65536u);
  EXPECT_EQ(calls[1].mask_pages, 10u);
  EXPECT_EQ(calls[2].first_page, 200000u);  // a multiple of 64
  EXPECT_EQ(calls[2].mask_pages, 6u);
  EXPECT_EQ(calls[3].first_page, 299968u);
  EXPECT_EQ(calls[3].num_pages, 32u);  // short: ends at the slot end
  EXPECT_EQ(calls[3].mask_pages, 10u);
  EXPECT_EQ(f.tracker->clear_calls(), 4u);
  // The masks are zero again: a second batch sends only its own bits.
  std::vector<PageRun> again = {{2, 7, 1, 0}};
  ASSERT_TRUE(f.tracker->ReprotectRuns(again).ok());
  calls = f.kernel->clear_calls();
  ASSERT_EQ(calls.size(), 5u);
  EXPECT_EQ(calls[4].first_page, 0u);
  EXPECT_EQ(calls[4].mask_pages, 1u);
}

TEST(ClearLogTrackerTest, ARunAcrossTwoFixedChunksUsesTwoCallsWhenLong) {
  Fixture f(3, /*chunk=*/128);
  ASSERT_TRUE(f.tracker->Start(f.slots).ok());
  std::vector<PageRun> runs = {{2, 100, 200, 0}};
  ASSERT_TRUE(f.tracker->ReprotectRuns(runs).ok());
  std::vector<FakeKvmKernel::ClearCall> calls = f.kernel->clear_calls();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].first_page, 64u);
  EXPECT_EQ(calls[0].mask_pages, 92u);
  EXPECT_EQ(calls[1].first_page, 192u);
  EXPECT_EQ(calls[1].mask_pages, 108u);
}

TEST(ClearLogTrackerTest, BadRunsChangeNothing) {
  Fixture f;
  ASSERT_TRUE(f.tracker->Start(f.slots).ok());
  std::vector<PageRun> runs = {{2, 0, 5, 0}, {1, 999, 2, 0}};
  EXPECT_EQ(f.tracker->ReprotectRuns(runs).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<PageRun> unknown = {{9, 0, 1, 0}};
  EXPECT_EQ(f.tracker->ReprotectRuns(unknown).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(f.kernel->clear_calls(), IsEmpty());
}

TEST(ClearLogTrackerTest, AFailedClearLeavesCleanMasks) {
  Fixture f(3, 128);
  ASSERT_TRUE(f.tracker->Start(f.slots).ok());
  f.kernel->FailNextClear(absl::InternalError("EFAULT"));
  std::vector<PageRun> runs = {{2, 0, 300, 0}};
  EXPECT_FALSE(f.tracker->ReprotectRuns(runs).ok());
  std::vector<PageRun> one = {{2, 1000, 1, 0}};
  ASSERT_TRUE(f.tracker->ReprotectRuns(one).ok());
  std::vector<FakeKvmKernel::ClearCall> calls = f.kernel->clear_calls();
  ASSERT_EQ(calls.size(), 1u);  // the failed calls are not recorded
  EXPECT_EQ(calls[0].mask_pages, 1u);
}

TEST(ClearLogTrackerTest, RefusesAKernelWithoutManualProtect) {
  Fixture f(/*bits=*/0);
  absl::Status s = f.tracker->Start(f.slots);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(f.kernel->logging(1));
}

TEST(ClearLogTrackerTest, RejectsBadChunkSizes) {
  Fixture f;
  for (uint64_t chunk : {uint64_t{0}, uint64_t{100}, uint64_t{1} << 32}) {
    ClearLogTracker::Options o;
    o.chunk_pages = chunk;
    EXPECT_EQ(ClearLogTracker::Create(FakeKvmKernel::Ops(f.kernel), o)
                  .status()
                  .code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST(ClearLogTrackerTest, StopTurnsLoggingOffAndCollectFails) {
  Fixture f;
  ASSERT_TRUE(f.tracker->Start(f.slots).ok());
  EXPECT_TRUE(f.kernel->logging(2));
  ASSERT_TRUE(f.tracker->Stop().ok());
  EXPECT_FALSE(f.kernel->logging(2));
  DirtySet out = DirtySet::ForSlots(f.slots);
  EXPECT_EQ(f.tracker->Collect(&out).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Restart reuses the already-enabled manual protect.
  ASSERT_TRUE(f.tracker->Start(f.slots).ok());
}

}  // namespace
}  // namespace ferry::mmu::kvm
