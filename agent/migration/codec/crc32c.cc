#include "agent/migration/codec/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace ferry::migration::codec {
namespace {

constexpr uint32_t kPoly = 0x82F63B78;  // reflected Castagnoli

// Slicing-by-8 tables: kTables[k][b] is the CRC of byte b followed by k zero
// bytes.
using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables MakeTables() {
  Tables t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t c = b;
    for (int i = 0; i < 8; ++i) c = (c >> 1) ^ ((c & 1) ? kPoly : 0);
    t[0][b] = c;
  }
  for (int k = 1; k < 8; ++k) {
    for (uint32_t b = 0; b < 256; ++b) {
      t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFF];
    }
  }
  return t;
}

constexpr Tables kTables = MakeTables();

uint64_t Load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace

uint32_t Crc32cPortable(uint32_t crc, const void* data, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~crc;
  while (n >= 8) {
    const uint64_t v = Load64(p) ^ c;  // little-endian host (x86-64, arm64)
    c = kTables[7][v & 0xFF] ^ kTables[6][(v >> 8) & 0xFF] ^
        kTables[5][(v >> 16) & 0xFF] ^ kTables[4][(v >> 24) & 0xFF] ^
        kTables[3][(v >> 32) & 0xFF] ^ kTables[2][(v >> 40) & 0xFF] ^
        kTables[1][(v >> 48) & 0xFF] ^ kTables[0][v >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) c = (c >> 8) ^ kTables[0][(c ^ *p++) & 0xFF];
  return ~c;
}

#if defined(__x86_64__)

// Three independent crc32q chains over adjacent 4 KiB blocks hide the
// instruction's 3-cycle latency (one chain runs at ~1/3 of the throughput).
// The register is linear over GF(2), so state(s, A||B) =
// Z_|B|(state(s, A)) ^ state(0, B), where Z_n is "feed n zero bytes": a
// 32x32 bit matrix, precomputed once for n = 4 KiB and applied with eight
// nibble tables.
namespace {

constexpr size_t kBlock = 4096;  // bytes per chain per stripe (3 chains)

// op[k][nib] = effect of the shift operator on nibble value nib placed at
// bit position 4k of the CRC register.
struct ShiftOp {
  uint32_t t[8][16];
  uint32_t Apply(uint32_t crc) const {
    uint32_t r = 0;
    for (int k = 0; k < 8; ++k) r ^= t[k][(crc >> (4 * k)) & 0xF];
    return r;
  }
};

// Raw (non-inverted) register update by one zero byte.
uint32_t ZeroByte(uint32_t c) { return (c >> 8) ^ kTables[0][c & 0xFF]; }

ShiftOp MakeShiftOp(size_t nbytes) {
  // The register transform for nbytes zero bytes is linear over GF(2):
  // compute it on each basis vector.
  uint32_t basis[32];
  for (int b = 0; b < 32; ++b) {
    uint32_t c = uint32_t{1} << b;
    for (size_t i = 0; i < nbytes; ++i) c = ZeroByte(c);
    basis[b] = c;
  }
  ShiftOp op{};
  for (int k = 0; k < 8; ++k) {
    for (uint32_t nib = 0; nib < 16; ++nib) {
      uint32_t r = 0;
      for (int j = 0; j < 4; ++j) {
        if (nib & (1u << j)) r ^= basis[4 * k + j];
      }
      op.t[k][nib] = r;
    }
  }
  return op;
}

const ShiftOp& ShiftBlock() {
  static const ShiftOp op = MakeShiftOp(kBlock);
  return op;
}

__attribute__((target("sse4.2"))) uint64_t Chain(uint64_t c, const uint8_t* p,
                                                 size_t n) {
  while (n >= 8) {
    c = _mm_crc32_u64(c, Load64(p));
    p += 8;
    n -= 8;
  }
  while (n--) c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
  return c;
}

}  // namespace

__attribute__((target("sse4.2"))) uint32_t Crc32cHardware(uint32_t crc,
                                                          const void* data,
                                                          size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint64_t c = static_cast<uint32_t>(~crc);
  if (n >= 3 * kBlock) {
    const ShiftOp& shift = ShiftBlock();
    while (n >= 3 * kBlock) {
      uint64_t c0 = c, c1 = 0, c2 = 0;
      const uint8_t* p0 = p;
      const uint8_t* p1 = p + kBlock;
      const uint8_t* p2 = p + 2 * kBlock;
      for (size_t i = 0; i < kBlock; i += 8) {
        c0 = _mm_crc32_u64(c0, Load64(p0 + i));
        c1 = _mm_crc32_u64(c1, Load64(p1 + i));
        c2 = _mm_crc32_u64(c2, Load64(p2 + i));
      }
      // reg(A||B) = shift_len(B)(reg(A)) ^ reg_from_zero(B)
      uint32_t r = shift.Apply(static_cast<uint32_t>(c0)) ^
                   static_cast<uint32_t>(c1);
      r = shift.Apply(r) ^ static_cast<uint32_t>(c2);
      c = r;
      p += 3 * kBlock;
      n -= 3 * kBlock;
    }
  }
  c = Chain(c, p, n);
  return ~static_cast<uint32_t>(c);
}

bool Crc32cHardwareAvailable() {
  static const bool available = __builtin_cpu_supports("sse4.2");
  return available;
}

#else  // !__x86_64__

uint32_t Crc32cHardware(uint32_t crc, const void* data, size_t n) {
  return Crc32cPortable(crc, data, n);
}
bool Crc32cHardwareAvailable() { return false; }

#endif

uint32_t Crc32c(uint32_t crc, const void* data, size_t n) {
  static const bool hw = Crc32cHardwareAvailable();
  return hw ? Crc32cHardware(crc, data, n) : Crc32cPortable(crc, data, n);
}

}  // namespace ferry::migration::codec
