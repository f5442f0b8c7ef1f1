#include "mmu/dirty_bitmap.h"

#include <atomic>
#include <cstdint>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mmu/dirty_set.h"

namespace ferry::mmu {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;
using Runs = std::vector<std::pair<uint64_t, uint64_t>>;

Runs RunsOf(const DirtyBitmap& b) {
  Runs r;
  b.ForEachRun([&](uint64_t first, uint64_t n) { r.emplace_back(first, n); });
  return r;
}

std::vector<uint64_t> BitsOf(const DirtyBitmap& b) {
  std::vector<uint64_t> v;
  b.ForEachSetBit([&](uint64_t p) { v.push_back(p); });
  return v;
}

// The obvious page-by-page reference.
Runs ReferenceRuns(const std::vector<bool>& bits) {
  Runs r;
  for (uint64_t i = 0; i < bits.size();) {
    if (!bits[i]) { ++i; continue; }
    uint64_t j = i;
    while (j < bits.size() && bits[j]) ++j;
    r.emplace_back(i, j - i);
    i = j;
  }
  return r;
}

TEST(DirtyBitmapTest, EmptyBitmap) {
  DirtyBitmap zero;
  EXPECT_EQ(zero.npages(), 0u);
  EXPECT_EQ(zero.Count(), 0u);
  EXPECT_TRUE(zero.Empty());
  EXPECT_TRUE(RunsOf(zero).empty());
  EXPECT_EQ(zero.NextSetBit(0), 0u);

  DirtyBitmap b(130);
  EXPECT_EQ(b.num_words(), 3u);
  EXPECT_TRUE(b.Empty());
  EXPECT_TRUE(RunsOf(b).empty());
  EXPECT_TRUE(BitsOf(b).empty());
  EXPECT_EQ(b.NextSetBit(0), 130u);
  EXPECT_EQ(b.NextClearBit(0), 0u);
}

TEST(DirtyBitmapTest, WordBoundaryBits) {
  DirtyBitmap b(130);  // last word holds pages 128 and 129 only
  for (uint64_t p : {0, 63, 64, 129}) {
    EXPECT_FALSE(b.Test(p));
    b.Set(p);
    EXPECT_TRUE(b.Test(p)) << p;
  }
  EXPECT_EQ(b.Count(), 4u);
  EXPECT_THAT(BitsOf(b), ElementsAre(0, 63, 64, 129));
  EXPECT_THAT(RunsOf(b), ElementsAre(Pair(0, 1), Pair(63, 2), Pair(129, 1)));
  EXPECT_EQ(b.words()[0], (uint64_t{1} << 63) | 1);
  EXPECT_EQ(b.words()[1], 1u);
  EXPECT_EQ(b.words()[2], 2u);
  EXPECT_EQ(b.NextSetBit(1), 63u);
  EXPECT_EQ(b.NextSetBit(65), 129u);
  EXPECT_EQ(b.NextClearBit(63), 65u);
  EXPECT_EQ(b.NextClearBit(129), 130u);  // run reaching the end stops at npages
  b.Clear(63);
  b.Clear(129);
  EXPECT_THAT(BitsOf(b), ElementsAre(0, 64));
}

TEST(DirtyBitmapTest, FullBitmapIsOneRun) {
  for (uint64_t n : {1, 63, 64, 65, 128, 130, 4096}) {
    DirtyBitmap b(n);
    b.SetAll();
    EXPECT_EQ(b.Count(), n);
    EXPECT_THAT(RunsOf(b), ElementsAre(Pair(0, n))) << n;
    EXPECT_EQ(b.NextClearBit(0), n);
  }
  DirtyBitmap b(130);
  b.SetAll();
  EXPECT_EQ(b.words()[2], 3u) << "bits past npages must stay clear";
}

TEST(DirtyBitmapTest, RangesSpanningWords) {
  DirtyBitmap b(300);
  EXPECT_EQ(b.SetRange(60, 10), 10u);
  EXPECT_EQ(b.SetRange(65, 10), 5u);  // returns only newly set bits
  EXPECT_THAT(RunsOf(b), ElementsAre(Pair(60, 15)));
  EXPECT_EQ(b.SetRange(100, 200), 200u);
  EXPECT_EQ(b.SetRange(290, 1000), 0u) << "clamped to npages";
  EXPECT_THAT(RunsOf(b), ElementsAre(Pair(60, 15), Pair(100, 200)));
  EXPECT_EQ(b.ClearRange(127, 130), 130u);
  EXPECT_EQ(b.ClearRange(127, 130), 0u);
  EXPECT_THAT(RunsOf(b), ElementsAre(Pair(60, 15), Pair(100, 27), Pair(257, 43)));
  EXPECT_EQ(b.Count(), 15u + 27 + 43);
  EXPECT_EQ(b.SetRange(400, 5), 0u);
  EXPECT_EQ(b.SetRange(0, 0), 0u);
}

TEST(DirtyBitmapTest, RandomBitmapsMatchReference) {
  const uint64_t seed = 0x5eed1234;
  std::mt19937_64 rng(seed);
  for (int iter = 0; iter < 200; ++iter) {
    const uint64_t n = 1 + rng() % 2000;
    const double density = (rng() % 100) / 100.0;
    DirtyBitmap b(n);
    std::vector<bool> ref(n);
    for (uint64_t p = 0; p < n; ++p) {
      if ((rng() % 1000) < density * 1000) {
        b.Set(p);
        ref[p] = true;
      }
    }
    ASSERT_EQ(RunsOf(b), ReferenceRuns(ref)) << "seed " << seed << " iter " << iter;
    std::vector<uint64_t> want;
    for (uint64_t p = 0; p < n; ++p) if (ref[p]) want.push_back(p);
    ASSERT_EQ(BitsOf(b), want) << "seed " << seed << " iter " << iter;
    ASSERT_EQ(b.Count(), want.size());
    // NextSetBit walks the same bits.
    std::vector<uint64_t> walked;
    for (uint64_t p = b.NextSetBit(0); p < n; p = b.NextSetBit(p + 1)) walked.push_back(p);
    ASSERT_EQ(walked, want);
  }
}

TEST(DirtyBitmapTest, KernelStyleRawFill) {
  DirtyBitmap b(100);
  // What KVM_GET_DIRTY_LOG would write: bit i of word w = page 64w + i.
  b.mutable_words()[0] = 0x8000000000000001ull;
  b.mutable_words()[1] = ~uint64_t{0};  // includes garbage past page 99
  b.ClearTailBits();
  EXPECT_EQ(b.Count(), 2u + 36);
  EXPECT_THAT(RunsOf(b), ElementsAre(Pair(0, 1), Pair(63, 37)));
}

TEST(DirtyBitmapTest, MergeAndTake) {
  DirtyBitmap a(130), b(130);
  a.SetRange(0, 10);
  b.SetRange(5, 10);
  b.Set(129);
  EXPECT_EQ(a.MergeFrom(b), 6u);
  EXPECT_EQ(a.MergeFrom(b), 0u);
  EXPECT_THAT(RunsOf(a), ElementsAre(Pair(0, 15), Pair(129, 1)));

  std::vector<uint64_t> raw = {0, 0, ~uint64_t{0}};  // garbage in the tail
  EXPECT_EQ(a.MergeFromWords(raw), 1u) << "only page 128 is new";
  EXPECT_EQ(a.words()[2], 3u);

  DirtyBitmap out(130);
  out.Set(50);  // overwritten, not merged
  EXPECT_EQ(a.TakeAndClear(&out), 17u);
  EXPECT_TRUE(a.Empty());
  EXPECT_THAT(RunsOf(out), ElementsAre(Pair(0, 15), Pair(128, 2)));

  DirtyBitmap c(130);
  c.Swap(out);
  EXPECT_TRUE(out.Empty());
  EXPECT_EQ(c.Count(), 17u);
  DirtyBitmap copy = c;
  EXPECT_EQ(copy, c);
  copy.Clear(0);
  EXPECT_NE(copy, c);
}

// Setters and a harvester race; every bit set must be taken exactly once.
TEST(DirtyBitmapTest, TakeAndClearUnderConcurrentSetters) {
  constexpr uint64_t kPages = 1 << 16;
  constexpr int kSetters = 4;
  DirtyBitmap live(kPages);
  DirtyBitmap accum(kPages);
  std::atomic<int> done{0};
  uint64_t taken = 0;
  std::thread harvester([&] {
    DirtyBitmap tmp(kPages);
    while (done.load() < kSetters) {
      taken += live.TakeAndClear(&tmp);
      accum.MergeFrom(tmp);
    }
    taken += live.TakeAndClear(&tmp);
    accum.MergeFrom(tmp);
  });
  std::vector<std::thread> setters;
  for (int t = 0; t < kSetters; ++t) {
    // Interleaved pages so setters share every word.
    setters.emplace_back([&, t] {
      for (uint64_t p = t; p < kPages; p += kSetters) live.Set(p);
      done.fetch_add(1);
    });
  }
  for (auto& s : setters) s.join();
  harvester.join();
  EXPECT_EQ(taken, kPages) << "a bit was lost or taken twice";
  EXPECT_EQ(accum.Count(), kPages);
}

TEST(DirtyBitmapTest, MergeUnderConcurrentSetters) {
  constexpr uint64_t kPages = 1 << 16;
  constexpr int kThreads = 4;
  DirtyBitmap dst(kPages);
  std::vector<DirtyBitmap> srcs;
  for (int t = 0; t < kThreads; ++t) {
    srcs.emplace_back(kPages);
    for (uint64_t p = t; p < kPages; p += 3) srcs.back().Set(p);  // overlapping
  }
  std::vector<uint64_t> added(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      added[t] = dst.MergeFrom(srcs[t]);
      // Meanwhile set single bits in the same words.
      for (uint64_t p = 1; p < kPages; p += 3 * kThreads) dst.Set(p);
    });
  }
  for (auto& th : threads) th.join();
  DirtyBitmap want(kPages);
  for (auto& s : srcs) want.MergeFrom(s);
  for (uint64_t p = 1; p < kPages; p += 3 * kThreads) want.Set(p);
  EXPECT_EQ(dst, want);
  // Merges returned exactly the bits they added; setters added the rest.
  uint64_t sum = 0;
  for (uint64_t a : added) sum += a;
  EXPECT_LE(sum, want.Count());
}

TEST(DirtySetTest, MarkGpaRangeAcrossSlots) {
  uint8_t dummy = 0;
  std::vector<Memslot> slots = {
      {0, 0x0, 0x10000, &dummy, 0},        // 16 pages
      {7, 0x10000, 0x8000, &dummy, 0},     // 8 pages, adjacent
      {2, 0x100000, 0x4000, &dummy, 0},    // 4 pages, after a hole
  };
  DirtySet set = DirtySet::ForSlots(slots);
  // Unaligned start and length round out to whole pages, across two slots.
  EXPECT_EQ(*set.MarkGpaRange(0xF800, 0x1000), 2u);
  EXPECT_EQ(*set.MarkGpaRange(0x100000, 1), 1u);
  EXPECT_EQ(*set.MarkGpaRange(0x100000, 0), 0u);
  std::vector<PageRun> runs;
  set.ForEachRun([&](const PageRun& r) { runs.push_back(r); });
  EXPECT_THAT(runs, ElementsAre(PageRun{0, 15, 1, 0xF000}, PageRun{7, 0, 1, 0x10000},
                                PageRun{2, 0, 1, 0x100000}));
  // Into the hole: nothing is marked.
  EXPECT_EQ(set.MarkGpaRange(0x17000, 0x2000).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(set.Count(), 3u);
  EXPECT_FALSE((*set.Get(7))->Test(7));

  DirtySet other = DirtySet::ForSlots(slots);
  other.MarkGpaRange(0, 0x2000).IgnoreError();
  EXPECT_EQ(*set.MergeFrom(other), 2u);
  EXPECT_EQ(set.Count(), 5u);
  DirtySet wrong = DirtySet::ForSlots(absl::MakeSpan(slots).subspan(1));
  EXPECT_EQ(set.MergeFrom(wrong).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(set.Get(99).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace ferry::mmu
