// Shared by the fuzz target (codec_fuzz.cc), its corpus replay test and the
// seed-corpus generator: the small guest memory the decoder writes into and
// the input format of each mode.
//
// Input: byte 0 picks the mode (% 3):
//   0  the rest is a serialized PageBatch, applied as is;
//   1  a well-formed header built from the next bytes, the rest as payload
//      (reaches the decompressors and the XOR decoder past the CRC):
//        flags:u8  bits 0-1 compression (0,3 NONE, 1 LZ4, 2 ZSTD), bit 2
//                  "harness compresses" (payload given uncompressed)
//        nruns:u8  (1 + n % 8 runs), then per run 5 bytes:
//          page:u8  gpa = (bit 7 ? slot 1 : slot 0) + (page & 0x3F) pages
//                   (slots have 16 pages: higher indices are outside)
//          count:u8 1 + count % 4 pages
//          enc:u8   encoding = enc % 4; bit 7 set: payload_bytes below is
//                   used as is, else the natural size (0, count*4096, or
//                   the u16 for XOR)
//          bytes:u16 little-endian
//        payload: the remaining bytes. Uncompressed (NONE or harness
//        compresses): padded or cut to the declared size and CRC'd. Raw
//        compressed: sent as is; the CRC is right if it happens to
//        decompress to the declared size.
//   2  differential: the bytes shape source pages over three rounds; the
//      encoder's batches are applied to the destination, which must end up
//      identical (options from byte 1: compression, XOR on/off).
// Every mode checks that a refused batch left memory untouched.
#ifndef FERRY_AGENT_MIGRATION_CODEC_CODEC_FUZZ_H_
#define FERRY_AGENT_MIGRATION_CODEC_CODEC_FUZZ_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "mmu/guest_memory.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace ferry::migration::codec::fuzz {

// Two 64 KiB slots: [0, 64K) and [1M, 1M + 64K).
inline constexpr uint64_t kSlotBytes = 64 * 1024;
inline constexpr uint64_t kSlot1Gpa = 1 << 20;
inline constexpr uint64_t kPagesPerSlot = kSlotBytes / 4096;

std::unique_ptr<mmu::GuestMemory> MakeMemory();
// The destination's content at the start of every input: zero, patterned
// and text-like pages, deterministic.
void ResetMemory(mmu::GuestMemory* m);

}  // namespace ferry::migration::codec::fuzz

#endif  // FERRY_AGENT_MIGRATION_CODEC_CODEC_FUZZ_H_
