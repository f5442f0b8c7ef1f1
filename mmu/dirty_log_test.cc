#include "mmu/dirty_log.h"

#include <cstdint>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mmu/fake_dirty_tracker.h"

namespace ferry::mmu {
namespace {

using ::testing::ElementsAre;
using Semantics = FakeDirtyTracker::Semantics;

// Two adjacent slots and one after a hole; no memory behind them (the log
// never touches guest memory).
std::vector<Memslot> TestSlots() {
  return {
      {0, 0x0, 200 * kPageSize, nullptr, 0},
      {1, 200 * kPageSize, 100 * kPageSize, nullptr, 0},
      {4, 0x100000000, 64 * kPageSize, nullptr, 0},
  };
}

struct Harness {
  explicit Harness(Semantics semantics, int vcpus = 0) {
    auto t = std::make_unique<FakeDirtyTracker>(semantics, vcpus);
    fake = t.get();
    log = *DirtyLog::Create(std::move(t), TestSlots());
  }
  std::vector<PageRun> Drain(uint64_t batch = 1 << 20) {
    std::vector<PageRun> all;
    while (true) {
      auto runs = log->TakeBatch(batch);
      EXPECT_TRUE(runs.ok()) << runs.status();
      if (!runs.ok() || runs->empty()) return all;
      all.insert(all.end(), runs->begin(), runs->end());
    }
  }
  FakeDirtyTracker* fake;
  std::unique_ptr<DirtyLog> log;
};

class DirtyLogTest : public ::testing::TestWithParam<Semantics> {};

TEST_P(DirtyLogTest, FailedSendIsGivenBackAndSentAgain) {
  Harness h(GetParam());
  ASSERT_TRUE(h.log->Start(/*all_pending=*/false).ok());
  ASSERT_TRUE(h.fake->Dirty(0, 10).ok());
  ASSERT_TRUE(h.fake->Dirty(0, 11).ok());
  ASSERT_TRUE(h.fake->Dirty(1, 99).ok());
  auto harvest = h.log->Harvest();
  ASSERT_TRUE(harvest.ok());
  EXPECT_EQ(harvest->stats.pages, 3u);
  EXPECT_EQ(harvest->new_pages, 3u);
  EXPECT_EQ(h.log->pending_pages(), 3u);

  auto batch = h.log->TakeBatch(100);
  ASSERT_TRUE(batch.ok());
  EXPECT_THAT(*batch, ElementsAre(PageRun{0, 10, 2, 10 * kPageSize},
                                  PageRun{1, 99, 1, 299 * kPageSize}));
  EXPECT_EQ(h.log->pending_pages(), 0u);
  if (GetParam() == Semantics::kManualProtect) {
    EXPECT_EQ(h.fake->reprotected(), *batch) << "re-armed before the copy";
  } else {
    EXPECT_TRUE(h.fake->reprotected().empty());
  }

  // The send fails: the pages were consumed from the tracker, so only the
  // give-back keeps them alive.
  ASSERT_TRUE(h.log->GiveBack(*batch).ok());
  harvest = h.log->Harvest();
  ASSERT_TRUE(harvest.ok());
  EXPECT_EQ(harvest->new_pages, 0u);
  EXPECT_EQ(h.log->pending_pages(), 3u);
  EXPECT_EQ(h.Drain(), *batch);
}

TEST_P(DirtyLogTest, PreCopyWithInjectedSendFailuresLosesNothing) {
  // A model migration: the "guest" stamps pages, the sender copies stamps
  // to a destination and fails some sends. At the end the destination must
  // equal the source — the host's version of dirty_log_test.c's check.
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::printf("PreCopyWithInjectedSendFailuresLosesNothing seed=%llu\n",
              static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  Harness h(GetParam());
  const std::vector<Memslot> slots = TestSlots();
  std::vector<std::vector<uint64_t>> src(slots.size()), dst(slots.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    src[i].assign(slots[i].npages(), 1);  // pre-existing contents
    dst[i].assign(slots[i].npages(), 0);
  }
  auto guest_write = [&](uint64_t stamp) {
    const size_t i = rng() % slots.size();
    const uint64_t p = rng() % slots[i].npages();
    src[i][p] = stamp;
    ASSERT_TRUE(h.fake->Dirty(slots[i].slot, p).ok());
  };
  auto index_of = [&](uint32_t slot) {
    for (size_t i = 0; i < slots.size(); ++i) if (slots[i].slot == slot) return i;
    return size_t{0};
  };

  ASSERT_TRUE(h.log->Start(/*all_pending=*/true).ok());
  uint64_t failures = 0;
  for (uint64_t round = 2; round < 40; ++round) {
    for (int w = 0; w < 30; ++w) guest_write(round);
    ASSERT_TRUE(h.log->Harvest().ok());
    while (true) {
      auto runs = h.log->TakeBatch(1 + rng() % 50);
      ASSERT_TRUE(runs.ok());
      if (runs->empty()) break;
      guest_write(round * 1000);  // lands between take and copy
      if (rng() % 4 == 0) {       // the send fails
        ++failures;
        ASSERT_TRUE(h.log->GiveBack(*runs).ok());
        break;  // retry next round, as a reconnecting sender would
      }
      for (const PageRun& r : *runs) {
        const size_t i = index_of(r.slot);
        for (uint64_t p = r.first_page; p < r.first_page + r.npages; ++p) dst[i][p] = src[i][p];
      }
      guest_write(round * 1000 + 1);  // after the copy
    }
  }
  // Switchover: the guest is paused; final harvest and drain, no failures.
  ASSERT_TRUE(h.log->Harvest().ok());
  for (const PageRun& r : h.Drain()) {
    const size_t i = index_of(r.slot);
    for (uint64_t p = r.first_page; p < r.first_page + r.npages; ++p) dst[i][p] = src[i][p];
  }
  EXPECT_GT(failures, 0u);
  EXPECT_EQ(dst, src);
}

TEST_P(DirtyLogTest, PartialCollectFailureKeepsWhatWasConsumed) {
  Harness h(GetParam());
  ASSERT_TRUE(h.log->Start(false).ok());
  ASSERT_TRUE(h.fake->Dirty(0, 5).ok());
  ASSERT_TRUE(h.fake->Dirty(4, 6).ok());
  h.fake->FailNextCollect(absl::InternalError("KVM_GET_DIRTY_LOG slot=1: EFAULT"));
  EXPECT_EQ(h.log->Harvest().status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(h.log->pending_pages(), 1u) << "slot 0 was consumed; must be kept";
  ASSERT_TRUE(h.log->Harvest().ok());
  EXPECT_EQ(h.log->pending_pages(), 2u);
}

TEST_P(DirtyLogTest, ReprotectFailureGivesPagesBack) {
  Harness h(GetParam());
  ASSERT_TRUE(h.log->Start(false).ok());
  ASSERT_TRUE(h.log->MarkDirty(0, 3 * kPageSize).ok());
  h.fake->FailNextReprotect(absl::InternalError("KVM_CLEAR_DIRTY_LOG: EINVAL"));
  auto runs = h.log->TakeBatch(10);
  if (GetParam() == Semantics::kManualProtect) {
    EXPECT_FALSE(runs.ok());
    EXPECT_EQ(h.log->pending_pages(), 3u);
  } else {
    ASSERT_TRUE(runs.ok()) << "no re-protect in classic mode";
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, DirtyLogTest,
                         ::testing::Values(Semantics::kClassic,
                                           Semantics::kManualProtect),
                         [](const auto& info) {
                           return info.param == Semantics::kClassic
                                      ? std::string("Classic")
                                      : std::string("ManualProtect");
                         });

TEST(DirtyLogBasicsTest, MarkDirtyAddsVmmWrites) {
  Harness h(Semantics::kClassic);
  ASSERT_TRUE(h.log->Start(false).ok());
  // Crosses from slot 0 into slot 1; unaligned ends round out.
  ASSERT_TRUE(h.log->MarkDirty(199 * kPageSize + 100, kPageSize).ok());
  EXPECT_EQ(h.log->pending_pages(), 2u);
  ASSERT_TRUE(h.log->MarkDirty(199 * kPageSize, 1).ok());
  EXPECT_EQ(h.log->pending_pages(), 2u) << "already pending";
  EXPECT_EQ(h.log->MarkDirty(0x80000000, 1).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(h.log->pending_pages(), 2u);
  EXPECT_THAT(h.Drain(), ElementsAre(PageRun{0, 199, 1, 199 * kPageSize},
                                     PageRun{1, 0, 1, 200 * kPageSize}));
  EXPECT_EQ(h.log->GiveBack({PageRun{1, 99, 2, 0}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.log->GiveBack({PageRun{3, 0, 1, 0}}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DirtyLogBasicsTest, BatchesSplitRunsAndSweepLikeACursor) {
  Harness h(Semantics::kClassic);
  ASSERT_TRUE(h.log->Start(/*all_pending=*/true).ok());
  EXPECT_EQ(h.log->pending_pages(), 364u);
  EXPECT_EQ(h.log->pending_bytes(), 364u * kPageSize);
  auto b = h.log->TakeBatch(150);
  EXPECT_THAT(*b, ElementsAre(PageRun{0, 0, 150, 0}));
  b = h.log->TakeBatch(100);
  EXPECT_THAT(*b, ElementsAre(PageRun{0, 150, 50, 150 * kPageSize},
                              PageRun{1, 0, 50, 200 * kPageSize}));
  // Something behind the cursor waits for the wrap-around.
  ASSERT_TRUE(h.log->MarkDirty(0, kPageSize).ok());
  b = h.log->TakeBatch(1000);
  EXPECT_THAT(*b, ElementsAre(PageRun{1, 50, 50, 250 * kPageSize},
                              PageRun{4, 0, 64, 0x100000000},
                              PageRun{0, 0, 1, 0}));
  EXPECT_TRUE(h.log->TakeBatch(1000)->empty());
  EXPECT_EQ(h.log->pending_pages(), 0u);
}

TEST(DirtyLogBasicsTest, ObserverAndPerVcpuCounts) {
  Harness h(Semantics::kClassic, /*vcpus=*/2);
  uint64_t observed = 0;
  std::vector<uint64_t> per_vcpu;
  h.log->SetHarvestObserver([&](const DirtySet& set, const CollectStats& s) {
    observed = set.Count();
    per_vcpu = s.per_vcpu_pages;
  });
  ASSERT_TRUE(h.log->Start(false).ok());
  ASSERT_TRUE(h.fake->Dirty(0, 1, /*vcpu=*/0).ok());
  ASSERT_TRUE(h.fake->Dirty(0, 2, /*vcpu=*/1).ok());
  ASSERT_TRUE(h.fake->Dirty(0, 3, /*vcpu=*/1).ok());
  auto r = h.log->Harvest();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(observed, 3u);
  EXPECT_THAT(per_vcpu, ElementsAre(1, 2));
  EXPECT_THAT(r->stats.per_vcpu_pages, ElementsAre(1, 2));
}

TEST(DirtyLogBasicsTest, ConcurrentMarkTakeGiveBackHarvest) {
  Harness h(Semantics::kManualProtect);
  ASSERT_TRUE(h.log->Start(false).ok());
  constexpr int kMarks = 20000;
  std::thread marker([&] {
    for (int i = 0; i < kMarks; ++i) {
      ASSERT_TRUE(h.log->MarkDirty((i % 300) * kPageSize, kPageSize).ok());
      ASSERT_TRUE(h.fake->Dirty(4, i % 64).ok());
    }
  });
  std::thread harvester([&] {
    for (int i = 0; i < 2000; ++i) ASSERT_TRUE(h.log->Harvest().ok());
  });
  for (int i = 0; i < 2000; ++i) {
    auto runs = h.log->TakeBatch(16);
    ASSERT_TRUE(runs.ok());
    if (i % 3 == 0) {
      ASSERT_TRUE(h.log->GiveBack(*runs).ok());
    }
  }
  marker.join();
  harvester.join();
  ASSERT_TRUE(h.log->Harvest().ok());
  DirtySet snapshot = h.log->PendingSnapshot();
  EXPECT_EQ(snapshot.Count(), h.log->pending_pages()) << "counter drifted";
  h.Drain();
  EXPECT_EQ(h.log->pending_pages(), 0u);
}

}  // namespace
}  // namespace ferry::mmu
