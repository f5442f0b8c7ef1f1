// XOR delta of one 4 KiB page against the copy the receiver holds
// (PAGE_ENCODING_XOR_DELTA), and the zero-page test.
//
// Wire format of one page (all integers little-endian; varints are LEB128,
// at most 2 bytes, so values < 16384):
//
//   page   := crc32c:u32  op+
//   op     := skip:varint  len:varint  xor_bytes[len]
//
//   Starting at offset 0, each op leaves `skip` bytes of the page unchanged,
//   then XORs the next `len` bytes with `xor_bytes` (the XOR of new and old
//   content, so every byte of a literal is what to XOR in, not the new byte).
//   The page ends when the offset reaches exactly 4096. `len` may be 0 only
//   in the op that ends the page (offset + skip == 4096), i.e. an unchanged
//   tail is spelled (tail, 0); a literal that reaches 4096 ends the page with
//   no terminator. crc32c is the CRC-32C of the page's NEW content (after the
//   XOR): the receiver checks it before writing, so a base that differs from
//   the sender's cache (a bug, or a lost batch not re-sent raw) is a
//   DATA_LOSS error instead of silent corruption.
//
//   A run of N XOR pages in a PageBatch is N such pages back to back; the
//   run's payload_bytes is the sum of their lengths, exactly.
//
//   Sizes: an unchanged page is 7 bytes (crc, skip=4096 as 2 bytes, len=0);
//   every op costs 2..4 bytes plus its literal. The encoder merges gaps of
//   fewer than kMinGap unchanged bytes into the surrounding literal (a split
//   costs at least 2 bytes).
//
// Decoding is two-step so a batch can be validated before anything is
// written: ValidateXorPage computes the result (in a scratch page) and checks
// format and CRC; ApplyXorPage then XORs the literals into the page in place
// and touches only the changed bytes.
#ifndef FERRY_AGENT_MIGRATION_CODEC_XOR_DELTA_H_
#define FERRY_AGENT_MIGRATION_CODEC_XOR_DELTA_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace ferry::migration::codec {

inline constexpr size_t kPageBytes = 4096;
// Smallest encoded page (unchanged content).
inline constexpr size_t kXorMinPageBytes = 7;
// Unchanged gaps shorter than this stay inside a literal.
inline constexpr size_t kMinGap = 3;

// True if the page (kPageBytes, any alignment) is all zero. Word at a time,
// returns at the first non-zero word.
bool IsZeroPage(const uint8_t* page);

// Encodes `cur` against `old` (both kPageBytes) into `out`. Returns the
// encoded length, or 0 if it would exceed `max_bytes` (then `out` holds
// garbage); `out` must have room for max_bytes. `cur_crc` is
// Crc32c(cur, kPageBytes), passed in so callers that already have it don't
// pay twice.
size_t EncodeXorPage(const uint8_t* cur, const uint8_t* old, uint32_t cur_crc,
                     uint8_t* out, size_t max_bytes);

// Parses one page's delta from the front of `in` against `base` (the
// receiver's current page), writing the result to `scratch` (kPageBytes;
// may not alias base) and checking its CRC. Returns the bytes consumed.
// INVALID_ARGUMENT on a malformed stream (truncated, varint too long, op
// past the page end, empty op not at the end), DATA_LOSS on a CRC mismatch.
absl::StatusOr<size_t> ValidateXorPage(absl::Span<const uint8_t> in,
                                       const uint8_t* base, uint8_t* scratch);

// Applies a delta that ValidateXorPage accepted against the same `page`
// content, in place. Returns the bytes consumed (same as ValidateXorPage).
size_t ApplyXorPage(const uint8_t* in, uint8_t* page);

}  // namespace ferry::migration::codec

#endif  // FERRY_AGENT_MIGRATION_CODEC_XOR_DELTA_H_
