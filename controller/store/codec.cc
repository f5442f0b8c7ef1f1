#include "controller/store/codec.h"

#include <array>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ferry::controller {
namespace {

// Reflected Castagnoli polynomial.
constexpr uint32_t kCrc32cPoly = 0x82F63B78;
// LevelDB/RocksDB mask: a CRC stored next to the data it covers is masked so
// that the CRC of a string containing embedded CRCs is not degenerate.
constexpr uint32_t kMaskDelta = 0xa282ead8;

std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kCrc32cPoly : c >> 1;
    table[i] = c;
  }
  return table;
}

uint32_t Mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + kMaskDelta; }

void PutLe(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

uint64_t GetLe(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) {
    v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  }
  return v;
}

}  // namespace

absl::string_view RecordKindName(RecordKind kind) {
  switch (kind) {
    case RecordKind::kHost:
      return "Host";
    case RecordKind::kVm:
      return "Vm";
    case RecordKind::kMigration:
      return "Migration";
    case RecordKind::kEvent:
      return "Event";
  }
  return "unknown";
}

uint32_t Crc32c(absl::string_view data) {
  static const std::array<uint32_t, 256> kTable = MakeCrcTable();
  uint32_t crc = 0xFFFFFFFF;
  for (unsigned char b : data) crc = kTable[(crc ^ b) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFF;
}

std::string EncodeRecord(RecordKind kind,
                         const google::protobuf::MessageLite& msg) {
  std::string payload = msg.SerializeAsString();
  std::string out;
  out.reserve(kEnvelopeHeaderBytes + payload.size());
  PutLe(&out, kEnvelopeMagic, 4);
  PutLe(&out, kEnvelopeVersion, 2);
  PutLe(&out, static_cast<uint16_t>(kind), 2);
  PutLe(&out, payload.size(), 4);
  PutLe(&out, Mask(Crc32c(payload)), 4);
  out += payload;
  return out;
}

absl::Status DecodeRecord(RecordKind kind, absl::string_view value,
                          google::protobuf::MessageLite* msg) {
  if (value.size() < kEnvelopeHeaderBytes) {
    return absl::DataLossError(absl::StrCat(
        "record is ", value.size(), " bytes, shorter than the ",
        kEnvelopeHeaderBytes, "-byte envelope header"));
  }
  const char* p = value.data();
  const uint32_t magic = GetLe(p, 4);
  const uint16_t version = GetLe(p + 4, 2);
  const uint16_t stored_kind = GetLe(p + 6, 2);
  const uint32_t length = GetLe(p + 8, 4);
  const uint32_t stored_crc = GetLe(p + 12, 4);
  if (magic != kEnvelopeMagic) {
    return absl::DataLossError(
        absl::StrFormat("bad envelope magic 0x%08x (want 0x%08x)", magic,
                        kEnvelopeMagic));
  }
  // Only version 1 exists; when 2 arrives, accept 1 and 2 here.
  if (version != kEnvelopeVersion) {
    return absl::DataLossError(absl::StrCat(
        "envelope version ", version, " not readable by this build (reads ",
        kEnvelopeVersion, ")"));
  }
  if (stored_kind != static_cast<uint16_t>(kind)) {
    return absl::DataLossError(absl::StrCat(
        "record holds kind ", stored_kind, ", expected ", RecordKindName(kind)));
  }
  if (length > kMaxRecordBytes ||
      length != value.size() - kEnvelopeHeaderBytes) {
    return absl::DataLossError(absl::StrCat(
        "envelope length ", length, " does not match the ",
        value.size() - kEnvelopeHeaderBytes, " payload bytes present"));
  }
  absl::string_view payload = value.substr(kEnvelopeHeaderBytes);
  const uint32_t crc = Mask(Crc32c(payload));
  if (crc != stored_crc) {
    return absl::DataLossError(absl::StrFormat(
        "crc32c mismatch (stored 0x%08x, computed 0x%08x)", stored_crc, crc));
  }
  if (!msg->ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return absl::DataLossError(absl::StrCat(
        "payload does not parse as ", RecordKindName(kind)));
  }
  return absl::OkStatus();
}

std::string EncodeFixed64(uint64_t v) {
  std::string out;
  PutLe(&out, v, 8);
  return out;
}

std::string EncodeFixed32(uint32_t v) {
  std::string out;
  PutLe(&out, v, 4);
  return out;
}

absl::Status DecodeFixed64(absl::string_view value, uint64_t* v) {
  if (value.size() != 8) {
    return absl::DataLossError(
        absl::StrCat("expected 8 bytes, found ", value.size()));
  }
  *v = GetLe(value.data(), 8);
  return absl::OkStatus();
}

absl::Status DecodeFixed32(absl::string_view value, uint32_t* v) {
  if (value.size() != 4) {
    return absl::DataLossError(
        absl::StrCat("expected 4 bytes, found ", value.size()));
  }
  *v = static_cast<uint32_t>(GetLe(value.data(), 4));
  return absl::OkStatus();
}

std::string EventKey(uint64_t sequence) {
  std::string key(8, '\0');
  for (int i = 0; i < 8; ++i) key[i] = static_cast<char>(sequence >> (56 - 8 * i));
  return key;
}

absl::Status ParseEventKey(absl::string_view key, uint64_t* sequence) {
  if (key.size() != 8) {
    return absl::DataLossError(
        absl::StrCat("event key is ", key.size(), " bytes, expected 8"));
  }
  uint64_t v = 0;
  for (unsigned char b : key) v = (v << 8) | b;
  *sequence = v;
  return absl::OkStatus();
}

}  // namespace ferry::controller
