// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as carried in
// PageBatch.payload_crc32c and in every XOR-delta page (xor_delta.h).
//
// Uses the SSE4.2 crc32 instruction when the CPU has it (checked once at
// run time with CPUID; the binary itself needs no -msse4.2), otherwise a
// slicing-by-8 table. Both give identical results; the tests cross-check
// them. Abseil 20220623 (Debian's) has no absl/crc.
#ifndef FERRY_AGENT_MIGRATION_CODEC_CRC32C_H_
#define FERRY_AGENT_MIGRATION_CODEC_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace ferry::migration::codec {

// CRC-32C of data[0, n), continuing from `crc` (the value of an earlier call
// over the preceding bytes; 0 for a fresh start). Standard check value:
// Crc32c(0, "123456789", 9) == 0xE3069283.
uint32_t Crc32c(uint32_t crc, const void* data, size_t n);
inline uint32_t Crc32c(const void* data, size_t n) { return Crc32c(0, data, n); }

// The two implementations, for tests and benchmarks. Crc32cHardware must only
// be called when Crc32cHardwareAvailable().
uint32_t Crc32cPortable(uint32_t crc, const void* data, size_t n);
uint32_t Crc32cHardware(uint32_t crc, const void* data, size_t n);
bool Crc32cHardwareAvailable();

}  // namespace ferry::migration::codec

#endif  // FERRY_AGENT_MIGRATION_CODEC_CRC32C_H_
