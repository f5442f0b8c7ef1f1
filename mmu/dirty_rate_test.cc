#include "mmu/dirty_rate.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mmu/guest_memory.h"

namespace ferry::mmu {
namespace {

using ::testing::DoubleNear;
using ::testing::ElementsAre;

constexpr int64_t kSec = 1000000000;

struct FakeClock {
  int64_t now = 0;
  MonotonicClock fn() {
    return [this] { return now; };
  }
};

TEST(DirtyRateMeterTest, WindowRatesAndEwma) {
  FakeClock clock;
  DirtyRateMeter meter(clock.fn(), absl::Seconds(10));
  clock.now = 2 * kSec;
  DirtyRate r = meter.Record(CollectStats{1000, 0, {600, 400}});
  EXPECT_EQ(r.window_ns, 2 * kSec);
  EXPECT_DOUBLE_EQ(r.pages_per_sec, 500);
  EXPECT_DOUBLE_EQ(r.bytes_per_sec, 500.0 * kPageSize);
  EXPECT_DOUBLE_EQ(r.ewma_pages_per_sec, 500) << "first window seeds the EWMA";
  EXPECT_THAT(r.per_vcpu_pages_per_sec, ElementsAre(300, 200));

  clock.now += kSec;
  r = meter.Record(CollectStats{2000, 0, {}});
  EXPECT_DOUBLE_EQ(r.pages_per_sec, 2000);
  EXPECT_NEAR(r.ewma_pages_per_sec, 500 + (1 - std::exp(-0.1)) * 1500, 1e-9);
  EXPECT_TRUE(r.per_vcpu_pages_per_sec.empty());
  EXPECT_EQ(meter.last().pages, 2000u);

  // A zero-length window reports no rate and leaves the EWMA alone.
  r = meter.Record(CollectStats{5, 0, {}});
  EXPECT_EQ(r.pages_per_sec, 0);
  EXPECT_NEAR(r.ewma_pages_per_sec, 500 + (1 - std::exp(-0.1)) * 1500, 1e-9);

  clock.now += 5 * kSec;
  meter.Restart();
  clock.now += kSec;
  EXPECT_EQ(meter.Record(CollectStats{10, 0, {}}).window_ns, kSec);
}

TEST(HashPageTest, SeesEveryBit) {
  alignas(8) uint8_t page[kPageSize] = {};
  const uint64_t h0 = HashPage(page);
  EXPECT_EQ(HashPage(page), h0);
  absl::flat_hash_set<uint64_t> seen = {h0};
  for (size_t byte : {size_t{0}, size_t{7}, size_t{8}, size_t{2048}, kPageSize - 1}) {
    for (int bit : {0, 7}) {
      page[byte] ^= 1 << bit;
      EXPECT_TRUE(seen.insert(HashPage(page)).second) << byte << ":" << bit;
      page[byte] ^= 1 << bit;
    }
  }
  EXPECT_EQ(HashPage(page), h0);
}

// A simulated writer: changes exactly `n` distinct pages (chosen with its
// own seed) to new contents.
void WritePages(GuestMemory& mem, uint64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> gfns(mem.total_pages());
  for (uint64_t i = 0; i < gfns.size(); ++i) gfns[i] = i;
  std::shuffle(gfns.begin(), gfns.end(), rng);
  for (uint64_t i = 0; i < n; ++i) {
    uint8_t* hva = *mem.GpaToHva(GfnToGpa(gfns[i]), kPageSize);
    const uint64_t stamp = rng() | 1;
    std::memcpy(hva + (rng() % 512) * 8, &stamp, 8);  // one word changes
  }
}

TEST(PageSamplerTest, EstimatesAKnownRateWithin10Percent) {
  constexpr uint64_t kMiB = 1 << 20;
  auto layout = DefaultLayout(256 * kMiB, 128 * kMiB);
  ASSERT_TRUE(layout.ok());
  auto mem = GuestMemory::Create(*layout);
  ASSERT_TRUE(mem.ok()) << mem.status();
  const uint64_t total = (*mem)->total_pages();  // 65536
  // Fixed seeds keep the test deterministic; each is printed so a failure
  // names the sample it saw. 16384 samples: the standard error of the
  // estimate is ≤ 2% (relative) for fractions ≥ 0.1, so 10% is ≥ 5 sigma.
  // (At f = 0.02 it would be 4.7%: sampling cannot resolve tiny fractions
  // tightly; that is what the exact tracker counts are for.)
  uint64_t writer_seed = 42;
  for (uint64_t seed : {uint64_t{1}, uint64_t{2}, uint64_t{3}, uint64_t{0xfe77}, uint64_t{0xdeadbeef}}) {
    for (double fraction : {0.1, 0.3, 0.7}) {
      FakeClock clock;
      SamplingOptions options;
      options.pages_per_gib = 65536;  // 16384 samples of 65536 pages
      options.seed = seed;
      auto sampler = PageSampler::Create((*mem)->slots(), options, clock.fn());
      ASSERT_TRUE(sampler.ok()) << sampler.status();
      EXPECT_EQ((*sampler)->sampled_pages(), 16384u);
      (*sampler)->Start();
      const uint64_t changed = static_cast<uint64_t>(fraction * total);
      // A fresh writer seed each time: rewriting a page with the bytes it
      // already holds is (rightly) not a change.
      WritePages(**mem, changed, ++writer_seed);
      clock.now += 2 * kSec;
      auto r = (*sampler)->Finish();
      ASSERT_TRUE(r.ok()) << r.status();
      const double truth = changed / 2.0;  // pages per second
      std::printf("sampler seed=%llu fraction=%.2f truth=%.0f estimate=%.0f pages/s\n",
                  static_cast<unsigned long long>(r->seed), fraction, truth,
                  r->pages_per_sec);
      EXPECT_EQ(r->seed, seed);
      EXPECT_EQ(r->total_pages, total);
      EXPECT_EQ(r->window_ns, 2 * kSec);
      EXPECT_THAT(r->pages_per_sec, DoubleNear(truth, 0.10 * truth))
          << "seed=" << seed << " fraction=" << fraction;
      EXPECT_DOUBLE_EQ(r->bytes_per_sec, r->pages_per_sec * kPageSize);
    }
  }
}

TEST(PageSamplerTest, IdleGuestAndSeeds) {
  auto mem = GuestMemory::Create(*DefaultLayout(8 << 20));
  ASSERT_TRUE(mem.ok());
  FakeClock clock;
  auto sampler = PageSampler::Create((*mem)->slots(), SamplingOptions{}, clock.fn());
  ASSERT_TRUE(sampler.ok());
  EXPECT_NE((*sampler)->seed(), 0u) << "a random seed is picked and reported";
  EXPECT_EQ((*sampler)->sampled_pages(), 4u) << "512 per GiB of 8 MiB";
  EXPECT_EQ((*sampler)->Finish().status().code(),
            absl::StatusCode::kFailedPrecondition);
  (*sampler)->Start();
  EXPECT_EQ((*sampler)->Finish().status().code(),
            absl::StatusCode::kFailedPrecondition)
      << "zero-length window";
  (*sampler)->Start();
  clock.now += kSec;
  auto r = (*sampler)->Finish();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->changed_pages, 0u);
  EXPECT_EQ(r->pages_per_sec, 0);

  EXPECT_FALSE(PageSampler::Create({}, SamplingOptions{}, clock.fn()).ok());
  SamplingOptions zero;
  zero.pages_per_gib = 0;
  EXPECT_FALSE(PageSampler::Create((*mem)->slots(), zero, clock.fn()).ok());
}

TEST(WorkingSetEstimatorTest, CountsDistinctPagesOverTheWindow) {
  std::vector<Memslot> slots = {{0, 0, 100 * kPageSize, nullptr, 0},
                                {1, 100 * kPageSize, 28 * kPageSize, nullptr, 0}};
  FakeClock clock;
  WorkingSetEstimator ws(slots, clock.fn());
  DirtySet a = DirtySet::ForSlots(slots);
  ASSERT_TRUE(a.MarkGpaRange(0, 10 * kPageSize).ok());
  DirtySet b = DirtySet::ForSlots(slots);
  ASSERT_TRUE(b.MarkGpaRange(5 * kPageSize, 10 * kPageSize).ok());
  ASSERT_TRUE(b.MarkGpaRange(127 * kPageSize, kPageSize).ok());
  ASSERT_TRUE(ws.Add(a).ok());
  clock.now += 3 * kSec;
  ASSERT_TRUE(ws.Add(b).ok());
  ASSERT_TRUE(ws.Add(a).ok());
  WorkingSet w = ws.Estimate();
  EXPECT_EQ(w.pages, 16u);
  EXPECT_EQ(w.bytes, 16u * kPageSize);
  EXPECT_DOUBLE_EQ(w.fraction, 16.0 / 128);
  EXPECT_EQ(w.window_ns, 3 * kSec);
  ws.Reset();
  EXPECT_EQ(ws.Estimate().pages, 0u);
  EXPECT_EQ(ws.Estimate().window_ns, 0);
  DirtySet wrong = DirtySet::ForSlots(absl::MakeSpan(slots).subspan(1));
  EXPECT_FALSE(ws.Add(wrong).ok());
}

}  // namespace
}  // namespace ferry::mmu
