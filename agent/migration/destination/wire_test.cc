#include "agent/migration/destination/wire.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace ferry::migration {
namespace {

std::unique_ptr<mmu::GuestMemory> Memory(uint64_t bytes) {
  auto layout = mmu::DefaultLayout(bytes);
  EXPECT_TRUE(layout.ok());
  auto m = mmu::GuestMemory::Create(*layout);
  EXPECT_TRUE(m.ok()) << m.status();
  return std::move(*m);
}

TEST(WireTest, Crc32cCheckValueAndSpeed) {
  EXPECT_EQ(Crc32c(0, "123456789", 9), 0xE3069283u);
  EXPECT_EQ(Crc32c(Crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
  std::vector<uint8_t> buf(64 << 20, 0x5a);
  const auto t0 = std::chrono::steady_clock::now();
  uint32_t c = Crc32c(0, buf.data(), buf.size());
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("crc32c: %.0f MB/s (%08x)\n", buf.size() / s / 1e6, c);
}

TEST(WireTest, DigestMatchesCopiesAndNamesTheSlot) {
  auto a = Memory(8 << 20), b = Memory(8 << 20);
  ASSERT_TRUE(a->Write(0x5000, {reinterpret_cast<const uint8_t*>("hello"), 5}).ok());
  ASSERT_TRUE(b->Write(0x5000, {reinterpret_cast<const uint8_t*>("hello"), 5}).ok());
  for (auto cov : {v1::MEMORY_VERIFICATION_FULL, v1::MEMORY_VERIFICATION_SAMPLED}) {
    EXPECT_TRUE(CompareDigests(ComputeDigest(*a, cov, 7, 2048),
                               ComputeDigest(*b, cov, 7, 2048)).ok());
  }
  ASSERT_TRUE(b->Write(0x5001, {reinterpret_cast<const uint8_t*>("X"), 1}).ok());
  absl::Status s = CompareDigests(ComputeDigest(*a, v1::MEMORY_VERIFICATION_FULL, 0, 0),
                                  ComputeDigest(*b, v1::MEMORY_VERIFICATION_FULL, 0, 0));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("memslot 0"), std::string::npos) << s;
}

v1::PageBatch RawBatch(uint64_t gpa, uint8_t fill) {
  v1::PageBatch b;
  b.set_sequence(1);
  v1::PageRun* r = b.add_runs();
  r->set_gpa(gpa);
  r->set_page_count(1);
  r->set_encoding(v1::PAGE_ENCODING_RAW);
  r->set_payload_bytes(4096);
  b.set_payload(std::string(4096, static_cast<char>(fill)));
  b.set_compression(v1::COMPRESSION_NONE);
  b.set_uncompressed_size_bytes(4096);
  b.set_payload_crc32c(Crc32c(0, b.payload().data(), 4096));
  return b;
}

TEST(WireTest, DecoderAppliesValidAndRejectsBadBatchesUntouched) {
  auto m = Memory(8 << 20);
  RawBatchDecoder d;
  ASSERT_TRUE(d.Apply(RawBatch(0x3000, 7), 0, 1, *m).ok());
  uint8_t got = 0;
  ASSERT_TRUE(m->Read(0x3000, {&got, 1}).ok());
  EXPECT_EQ(got, 7);

  v1::PageBatch outside = RawBatch(8 << 20, 1);  // past the end
  EXPECT_EQ(d.Apply(outside, 0, 1, *m).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::PageBatch other_stream = RawBatch(2 << 20, 1);  // stripe 1 of 2
  EXPECT_EQ(d.Apply(other_stream, 0, 2, *m).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::PageBatch corrupt = RawBatch(0x3000, 9);
  (*corrupt.mutable_payload())[100] ^= 1;
  EXPECT_EQ(d.Apply(corrupt, 0, 1, *m).status().code(), absl::StatusCode::kDataLoss);
  ASSERT_TRUE(m->Read(0x3000, {&got, 1}).ok());
  EXPECT_EQ(got, 7) << "a rejected batch must not be applied";
  v1::PageBatch lying = RawBatch(0x3000, 9);
  lying.mutable_runs(0)->set_payload_bytes(100);
  EXPECT_FALSE(d.Apply(lying, 0, 1, *m).ok());
  v1::PageBatch unaligned = RawBatch(0x3001, 9);
  EXPECT_FALSE(d.Apply(unaligned, 0, 1, *m).ok());
}

}  // namespace
}  // namespace ferry::migration
