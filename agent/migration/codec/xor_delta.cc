#include "agent/migration/codec/xor_delta.h"

#include <cstring>

#include "absl/strings/str_format.h"
#include "agent/migration/codec/crc32c.h"

namespace ferry::migration::codec {
namespace {

inline uint64_t Load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

inline size_t VarintLen(size_t v) { return v < 128 ? 1 : 2; }

inline uint8_t* PutVarint(uint8_t* p, size_t v) {
  // v <= kPageBytes < 16384: at most two bytes.
  if (v < 128) {
    *p++ = static_cast<uint8_t>(v);
  } else {
    *p++ = static_cast<uint8_t>(v | 0x80);
    *p++ = static_cast<uint8_t>(v >> 7);
  }
  return p;
}

// Reads a varint of at most two bytes at in[*o]; false if truncated or longer.
inline bool GetVarint(absl::Span<const uint8_t> in, size_t* o, size_t* v) {
  if (*o >= in.size()) return false;
  const uint8_t b0 = in[(*o)++];
  if (!(b0 & 0x80)) {
    *v = b0;
    return true;
  }
  if (*o >= in.size()) return false;
  const uint8_t b1 = in[(*o)++];
  if (b1 & 0x80) return false;
  *v = (b0 & 0x7F) | (size_t{b1} << 7);
  return true;
}

// Unchecked twin of GetVarint for already validated input.
inline size_t GetVarintUnchecked(const uint8_t*& p) {
  const uint8_t b0 = *p++;
  if (!(b0 & 0x80)) return b0;
  return (b0 & 0x7F) | (size_t{*p++} << 7);
}

}  // namespace

bool IsZeroPage(const uint8_t* page) {
  for (size_t i = 0; i < kPageBytes; i += 64) {
    const uint64_t w = Load64(page + i) | Load64(page + i + 8) |
                       Load64(page + i + 16) | Load64(page + i + 24) |
                       Load64(page + i + 32) | Load64(page + i + 40) |
                       Load64(page + i + 48) | Load64(page + i + 56);
    if (w != 0) return false;
  }
  return true;
}

size_t EncodeXorPage(const uint8_t* cur, const uint8_t* old, uint32_t cur_crc,
                     uint8_t* out, size_t max_bytes) {
  if (max_bytes < kXorMinPageBytes) return 0;
  std::memcpy(out, &cur_crc, 4);  // little-endian host
  uint8_t* o = out + 4;
  uint8_t* const o_end = out + max_bytes;
  size_t pos = 0;
  while (true) {
    // Skip unchanged bytes, a word at a time.
    const size_t start = pos;
    while (pos + 8 <= kPageBytes) {
      const uint64_t x = Load64(cur + pos) ^ Load64(old + pos);
      if (x != 0) {
        pos += static_cast<size_t>(__builtin_ctzll(x)) >> 3;
        goto found;
      }
      pos += 8;
    }
    while (pos < kPageBytes && cur[pos] == old[pos]) ++pos;
    if (pos == kPageBytes) {
      const size_t skip = kPageBytes - start;
      if (static_cast<size_t>(o_end - o) < VarintLen(skip) + 1) return 0;
      o = PutVarint(o, skip);
      *o++ = 0;
      return static_cast<size_t>(o - out);
    }
  found:
    // cur[pos] != old[pos]. Extend the literal until kMinGap equal bytes.
    const size_t lit = pos;
    size_t end = pos + 1;
    const size_t room = static_cast<size_t>(o_end - o);
    for (size_t i = end; i < kPageBytes; ++i) {
      if (cur[i] != old[i]) {
        end = i + 1;
        // Literal alone already too big: give up early (bounds the time
        // spent on pages that changed a lot).
        if (end - lit > room) return 0;
      } else if (i + 1 - end >= kMinGap) {
        break;
      }
    }
    const size_t skip = lit - start;
    const size_t len = end - lit;
    if (room < VarintLen(skip) + VarintLen(len) + len) return 0;
    o = PutVarint(o, skip);
    o = PutVarint(o, len);
    for (size_t i = 0; i < len; ++i) o[i] = cur[lit + i] ^ old[lit + i];
    o += len;
    pos = end;
    if (pos == kPageBytes) return static_cast<size_t>(o - out);
  }
}

absl::StatusOr<size_t> ValidateXorPage(absl::Span<const uint8_t> in,
                                       const uint8_t* base, uint8_t* scratch) {
  if (in.size() < 4) {
    return absl::InvalidArgumentError(
        "xor delta: truncated (no room for the page crc)");
  }
  uint32_t crc;
  std::memcpy(&crc, in.data(), 4);
  std::memcpy(scratch, base, kPageBytes);
  size_t o = 4;
  size_t pos = 0;
  while (pos < kPageBytes) {
    size_t skip, len;
    if (!GetVarint(in, &o, &skip) || !GetVarint(in, &o, &len)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "xor delta: truncated or over-long varint at byte %d", o));
    }
    if (skip > kPageBytes - pos) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "xor delta: skip %d at page offset %d runs past the page", skip,
          pos));
    }
    pos += skip;
    if (len == 0) {
      if (pos != kPageBytes) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "xor delta: empty literal at page offset %d (only the final op "
            "may be empty)",
            pos));
      }
      break;
    }
    if (len > kPageBytes - pos) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "xor delta: literal of %d bytes at page offset %d runs past the "
          "page",
          len, pos));
    }
    if (len > in.size() - o) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "xor delta: literal of %d bytes truncated (%d left)", len,
          in.size() - o));
    }
    const uint8_t* lit = in.data() + o;
    for (size_t i = 0; i < len; ++i) scratch[pos + i] ^= lit[i];
    o += len;
    pos += len;
  }
  const uint32_t actual = Crc32c(scratch, kPageBytes);
  if (actual != crc) {
    return absl::DataLossError(absl::StrFormat(
        "xor delta: page crc32c 0x%08x after applying, sender had 0x%08x "
        "(receiver's copy differs from the sender's base)",
        actual, crc));
  }
  return o;
}

size_t ApplyXorPage(const uint8_t* in, uint8_t* page) {
  const uint8_t* p = in + 4;
  size_t pos = 0;
  while (pos < kPageBytes) {
    const size_t skip = GetVarintUnchecked(p);
    const size_t len = GetVarintUnchecked(p);
    pos += skip;
    if (len == 0) break;
    for (size_t i = 0; i < len; ++i) page[pos + i] ^= p[i];
    p += len;
    pos += len;
  }
  return static_cast<size_t>(p - in);
}

}  // namespace ferry::migration::codec
