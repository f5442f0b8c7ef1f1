#include "agent/migration/codec/xor_delta.h"

#include <cstring>
#include <random>
#include <vector>

#include "agent/migration/codec/crc32c.h"
#include "agent/migration/codec/xor_cache.h"
#include "gtest/gtest.h"

namespace ferry::migration::codec {
namespace {

using Page = std::vector<uint8_t>;

Page RandomPage(std::mt19937_64& rng) {
  Page p(kPageBytes);
  for (auto& b : p) b = static_cast<uint8_t>(rng());
  return p;
}

// Encodes cur against old, decodes against old, checks the result.
size_t RoundTrip(const Page& old, const Page& cur, size_t max = kPageBytes) {
  std::vector<uint8_t> enc(max);
  const size_t n = EncodeXorPage(cur.data(), old.data(),
                                 Crc32c(cur.data(), kPageBytes), enc.data(),
                                 max);
  if (n == 0) return 0;
  Page scratch(kPageBytes);
  absl::StatusOr<size_t> used = ValidateXorPage(
      absl::MakeConstSpan(enc.data(), n), old.data(), scratch.data());
  EXPECT_TRUE(used.ok()) << used.status();
  EXPECT_EQ(*used, n);
  EXPECT_EQ(scratch, cur);
  Page in_place = old;
  EXPECT_EQ(ApplyXorPage(enc.data(), in_place.data()), n);
  EXPECT_EQ(in_place, cur);
  return n;
}

TEST(XorDeltaTest, UnchangedPageIsSevenBytes) {
  std::mt19937_64 rng(1);
  const Page p = RandomPage(rng);
  EXPECT_EQ(RoundTrip(p, p), kXorMinPageBytes);
}

TEST(XorDeltaTest, EdgesAndGaps) {
  std::mt19937_64 rng(2);
  const Page old = RandomPage(rng);
  // First byte, last byte, both, a gap of kMinGap-1 (merged) and kMinGap
  // (split), a full page.
  Page a = old;
  a[0] ^= 1;
  EXPECT_EQ(RoundTrip(old, a), 4u + 1 + 1 + 1 + 2 + 1);  // lit, then tail
  Page b = old;
  b[kPageBytes - 1] ^= 0x80;
  EXPECT_EQ(RoundTrip(old, b), 4u + 2 + 1 + 1);  // skip 4095, lit 1, ends
  Page c = old;
  c[100] ^= 1;
  c[100 + kMinGap] ^= 1;  // kMinGap-1 equal bytes between: merged
  EXPECT_EQ(RoundTrip(old, c), 4u + 1 + 1 + (kMinGap + 1) + 2 + 1);
  Page d = old;
  d[100] ^= 1;
  d[100 + kMinGap + 1] ^= 1;  // kMinGap equal bytes between: split
  EXPECT_EQ(RoundTrip(old, d), 4u + (1 + 1 + 1) + (1 + 1 + 1) + 2 + 1);
  Page e = old;
  for (auto& x : e) x = ~x;
  EXPECT_EQ(RoundTrip(old, e, 8192), 4u + 1 + 2 + kPageBytes);
  EXPECT_EQ(RoundTrip(old, e, 2048), 0u);  // over budget
}

TEST(XorDeltaTest, RandomSparseChanges) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  for (int iter = 0; iter < 2000; ++iter) {
    const Page old = RandomPage(rng);
    Page cur = old;
    const int changes = static_cast<int>(rng() % 200);
    for (int i = 0; i < changes; ++i) {
      cur[rng() % kPageBytes] = static_cast<uint8_t>(rng());
    }
    const size_t n = RoundTrip(old, cur);
    ASSERT_GT(n, 0u);
    ASSERT_LE(n, 4u + 200 * 5 + 3);
  }
}

TEST(XorDeltaTest, MalformedStreamsAreRejected) {
  std::mt19937_64 rng(3);
  const Page base = RandomPage(rng);
  Page scratch(kPageBytes);
  auto check = [&](std::vector<uint8_t> in, absl::StatusCode want) {
    absl::StatusOr<size_t> r =
        ValidateXorPage(absl::MakeConstSpan(in), base.data(), scratch.data());
    EXPECT_EQ(r.status().code(), want) << r.status();
  };
  const uint32_t crc = Crc32c(base.data(), kPageBytes);
  auto with_crc = [&](std::vector<uint8_t> ops, uint32_t c) {
    std::vector<uint8_t> v(4);
    std::memcpy(v.data(), &c, 4);
    v.insert(v.end(), ops.begin(), ops.end());
    return v;
  };
  // Valid: skip 4096, len 0.
  check(with_crc({0x80, 0x20, 0x00}, crc), absl::StatusCode::kOk);
  // Wrong CRC.
  check(with_crc({0x80, 0x20, 0x00}, crc ^ 1), absl::StatusCode::kDataLoss);
  // Truncated header, truncated ops, truncated varint.
  check({1, 2}, absl::StatusCode::kInvalidArgument);
  check(with_crc({}, crc), absl::StatusCode::kInvalidArgument);
  check(with_crc({0x80}, crc), absl::StatusCode::kInvalidArgument);
  // Three-byte varint.
  check(with_crc({0x80, 0x80, 0x01, 0x00}, crc),
        absl::StatusCode::kInvalidArgument);
  // Skip past the page (4097).
  check(with_crc({0x81, 0x20, 0x00}, crc), absl::StatusCode::kInvalidArgument);
  // Empty literal before the end.
  check(with_crc({0x05, 0x00}, crc), absl::StatusCode::kInvalidArgument);
  // Literal past the page end: skip 4095, len 2.
  check(with_crc({0xFF, 0x1F, 0x02, 1, 1}, crc),
        absl::StatusCode::kInvalidArgument);
  // Literal longer than the input.
  check(with_crc({0x00, 0x10, 1, 2, 3}, crc),
        absl::StatusCode::kInvalidArgument);
  // Page not finished: skip 10 then nothing.
  check(with_crc({0x0A, 0x01, 0xAA}, crc), absl::StatusCode::kInvalidArgument);
}

TEST(XorCacheTest, EvictsUnderBudgetWithSecondChance) {
  const uint64_t entry = kPageBytes + XorCache::kEntryOverheadBytes;
  XorCache cache(4 * entry + entry / 2);  // room for 4
  ASSERT_EQ(cache.capacity(), 4u);
  Page p(kPageBytes);
  for (uint64_t gfn = 0; gfn < 4; ++gfn) {
    p[0] = static_cast<uint8_t>(gfn);
    cache.Put(gfn, p.data());
  }
  EXPECT_EQ(cache.size(), 4u);
  // Touch 0 and 2: 1 is the first unreferenced one the hand meets.
  ASSERT_NE(cache.Lookup(0), nullptr);
  ASSERT_NE(cache.Lookup(2), nullptr);
  p[0] = 10;
  cache.Put(10, p.data());
  EXPECT_EQ(cache.size(), 4u);
  EXPECT_EQ(cache.evictions(), 1u);
  EXPECT_EQ(cache.Lookup(1), nullptr);
  ASSERT_NE(cache.Lookup(0), nullptr);
  EXPECT_EQ(cache.Lookup(0)[0], 0);
  EXPECT_EQ(cache.Lookup(10)[0], 10);
  // Many more inserts never exceed the capacity.
  for (uint64_t gfn = 100; gfn < 1000; ++gfn) {
    p[0] = static_cast<uint8_t>(gfn);
    cache.Put(gfn, p.data());
    ASSERT_LE(cache.size(), 4u);
    const uint8_t* got = cache.Lookup(gfn);
    ASSERT_NE(got, nullptr);
    ASSERT_EQ(got[0], static_cast<uint8_t>(gfn));
  }
  EXPECT_LE(cache.allocated_bytes(), 256 * kPageBytes);  // one chunk
  // Update in place, erase, clear.
  p[0] = 0x77;
  cache.Put(999, p.data());
  EXPECT_EQ(cache.Lookup(999)[0], 0x77);
  cache.Erase(999);
  EXPECT_EQ(cache.Lookup(999), nullptr);
  cache.Put(5, p.data());
  EXPECT_NE(cache.Lookup(5), nullptr);
  cache.Clear();
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.Lookup(5), nullptr);
  for (uint64_t gfn = 0; gfn < 10; ++gfn) cache.Put(gfn, p.data());
  EXPECT_EQ(cache.size(), 4u);
}

TEST(XorCacheTest, ZeroBudgetCachesNothing) {
  XorCache cache(1000);
  Page p(kPageBytes, 1);
  cache.Put(1, p.data());
  EXPECT_EQ(cache.Lookup(1), nullptr);
  EXPECT_EQ(cache.size(), 0u);
}

}  // namespace
}  // namespace ferry::migration::codec
