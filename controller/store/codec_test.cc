#include "controller/store/codec.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/controller.pb.h"

namespace ferry::controller {
namespace {

using ::testing::HasSubstr;

TEST(Crc32cTest, KnownVector) {
  // RFC 3720 B.4: CRC-32C of "123456789".
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(""), 0u);
}

TEST(CodecTest, RoundTrip) {
  v1::Host host;
  host.set_name("h1");
  host.set_resource_version(7);
  std::string value = EncodeRecord(RecordKind::kHost, host);
  v1::Host out;
  ASSERT_TRUE(DecodeRecord(RecordKind::kHost, value, &out).ok());
  EXPECT_EQ(out.name(), "h1");
  EXPECT_EQ(out.resource_version(), 7u);
}

TEST(CodecTest, EveryDamageIsDataLoss) {
  v1::Host host;
  host.set_name("h1");
  const std::string good = EncodeRecord(RecordKind::kHost, host);
  v1::Host out;
  struct Case {
    std::string name;
    std::string value;
    RecordKind kind;
    std::string want;
  } cases[] = {
      {"short", good.substr(0, 5), RecordKind::kHost, "shorter than"},
      {"magic", "X" + good.substr(1), RecordKind::kHost, "magic"},
      {"kind", good, RecordKind::kVm, "expected Vm"},
      {"truncated", good.substr(0, good.size() - 1), RecordKind::kHost,
       "length"},
      {"flipped", good.substr(0, good.size() - 1) +
                      static_cast<char>(good.back() ^ 1),
       RecordKind::kHost, "crc32c mismatch"},
      {"empty", "", RecordKind::kHost, "shorter than"},
  };
  for (const Case& c : cases) {
    absl::Status s = DecodeRecord(c.kind, c.value, &out);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << c.name;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.want)) << c.name;
  }
}

TEST(CodecTest, EventKeysSortNumerically) {
  EXPECT_LT(EventKey(9), EventKey(10));
  EXPECT_LT(EventKey(255), EventKey(256));
  uint64_t seq = 0;
  ASSERT_TRUE(ParseEventKey(EventKey(0x0102030405060708), &seq).ok());
  EXPECT_EQ(seq, 0x0102030405060708u);
  EXPECT_EQ(ParseEventKey("abc", &seq).code(), absl::StatusCode::kDataLoss);
}

TEST(CodecTest, Fixed) {
  uint64_t v64 = 0;
  uint32_t v32 = 0;
  ASSERT_TRUE(DecodeFixed64(EncodeFixed64(1ull << 40), &v64).ok());
  EXPECT_EQ(v64, 1ull << 40);
  ASSERT_TRUE(DecodeFixed32(EncodeFixed32(42), &v32).ok());
  EXPECT_EQ(v32, 42u);
  EXPECT_EQ(DecodeFixed32("12345", &v32).code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace ferry::controller
