#include "agent/migration/codec/crc32c.h"

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace ferry::migration::codec {
namespace {

TEST(Crc32cTest, CheckValues) {
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(Crc32cPortable(0, "123456789", 9), 0xE3069283u);
  EXPECT_EQ(Crc32c("", 0), 0u);
  // RFC 3720 (iSCSI) B.4: 32 bytes of zeros, of 0xFF.
  std::vector<uint8_t> z(32, 0), f(32, 0xFF);
  EXPECT_EQ(Crc32c(z.data(), z.size()), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(f.data(), f.size()), 0x62A8AB43u);
}

TEST(Crc32cTest, HardwareMatchesPortableAtEveryShape) {
  if (!Crc32cHardwareAvailable()) GTEST_SKIP() << "no SSE4.2 on this CPU";
  const uint32_t seed = 12345;
  std::mt19937 rng(seed);
  std::vector<uint8_t> buf(3 * 4096 * 3 + 64);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  for (size_t len : {0, 1, 7, 8, 9, 63, 4096, 12287, 12288, 12289, 24576,
                     24577, 36864, 36869}) {
    for (size_t off : {0, 1, 3, 8}) {
      if (off + len > buf.size()) continue;
      SCOPED_TRACE(testing::Message() << "len " << len << " off " << off);
      EXPECT_EQ(Crc32cHardware(0, buf.data() + off, len),
                Crc32cPortable(0, buf.data() + off, len));
      EXPECT_EQ(Crc32cHardware(0xDEADBEEF, buf.data() + off, len),
                Crc32cPortable(0xDEADBEEF, buf.data() + off, len));
    }
  }
}

TEST(Crc32cTest, ContinuationEqualsOneShot) {
  std::mt19937 rng(7);
  std::vector<uint8_t> buf(100000);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  const uint32_t whole = Crc32c(buf.data(), buf.size());
  for (size_t cut : {0, 1, 4096, 12288, 50001, 99999}) {
    uint32_t c = Crc32c(buf.data(), cut);
    c = Crc32c(c, buf.data() + cut, buf.size() - cut);
    EXPECT_EQ(c, whole) << "cut " << cut;
  }
  EXPECT_EQ(Crc32cPortable(0, buf.data(), buf.size()), whole);
}

}  // namespace
}  // namespace ferry::migration::codec
