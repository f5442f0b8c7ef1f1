// On-disk encoding of controller records.
//
// Every record value in the `hosts`, `vms`, `migrations` and `events` column
// families is an envelope around the serialized proto:
//
//   offset size  field
//        0    4  magic      "FRec" (0x63655246 little-endian)
//        4    2  version    kEnvelopeVersion
//        6    2  kind       RecordKind (which proto follows)
//        8    4  length     payload bytes
//       12    4  crc32c     of the payload (Castagnoli, masked like LevelDB)
//       16    n  payload    the proto, SerializeToString
//
// Why an envelope when RocksDB already checksums its blocks: RocksDB's
// checksums only cover bytes RocksDB wrote; they say nothing about a value
// written under the wrong key or column family, written by an older build
// with another layout, or mangled by a tool (ldb put). The kind and CRC turn
// each of those into a DATA_LOSS naming the key instead of a proto that
// parses "successfully" into garbage. The version lets a later build change
// the layout and still read this one (reader accepts current and previous).
//
// Keys: records are keyed by their name (Host.name, Vm.spec.name,
// Migration.id) in bytewise order, which is the stable List order. Events are
// keyed by their sequence as 8 big-endian bytes so that key order is
// sequence order.
#ifndef FERRY_CONTROLLER_STORE_CODEC_H_
#define FERRY_CONTROLLER_STORE_CODEC_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message_lite.h"

namespace ferry::controller {

inline constexpr uint32_t kEnvelopeMagic = 0x63655246;  // "FRec"
inline constexpr uint16_t kEnvelopeVersion = 1;
inline constexpr size_t kEnvelopeHeaderBytes = 16;
// Far above any real record; a larger length field means corruption.
inline constexpr uint32_t kMaxRecordBytes = 64 << 20;

enum class RecordKind : uint16_t {
  kHost = 1,
  kVm = 2,
  kMigration = 3,
  kEvent = 4,
};

absl::string_view RecordKindName(RecordKind kind);

// CRC-32C (Castagnoli) of `data`, software table implementation.
uint32_t Crc32c(absl::string_view data);

// Wraps a serialized proto in the envelope.
std::string EncodeRecord(RecordKind kind, const google::protobuf::MessageLite& msg);

// Checks the envelope and parses the payload into `msg`. Errors are
// DATA_LOSS and say what was wrong; the caller adds the key.
absl::Status DecodeRecord(RecordKind kind, absl::string_view value,
                          google::protobuf::MessageLite* msg);

// Fixed-width little-endian integers for the `meta` column family.
std::string EncodeFixed64(uint64_t v);
std::string EncodeFixed32(uint32_t v);
// DATA_LOSS unless `value` is exactly 8 (resp. 4) bytes.
absl::Status DecodeFixed64(absl::string_view value, uint64_t* v);
absl::Status DecodeFixed32(absl::string_view value, uint32_t* v);

// Event keys: big-endian so bytewise order is numeric order.
std::string EventKey(uint64_t sequence);
absl::Status ParseEventKey(absl::string_view key, uint64_t* sequence);

}  // namespace ferry::controller

#endif  // FERRY_CONTROLLER_STORE_CODEC_H_
