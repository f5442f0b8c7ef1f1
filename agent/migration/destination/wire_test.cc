#include "agent/migration/destination/wire.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>
#include <unistd.h>

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

TEST(WireTest, HoleEndAndDataEndSplitMemoryIntoExactExtents) {
  // With shmem THP forced on, a write backs a whole 2 MiB folio and the
  // extents below are 512 pages wide (still correct, but not this test).
  if (FILE* f = std::fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "r")) {
    char buf[256] = {};
    const size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
    std::fclose(f);
    const std::string mode(buf, n);
    if (mode.find("[always]") != std::string::npos ||
        mode.find("[force]") != std::string::npos) {
      GTEST_SKIP() << "shmem THP is " << mode << "; memfd extents are 2 MiB here";
    }
  }
  std::unique_ptr<mmu::GuestMemory> m = Memory(64 << 20);
  const mmu::Memslot& slot = m->slots()[0];
  const std::vector<uint8_t> one(4096, 1);
  // Data at pages 3 and 700..701 (inside one 2 MiB stripe with holes
  // around them); everything else never written.
  for (uint64_t page : {3ull, 700ull, 701ull}) {
    ASSERT_TRUE(m->Write(slot.gpa + page * 4096, one).ok());
  }
  EXPECT_EQ(HoleEnd(*m, slot, 0), 3u);
  EXPECT_EQ(HoleEnd(*m, slot, 3), 3u);  // backed: no hole here
  EXPECT_EQ(DataEnd(*m, slot, 3), 4u);  // one page, not the whole stripe
  EXPECT_EQ(HoleEnd(*m, slot, 4), 700u);
  EXPECT_EQ(DataEnd(*m, slot, 700), 702u);
  EXPECT_EQ(HoleEnd(*m, slot, 702), slot.npages());  // no data after
}

TEST(WireTest, FullDigestSpeedOfPopulatedMemory) {
  auto layout = mmu::DefaultLayout(64 << 20);
  ASSERT_TRUE(layout.ok());
  layout->populate = true;
  auto m = mmu::GuestMemory::Create(*layout);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(ComputeDigest(**m, v1::MEMORY_VERIFICATION_FULL, 0, 0).memslots(0).pages(),
            (64u << 20) / 4096);
  const auto t0 = std::chrono::steady_clock::now();
  v1::MemoryDigest d = ComputeDigest(**m, v1::MEMORY_VERIFICATION_FULL, 0, 0);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("full digest of 64 MiB populated: %.2f ms\n", s * 1e3);
  for (int rep = 0; rep < 2; ++rep) {
    const auto t1 = std::chrono::steady_clock::now();
    d = ComputeDigest(**m, v1::MEMORY_VERIFICATION_FULL, 0, 0);
    std::printf("  again: %.2f ms\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count() * 1e3);
  }
  for (int rep = 0; rep < 2; ++rep) {
    const auto t1 = std::chrono::steady_clock::now();
    d = ComputeDigest(**m, v1::MEMORY_VERIFICATION_SAMPLED, 77 + rep, 4096);
    std::printf("  sampled 4096: %.2f ms\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count() * 1e3);
  }
  const auto t2 = std::chrono::steady_clock::now();
  uint64_t h = 0;
  for (int i = 0; i < 10; ++i) h += lseek((*m)->memfd(), i << 21, SEEK_DATA);
  std::printf("  10 lseek: %.3f ms %lu\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t2).count() * 1e3, h);

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

TEST(WireTest, SampledDigestOfColdPopulatedGib) {
  auto layout = mmu::DefaultLayout(1 << 30);
  ASSERT_TRUE(layout.ok());
  layout->populate = true;
  auto t = std::chrono::steady_clock::now();
  auto m = mmu::GuestMemory::Create(*layout);
  ASSERT_TRUE(m.ok()) << m.status();
  std::printf("populate 1 GiB: %.2f ms\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count() * 1e3);
  for (uint32_t n : {1024u, 4096u, 4096u}) {
    t = std::chrono::steady_clock::now();
    ComputeDigest(**m, v1::MEMORY_VERIFICATION_SAMPLED, 5, n);
    std::printf("sampled %u cold: %.2f ms\n", n, std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count() * 1e3);
  }
}

}  // namespace
}  // namespace ferry::migration
