#include "agent/migration/codec/codec.h"

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "agent/migration/codec/crc32c.h"
#include "agent/migration/codec/xor_delta.h"
#include "gtest/gtest.h"
#include "mmu/guest_memory.h"
#include "proto/migration.pb.h"

namespace ferry::migration::codec {
namespace {

using ::ferry::v1::COMPRESSION_AUTO;
using ::ferry::v1::COMPRESSION_LZ4;
using ::ferry::v1::COMPRESSION_NONE;
using ::ferry::v1::COMPRESSION_ZSTD;
using ::ferry::v1::PAGE_ENCODING_RAW;
using ::ferry::v1::PAGE_ENCODING_XOR_DELTA;
using ::ferry::v1::PAGE_ENCODING_ZERO;
using ::ferry::v1::PageBatch;
using mmu::GuestMemory;
using mmu::kPageSize;

constexpr uint64_t kMiB = 1 << 20;
// Two 4 MiB slots with a hole between them: [0, 4M) and [8M, 12M).
constexpr uint64_t kSlot1Gpa = 8 * kMiB;

std::unique_ptr<GuestMemory> MakeMemory() {
  mmu::GuestMemoryLayout layout;
  layout.slots = {{0, 0, 4 * kMiB}, {1, kSlot1Gpa, 4 * kMiB}};
  absl::StatusOr<std::unique_ptr<GuestMemory>> m = GuestMemory::Create(layout);
  EXPECT_TRUE(m.ok()) << m.status();
  return std::move(m).value();
}

uint64_t TestSeed() {
  const uint64_t seed = std::random_device{}();
  std::printf("random seed %llu\n", static_cast<unsigned long long>(seed));
  return seed;
}

enum class Fill { kZero, kRandom, kText, kMixed };

void FillPage(uint8_t* p, Fill f, std::mt19937_64& rng) {
  switch (f) {
    case Fill::kZero:
      std::memset(p, 0, kPageSize);
      return;
    case Fill::kRandom:
      for (size_t i = 0; i < kPageSize; i += 8) {
        const uint64_t v = rng();
        std::memcpy(p + i, &v, 8);
      }
      return;
    case Fill::kText: {
      static const char* kWords[] = {"alpha ", "beta ", "0x1234 ", "42 ",
                                     "page\n", "kvm "};
      size_t i = 0;
      while (i < kPageSize) {
        const char* w = kWords[rng() % 6];
        for (; *w && i < kPageSize; ++w) p[i++] = static_cast<uint8_t>(*w);
      }
      return;
    }
    case Fill::kMixed: {
      const uint64_t r = rng() % 4;
      FillPage(p, r == 0 ? Fill::kZero : r == 1 ? Fill::kRandom : Fill::kText,
               rng);
      return;
    }
  }
}

void FillRange(GuestMemory* m, uint64_t gpa, uint64_t pages, Fill f,
               std::mt19937_64& rng) {
  uint8_t* p = *m->GpaToHva(gpa, pages * kPageSize);
  for (uint64_t i = 0; i < pages; ++i) FillPage(p + i * kPageSize, f, rng);
}

// Changes `fraction` of the bytes of each page (scattered bytes).
void Mutate(GuestMemory* m, uint64_t gpa, uint64_t pages, double fraction,
            std::mt19937_64& rng) {
  uint8_t* p = *m->GpaToHva(gpa, pages * kPageSize);
  const int n = static_cast<int>(kPageSize * fraction);
  for (uint64_t i = 0; i < pages; ++i) {
    for (int k = 0; k < n; ++k) {
      p[i * kPageSize + rng() % kPageSize] ^= static_cast<uint8_t>(1 + rng() % 255);
    }
  }
}

std::vector<uint8_t> Snapshot(const GuestMemory& m) {
  std::vector<uint8_t> out;
  for (const mmu::Memslot& s : m.slots()) {
    out.insert(out.end(), s.hva, s.hva + s.size);
  }
  return out;
}

mmu::PageRun PagesAt(const GuestMemory& m, uint64_t gpa, uint64_t pages) {
  mmu::Memslot s = *m.FindSlot(gpa);
  mmu::PageRun r;
  r.slot = s.slot;
  r.first_page = (gpa - s.gpa) / kPageSize;
  r.npages = pages;
  r.gpa = gpa;
  return r;
}

std::vector<mmu::PageRun> WholeMemory(const GuestMemory& m) {
  std::vector<mmu::PageRun> runs;
  for (const mmu::Memslot& s : m.slots()) runs.push_back(PagesAt(m, s.gpa, s.npages()));
  return runs;
}

// Encodes the pass, sends every batch through the wire format, applies it.
std::vector<PageBatch> Transfer(PageBatchEncoder& enc, EncodePass pass,
                                PageBatchDecoder& dec) {
  std::vector<PageBatch> sent;
  absl::Status s = enc.EncodeAll(&pass, [&](PageBatch& b) {
    std::string wire;
    EXPECT_TRUE(b.SerializeToString(&wire));
    EXPECT_LT(wire.size(), 1.25 * kMiB);
    PageBatch received;
    EXPECT_TRUE(received.ParseFromString(wire));
    EXPECT_NE(received.compression(), COMPRESSION_AUTO);
    EXPECT_LE(received.uncompressed_size_bytes(), kMaxBatchPayloadBytes);
    EXPECT_LE(received.runs_size(), kMaxRunsPerBatch);
    sent.push_back(received);
    return dec.Apply(received);
  });
  EXPECT_TRUE(s.ok()) << s;
  return sent;
}

EncoderOptions Options(Compression c, bool xor_delta) {
  EncoderOptions o;
  o.compression.mode = c;
  o.compression.default_link_bytes_per_s = 50e6;  // AUTO compresses
  o.xor_delta = xor_delta;
  o.xor_cache_bytes = 16 * kMiB;
  return o;
}

class RoundTripTest
    : public testing::TestWithParam<std::tuple<Compression, bool>> {};

TEST_P(RoundTripTest, RoundsOfMixedPagesArriveIntact) {
  const auto [comp, xor_delta] = GetParam();
  const uint64_t seed = TestSeed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  auto src = MakeMemory();
  auto dst = MakeMemory();
  FillRange(src.get(), 0, 1024, Fill::kMixed, rng);
  FillRange(src.get(), kSlot1Gpa, 1024, Fill::kMixed, rng);

  PageBatchEncoder enc(src.get(), Options(comp, xor_delta));
  PageBatchDecoder dec(dst.get(), {});
  const std::vector<mmu::PageRun> all = WholeMemory(*src);
  Transfer(enc, EncodePass::FirstRound(all), dec);
  ASSERT_EQ(Snapshot(*src), Snapshot(*dst));
  EXPECT_GT(enc.stats().pages_zero_skipped, 300u);  // ~25% of 2048 pages

  // Round 1: pages re-sent (they enter the cache), round 2..3: small
  // changes, some pages zeroed, some re-randomised.
  std::vector<mmu::PageRun> dirty = {PagesAt(*src, 100 * kPageSize, 300),
                                     PagesAt(*src, kSlot1Gpa + 7 * kPageSize, 50),
                                     PagesAt(*src, 4 * kMiB - 10 * kPageSize, 10)};
  for (int round = 1; round <= 3; ++round) {
    for (const mmu::PageRun& r : dirty) {
      Mutate(src.get(), r.gpa, r.npages, round == 1 ? 0.0 : 0.02, rng);
    }
    FillRange(src.get(), 120 * kPageSize, 3, Fill::kZero, rng);
    FillRange(src.get(), 130 * kPageSize, 3, Fill::kRandom, rng);
    Transfer(enc, EncodePass::LaterRound(dirty), dec);
    ASSERT_EQ(Snapshot(*src), Snapshot(*dst)) << "round " << round;
  }
  const CodecStats& es = enc.stats();
  const CodecStats& ds = dec.stats();
  EXPECT_EQ(es.pages_raw, ds.pages_raw);
  EXPECT_EQ(es.pages_zero, ds.pages_zero);
  EXPECT_EQ(es.pages_xor, ds.pages_xor);
  EXPECT_EQ(es.payload_bytes, ds.payload_bytes);
  EXPECT_EQ(es.wire_bytes, ds.wire_bytes);
  EXPECT_GT(es.pages_zero, 0u);
  EXPECT_GT(es.pages_raw, 0u);
  if (xor_delta) {
    EXPECT_GT(es.pages_xor, 300u);
  } else {
    EXPECT_EQ(es.pages_xor, 0u);
  }
  if (comp == COMPRESSION_NONE) {
    EXPECT_EQ(es.batches_none, es.batches);
  } else if (comp == COMPRESSION_LZ4) {
    EXPECT_GT(es.batches_lz4, 0u);
    EXPECT_EQ(es.batches_zstd, 0u);
  } else if (comp == COMPRESSION_ZSTD) {
    EXPECT_GT(es.batches_zstd, 0u);
    EXPECT_EQ(es.batches_lz4, 0u);
  }
  if (comp != COMPRESSION_NONE) {
    EXPECT_GT(es.compression_ratio(), 1.1);
  }
  EXPECT_GT(es.total_ns, 0);
  EXPECT_GE(es.max_batch_ns, es.last_batch_ns);
}

INSTANTIATE_TEST_SUITE_P(
    AllEncodings, RoundTripTest,
    testing::Combine(testing::Values(COMPRESSION_NONE, COMPRESSION_LZ4,
                                     COMPRESSION_ZSTD, COMPRESSION_AUTO),
                     testing::Bool()),
    [](const auto& info) {
      return absl::StrFormat(
          "%s%s", ::ferry::v1::Compression_Name(std::get<0>(info.param)),
          std::get<1>(info.param) ? "_xor" : "");
    });

TEST(EncoderTest, PageKindsBecomeRunsOfOneEncoding) {
  std::mt19937_64 rng(1);
  auto src = MakeMemory();
  auto dst = MakeMemory();
  // zero zero raw raw raw zero raw | gap | raw
  FillRange(src.get(), 2 * kPageSize, 3, Fill::kRandom, rng);
  FillRange(src.get(), 6 * kPageSize, 1, Fill::kRandom, rng);
  FillRange(src.get(), 20 * kPageSize, 1, Fill::kRandom, rng);
  PageBatchEncoder enc(src.get(), Options(COMPRESSION_NONE, false));
  std::vector<mmu::PageRun> runs = {PagesAt(*src, 0, 7), PagesAt(*src, 20 * kPageSize, 1)};
  EncodePass pass(runs);
  PageBatch b;
  ASSERT_TRUE(*enc.NextBatch(&pass, &b));
  ASSERT_EQ(b.runs_size(), 5);
  const struct {
    uint64_t gpa;
    uint32_t pages;
    ::ferry::v1::PageEncoding enc;
  } want[] = {{0, 2, PAGE_ENCODING_ZERO},
              {2 * kPageSize, 3, PAGE_ENCODING_RAW},
              {5 * kPageSize, 1, PAGE_ENCODING_ZERO},
              {6 * kPageSize, 1, PAGE_ENCODING_RAW},
              {20 * kPageSize, 1, PAGE_ENCODING_RAW}};
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(b.runs(i).gpa(), want[i].gpa) << i;
    EXPECT_EQ(b.runs(i).page_count(), want[i].pages) << i;
    EXPECT_EQ(b.runs(i).encoding(), want[i].enc) << i;
    EXPECT_EQ(b.runs(i).payload_bytes(),
              want[i].enc == PAGE_ENCODING_RAW ? want[i].pages * kPageSize : 0);
  }
  EXPECT_EQ(b.uncompressed_size_bytes(), 5 * kPageSize);
  EXPECT_EQ(b.payload_crc32c(), Crc32c(b.payload().data(), b.payload().size()));
  EXPECT_EQ(b.round(), 0u);
  EXPECT_EQ(b.sequence(), 0u);
  EXPECT_FALSE(*enc.NextBatch(&pass, &b));
  EXPECT_TRUE(pass.done());
  // An all-zero round-0 pass produces no batch at all.
  std::vector<mmu::PageRun> zeros = {PagesAt(*src, kSlot1Gpa, 100)};
  EncodePass z = EncodePass::FirstRound(zeros);
  EXPECT_FALSE(*enc.NextBatch(&z, &b));
  EXPECT_EQ(enc.stats().pages_zero_skipped, 100u);
}

TEST(EncoderTest, PayloadCapIsExactlyOneMiB) {
  std::mt19937_64 rng(2);
  auto src = MakeMemory();
  FillRange(src.get(), 0, 512, Fill::kRandom, rng);
  PageBatchEncoder enc(src.get(), Options(COMPRESSION_NONE, false));
  // 256 raw pages = 1 MiB: one batch. 257: two.
  for (uint64_t pages : {256, 257}) {
    std::vector<mmu::PageRun> runs = {PagesAt(*src, 0, pages)};
    EncodePass pass(runs);
    std::vector<uint32_t> sizes;
    ASSERT_TRUE(enc.EncodeAll(&pass, [&](PageBatch& b) {
                     sizes.push_back(b.uncompressed_size_bytes());
                     return absl::OkStatus();
                   }).ok());
    if (pages == 256) {
      EXPECT_EQ(sizes, std::vector<uint32_t>{1 << 20});
    } else {
      EXPECT_EQ(sizes, (std::vector<uint32_t>{1 << 20, 4096}));
    }
  }
}

TEST(EncoderTest, RunCapSplitsBatches) {
  std::mt19937_64 rng(3);
  auto src = MakeMemory();
  auto dst = MakeMemory();
  // Alternate zero and random pages: every page is its own run. 1000 runs
  // fit 4096, so lower the cap to 100 to see the split (the real cap is
  // checked by the decoder test below).
  uint8_t* p = *src->GpaToHva(0, 1000 * kPageSize);
  for (int i = 1; i < 1000; i += 2) FillPage(p + i * kPageSize, Fill::kText, rng);
  EncoderOptions o = Options(COMPRESSION_NONE, false);
  o.max_runs_per_batch = 100;
  PageBatchEncoder enc(src.get(), o);
  PageBatchDecoder dec(dst.get(), {});
  std::vector<mmu::PageRun> runs = {PagesAt(*src, 0, 1000)};
  std::vector<PageBatch> sent = Transfer(enc, EncodePass(runs), dec);
  ASSERT_EQ(sent.size(), 10u);
  for (const PageBatch& b : sent) EXPECT_EQ(b.runs_size(), 100);
  EXPECT_EQ(Snapshot(*src), Snapshot(*dst));
}

TEST(EncoderTest, RejectsRunsOutsideMemoryOrOffStream) {
  auto src = MakeMemory();
  PageBatchEncoder enc(src.get(), Options(COMPRESSION_NONE, false));
  PageBatch b;
  mmu::PageRun hole = PagesAt(*src, 0, 1);
  hole.gpa = 5 * kMiB;
  std::vector<mmu::PageRun> runs = {hole};
  EncodePass pass(runs);
  EXPECT_EQ(enc.NextBatch(&pass, &b).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<mmu::PageRun> crossing = {PagesAt(*src, 4 * kMiB - kPageSize, 2)};
  EncodePass pass2(crossing);
  EXPECT_EQ(enc.NextBatch(&pass2, &b).status().code(),
            absl::StatusCode::kInvalidArgument);

  EncoderOptions o = Options(COMPRESSION_NONE, false);
  o.route = {1, 2};
  PageBatchEncoder enc1(src.get(), o);
  std::vector<mmu::PageRun> s0 = {PagesAt(*src, 0, 1)};
  EncodePass p0(s0);
  EXPECT_EQ(enc1.NextBatch(&p0, &b).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<mmu::PageRun> s1 = {PagesAt(*src, 2 * kMiB, 512)};
  EncodePass p1(s1);
  EXPECT_TRUE(enc1.NextBatch(&p1, &b).ok());
}

TEST(EncoderTest, SplitRunsByStreamRoutesByStripe) {
  auto src = MakeMemory();
  // [1M, 5M) of slot 0 would cross stripes 0,1,2; slot 0 ends at 4M so use
  // [1M, 4M) + slot 1's [8M, 9M).
  std::vector<mmu::PageRun> runs = {PagesAt(*src, kMiB, 768),
                                    PagesAt(*src, kSlot1Gpa, 256)};
  auto per = SplitRunsByStream(runs, 2);
  ASSERT_EQ(per.size(), 2u);
  // stripe 0 [0,2M) -> stream 0: [1M,2M); stripe 1 [2M,4M) -> stream 1;
  // stripe 4 [8M,10M) -> stream 0.
  ASSERT_EQ(per[0].size(), 2u);
  ASSERT_EQ(per[1].size(), 1u);
  EXPECT_EQ(per[0][0].gpa, kMiB);
  EXPECT_EQ(per[0][0].npages, 256u);
  EXPECT_EQ(per[0][1].gpa, kSlot1Gpa);
  EXPECT_EQ(per[1][0].gpa, 2 * kMiB);
  EXPECT_EQ(per[1][0].npages, 512u);
  EXPECT_EQ(per[1][0].first_page, 512u);
  EXPECT_EQ(SplitRunsByStream(runs, 1)[0], runs);
}

TEST(EncoderTest, XorDeltaUsesTheCacheAndResetForgetsIt) {
  const uint64_t seed = TestSeed();
  std::mt19937_64 rng(seed);
  auto src = MakeMemory();
  auto dst = MakeMemory();
  FillRange(src.get(), 0, 64, Fill::kRandom, rng);
  PageBatchEncoder enc(src.get(), Options(COMPRESSION_NONE, true));
  PageBatchDecoder dec(dst.get(), {});
  std::vector<mmu::PageRun> runs = {PagesAt(*src, 0, 64)};
  Transfer(enc, EncodePass::FirstRound(runs), dec);  // not cached
  EXPECT_EQ(enc.xor_cache().size(), 0u);
  Transfer(enc, EncodePass::LaterRound(runs), dec);  // raw, cached
  EXPECT_EQ(enc.stats().pages_xor, 0u);
  EXPECT_EQ(enc.xor_cache().size(), 64u);
  Mutate(src.get(), 0, 64, 0.01, rng);
  auto sent = Transfer(enc, EncodePass::LaterRound(runs), dec);
  EXPECT_EQ(enc.stats().pages_xor, 64u);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_LT(sent[0].uncompressed_size_bytes(), 64 * 200u);
  EXPECT_EQ(Snapshot(*src), Snapshot(*dst));
  // Half the page changed: the delta does not pay, RAW instead.
  Mutate(src.get(), 0, 1, 0.9, rng);
  Transfer(enc, EncodePass::LaterRound(absl::MakeConstSpan(runs)), dec);
  EXPECT_GE(enc.stats().xor_too_large, 1u);
  EXPECT_EQ(Snapshot(*src), Snapshot(*dst));
  // Zeroed pages leave the cache.
  FillRange(src.get(), 0, 4, Fill::kZero, rng);
  Transfer(enc, EncodePass::LaterRound(runs), dec);
  EXPECT_EQ(enc.xor_cache().size(), 60u);
  // After a reset everything goes RAW again.
  enc.ResetXorCache();
  const uint64_t raw_before = enc.stats().pages_raw;
  Mutate(src.get(), 16 * kPageSize, 48, 0.01, rng);
  Transfer(enc, EncodePass::LaterRound(runs), dec);
  EXPECT_EQ(enc.stats().pages_raw - raw_before, 60u);
  EXPECT_EQ(Snapshot(*src), Snapshot(*dst));
}

TEST(EncoderTest, CacheStaysWithinBudget) {
  std::mt19937_64 rng(5);
  auto src = MakeMemory();
  auto dst = MakeMemory();
  FillRange(src.get(), 0, 1024, Fill::kText, rng);
  EncoderOptions o = Options(COMPRESSION_NONE, true);
  o.xor_cache_bytes = 100 * (kPageSize + XorCache::kEntryOverheadBytes);
  PageBatchEncoder enc(src.get(), o);
  PageBatchDecoder dec(dst.get(), {});
  std::vector<mmu::PageRun> runs = {PagesAt(*src, 0, 1024)};
  for (int round = 1; round <= 3; ++round) {
    Mutate(src.get(), 0, 1024, 0.01, rng);
    Transfer(enc, EncodePass::LaterRound(runs), dec);
    EXPECT_LE(enc.xor_cache().size(), 100u);
    EXPECT_LE(enc.xor_cache().allocated_bytes(), 256 * kPageSize);
  }
  EXPECT_GT(enc.xor_cache().evictions(), 0u);
  EXPECT_EQ(Snapshot(*src), Snapshot(*dst));
}

// ---------------------------------------------------------------------------
// Decoder: corrupt input returns the right error and writes nothing.
// ---------------------------------------------------------------------------

class CorruptTest : public testing::Test {
 protected:
  void SetUp() override {
    std::mt19937_64 rng(11);
    src_ = MakeMemory();
    dst_ = MakeMemory();
    FillRange(src_.get(), 0, 64, Fill::kText, rng);
    FillRange(src_.get(), kSlot1Gpa, 8, Fill::kRandom, rng);
    // The destination holds an older copy: XOR deltas apply to it.
    PageBatchEncoder warm(src_.get(), Options(COMPRESSION_NONE, false));
    PageBatchDecoder wdec(dst_.get(), {});
    std::vector<mmu::PageRun> runs = {PagesAt(*src_, 0, 64),
                                      PagesAt(*src_, kSlot1Gpa, 8)};
    Transfer(warm, EncodePass(runs), wdec);
    before_ = Snapshot(*dst_);
  }

  // A valid batch of the given compression: 8 raw pages, 4 zero pages.
  PageBatch Valid(Compression c) {
    std::mt19937_64 rng(12);
    FillRange(src_.get(), 64 * kPageSize, 8, Fill::kText, rng);
    PageBatchEncoder enc(src_.get(), Options(c, false));
    std::vector<mmu::PageRun> runs = {PagesAt(*src_, 64 * kPageSize, 8),
                                      PagesAt(*src_, 200 * kPageSize, 4)};
    EncodePass pass(runs);
    PageBatch b;
    EXPECT_TRUE(*enc.NextBatch(&pass, &b));
    EXPECT_EQ(b.compression(), c);
    return b;
  }

  // A valid XOR batch against what dst holds (pages 0..7 changed a little).
  PageBatch ValidXor() {
    std::mt19937_64 rng(13);
    PageBatchEncoder enc(src_.get(), Options(COMPRESSION_NONE, true));
    std::vector<mmu::PageRun> runs = {PagesAt(*src_, 0, 8)};
    EncodePass first(runs);
    PageBatch b;
    EXPECT_TRUE(*enc.NextBatch(&first, &b));  // raw: fills the cache
    // (not applied: dst already has this content)
    Mutate(src_.get(), 0, 8, 0.01, rng);
    EncodePass second(runs);
    EXPECT_TRUE(*enc.NextBatch(&second, &b));
    EXPECT_EQ(b.runs_size(), 1);
    EXPECT_EQ(b.runs(0).encoding(), PAGE_ENCODING_XOR_DELTA);
    return b;
  }

  void ExpectRejected(const PageBatch& b, absl::StatusCode code,
                      DecoderOptions o = {}) {
    PageBatchDecoder dec(dst_.get(), o);
    absl::Status s = dec.Apply(b);
    EXPECT_EQ(s.code(), code) << s;
    EXPECT_TRUE(Snapshot(*dst_) == before_) << "memory was written";
    EXPECT_EQ(dec.stats().rejected, 1u);
    EXPECT_EQ(dec.stats().batches, 0u);
  }

  std::unique_ptr<GuestMemory> src_, dst_;
  std::vector<uint8_t> before_;
};

TEST_F(CorruptTest, ValidBatchesApply) {
  for (Compression c : {COMPRESSION_NONE, COMPRESSION_LZ4, COMPRESSION_ZSTD}) {
    PageBatchDecoder dec(dst_.get(), {});
    EXPECT_TRUE(dec.Apply(Valid(c)).ok());
  }
  PageBatchDecoder dec(dst_.get(), {});
  EXPECT_TRUE(dec.Apply(ValidXor()).ok());
  EXPECT_EQ(Snapshot(*src_), Snapshot(*dst_));
}

TEST_F(CorruptTest, FlippedCrc) {
  for (Compression c : {COMPRESSION_NONE, COMPRESSION_LZ4, COMPRESSION_ZSTD}) {
    PageBatch b = Valid(c);
    b.set_payload_crc32c(b.payload_crc32c() ^ 0x10);
    ExpectRejected(b, absl::StatusCode::kDataLoss);
  }
}

TEST_F(CorruptTest, FlippedPayloadBit) {
  PageBatch b = Valid(COMPRESSION_NONE);
  (*b.mutable_payload())[5000] ^= 4;
  ExpectRejected(b, absl::StatusCode::kDataLoss);
}

TEST_F(CorruptTest, TruncatedPayload) {
  for (Compression c : {COMPRESSION_NONE, COMPRESSION_LZ4, COMPRESSION_ZSTD}) {
    PageBatch b = Valid(c);
    b.mutable_payload()->resize(b.payload().size() - 1);
    ExpectRejected(b, absl::StatusCode::kDataLoss);
  }
}

TEST_F(CorruptTest, RunOutsideMemory) {
  PageBatch b = Valid(COMPRESSION_NONE);
  b.mutable_runs(0)->set_gpa(5 * kMiB);  // the hole between slots
  ExpectRejected(b, absl::StatusCode::kInvalidArgument);
  b = Valid(COMPRESSION_NONE);
  b.mutable_runs(0)->set_gpa(4 * kMiB - 4 * kPageSize);  // crosses slot end
  ExpectRejected(b, absl::StatusCode::kInvalidArgument);
  b = Valid(COMPRESSION_NONE);
  b.mutable_runs(0)->set_gpa(64 * kPageSize + 1);  // unaligned
  ExpectRejected(b, absl::StatusCode::kInvalidArgument);
  b = Valid(COMPRESSION_NONE);
  b.mutable_runs(1)->set_page_count(0);
  ExpectRejected(b, absl::StatusCode::kInvalidArgument);
}

TEST_F(CorruptTest, OverflowingGpa) {
  PageBatch b = Valid(COMPRESSION_NONE);
  b.mutable_runs(1)->set_gpa(~uint64_t{0} - 4095);  // page aligned, wraps
  ExpectRejected(b, absl::StatusCode::kInvalidArgument);
  b = Valid(COMPRESSION_NONE);
  b.mutable_runs(1)->set_page_count(0xFFFFFFFF);
  ExpectRejected(b, absl::StatusCode::kInvalidArgument);
}

TEST_F(CorruptTest, OverlappingRuns) {
  PageBatch b = Valid(COMPRESSION_NONE);
  b.mutable_runs(1)->set_gpa(b.runs(0).gpa() + 7 * kPageSize);
  ExpectRejected(b, absl::StatusCode::kInvalidArgument);
}

TEST_F(CorruptTest, WrongDeclaredSizes) {
  PageBatch b = Valid(COMPRESSION_NONE);
  b.set_uncompressed_size_bytes(b.uncompressed_size_bytes() + 1);
  ExpectRejected(b, absl::StatusCode::kInvalidArgument);
  b = Valid(COMPRESSION_NONE);
  b.mutable_runs(0)->set_payload_bytes(b.runs(0).payload_bytes() - 1);
  ExpectRejected(b, absl::StatusCode::kInvalidArgument);
  b = Valid(COMPRESSION_NONE);
  b.mutable_runs(1)->set_payload_bytes(1);  // ZERO with bytes
  ExpectRejected(b, absl::StatusCode::kInvalidArgument);
  // Payload longer than declared.
  b = Valid(COMPRESSION_NONE);
  b.mutable_payload()->push_back('x');
  ExpectRejected(b, absl::StatusCode::kDataLoss);
}

TEST_F(CorruptTest, CapsAtTheBoundary) {
  // Exactly 1 MiB is accepted (256 raw pages).
  {
    std::mt19937_64 rng(14);
    FillRange(src_.get(), 0, 256, Fill::kRandom, rng);
    PageBatchEncoder enc(src_.get(), Options(COMPRESSION_NONE, false));
    std::vector<mmu::PageRun> runs = {PagesAt(*src_, 0, 256)};
    EncodePass pass(runs);
    PageBatch b;
    ASSERT_TRUE(*enc.NextBatch(&pass, &b));
    ASSERT_EQ(b.uncompressed_size_bytes(), kMaxBatchPayloadBytes);
    // One byte over: refused before anything else is looked at.
    PageBatch over = b;
    over.set_uncompressed_size_bytes(kMaxBatchPayloadBytes + 1);
    over.mutable_runs(0)->set_payload_bytes(kMaxBatchPayloadBytes + 1);
    over.mutable_payload()->push_back('x');
    ExpectRejected(over, absl::StatusCode::kInvalidArgument);
    PageBatchDecoder dec(dst_.get(), {});
    EXPECT_TRUE(dec.Apply(b).ok());
    before_ = Snapshot(*dst_);
  }
}

TEST(CapsTest, MaxRunsEncodedAndAcceptedOneMoreRefused) {
  // 64 MiB in one slot; 5000 isolated dirty pages (every other page), all
  // zero: each is its own ZERO run, so the run cap is what splits batches.
  mmu::GuestMemoryLayout layout;
  layout.slots = {{0, 0, 64 * kMiB}};
  auto src = std::move(GuestMemory::Create(layout)).value();
  auto dst = std::move(GuestMemory::Create(layout)).value();
  uint8_t* d = *dst->GpaToHva(0, 64 * kMiB);
  std::memset(d, 0x5A, 64 * kMiB);  // so ZERO runs have something to do
  std::vector<mmu::PageRun> runs;
  for (uint64_t i = 0; i < 5000; ++i) runs.push_back(PagesAt(*src, 2 * i * kPageSize, 1));
  PageBatchEncoder enc(src.get(), Options(COMPRESSION_NONE, false));
  PageBatchDecoder dec(dst.get(), {});
  std::vector<PageBatch> sent = Transfer(enc, EncodePass(runs), dec);
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].runs_size(), static_cast<int>(kMaxRunsPerBatch));
  EXPECT_EQ(sent[1].runs_size(), 5000 - static_cast<int>(kMaxRunsPerBatch));
  for (uint64_t i = 0; i < 5000; ++i) {
    ASSERT_TRUE(IsZeroPage(d + 2 * i * kPageSize)) << i;
    ASSERT_EQ(d[(2 * i + 1) * kPageSize], 0x5A) << i;
  }
  // 4097 runs: refused, nothing written.
  std::memset(d, 0x5A, 64 * kMiB);
  PageBatch over = sent[0];
  *over.add_runs() = sent[1].runs(0);
  ASSERT_EQ(over.runs_size(), static_cast<int>(kMaxRunsPerBatch) + 1);
  absl::Status s = dec.Apply(over);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  for (uint64_t i = 0; i < 10000; ++i) ASSERT_EQ(d[i * kPageSize], 0x5A) << i;
}

TEST_F(CorruptTest, DecompressionBomb) {
  // 1 MiB of 'a' compressed (a few KiB), declared as 4 KiB: one RAW page.
  const std::string big(kMaxBatchPayloadBytes, 'a');
  for (Compression c : {COMPRESSION_LZ4, COMPRESSION_ZSTD}) {
    Compressor comp;
    std::string z;
    ASSERT_TRUE(comp.Compress(c,
                              absl::MakeConstSpan(
                                  reinterpret_cast<const uint8_t*>(big.data()),
                                  big.size()),
                              &z)
                    .ok());
    PageBatch b;
    b.set_compression(c);
    ::ferry::v1::PageRun* r = b.add_runs();
    r->set_gpa(0);
    r->set_page_count(1);
    r->set_encoding(PAGE_ENCODING_RAW);
    r->set_payload_bytes(kPageSize);
    b.set_uncompressed_size_bytes(kPageSize);
    b.set_payload(z);
    b.set_payload_crc32c(Crc32c(big.data(), kPageSize));
    ExpectRejected(b, absl::StatusCode::kDataLoss);
  }
}

TEST_F(CorruptTest, BadXorStream) {
  PageBatch good = ValidXor();
  // Break the first page's op list: make the first skip run past the page.
  PageBatch b = good;
  std::string& p = *b.mutable_payload();
  p[4] = static_cast<char>(0xFF);
  p[5] = static_cast<char>(0x7F);  // skip 16383
  b.set_payload_crc32c(Crc32c(p.data(), p.size()));
  ExpectRejected(b, absl::StatusCode::kInvalidArgument);
  // Run declares fewer bytes than its pages use (sizes kept consistent).
  b = good;
  b.mutable_runs(0)->set_page_count(7);
  ExpectRejected(b, absl::StatusCode::kInvalidArgument);
  // One more page than the deltas describe.
  b = good;
  b.mutable_runs(0)->set_page_count(9);
  ExpectRejected(b, absl::StatusCode::kInvalidArgument);
  // A literal byte changed, CRC of the payload fixed up: the page CRC
  // catches it. First page: crc(4) skip(1-2) len(1-2) literal...
  b = good;
  std::string& q = *b.mutable_payload();
  size_t at = 4;
  at += (q[at] & 0x80) ? 2 : 1;  // skip
  at += (q[at] & 0x80) ? 2 : 1;  // len
  q[at] ^= 1;
  b.set_payload_crc32c(Crc32c(q.data(), q.size()));
  ExpectRejected(b, absl::StatusCode::kDataLoss);
  // XOR not negotiated.
  DecoderOptions no_xor;
  no_xor.allow_xor_delta = false;
  ExpectRejected(good, absl::StatusCode::kInvalidArgument, no_xor);
  // Base differs from the sender's cache: page CRC mismatch.
  uint8_t* page0 = *dst_->GpaToHva(0, kPageSize);
  page0[17] ^= 1;
  before_ = Snapshot(*dst_);
  ExpectRejected(good, absl::StatusCode::kDataLoss);
}

TEST_F(CorruptTest, HeaderFields) {
  PageBatch b = Valid(COMPRESSION_NONE);
  b.set_compression(COMPRESSION_AUTO);
  ExpectRejected(b, absl::StatusCode::kInvalidArgument);
  b.set_compression(static_cast<Compression>(99));
  ExpectRejected(b, absl::StatusCode::kInvalidArgument);
  b = Valid(COMPRESSION_LZ4);
  DecoderOptions no_lz4;
  no_lz4.allow_lz4 = false;
  ExpectRejected(b, absl::StatusCode::kInvalidArgument, no_lz4);
  b = Valid(COMPRESSION_NONE);
  b.mutable_runs(0)->set_encoding(::ferry::v1::PAGE_ENCODING_UNSPECIFIED);
  ExpectRejected(b, absl::StatusCode::kInvalidArgument);
  PageBatch empty;
  ExpectRejected(empty, absl::StatusCode::kInvalidArgument);
  // Off this stream.
  b = Valid(COMPRESSION_NONE);
  DecoderOptions stream1;
  stream1.route = {1, 2};
  ExpectRejected(b, absl::StatusCode::kInvalidArgument, stream1);
}

}  // namespace
}  // namespace ferry::migration::codec
