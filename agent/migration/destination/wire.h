// Wire helpers both migration ends share (agent/migration/source depends on
// this target): the page-to-stream mapping, CRC-32C, the memory digest of
// Switchover, and the receiver's batch decoder.
//
// Decoder seam: the engine talks to a BatchDecoder. RawBatchDecoder here
// understands PAGE_ENCODING_RAW / _ZERO with COMPRESSION_NONE, which is all
// RawBatchEncoder (source/batch_encoder.h) produces. When agent/migration/
// codec lands its validating decoder (XOR deltas, lz4/zstd) plugs in behind
// the same interface and Hello starts advertising its encodings.
#ifndef FERRY_AGENT_MIGRATION_DESTINATION_WIRE_H_
#define FERRY_AGENT_MIGRATION_DESTINATION_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mmu/guest_memory.h"
#include "proto/migration.pb.h"

namespace ferry::migration {

inline constexpr uint64_t kStripeBytes =
    v1::WIRE_CONSTANT_STREAM_STRIPE_BYTES;
inline constexpr uint32_t kMaxBatchPayloadBytes =
    v1::WIRE_CONSTANT_MAX_BATCH_PAYLOAD_BYTES;
inline constexpr uint32_t kMaxRunsPerBatch = v1::WIRE_CONSTANT_MAX_RUNS_PER_BATCH;
inline constexpr uint32_t kMaxStreams = 16;

// migration.proto "Ordering": a page always travels on this stream.
inline uint32_t StreamForGpa(uint64_t gpa, uint32_t stream_count) {
  return static_cast<uint32_t>((gpa / kStripeBytes) % stream_count);
}

// CRC-32C (Castagnoli). SSE4.2 when the CPU has it, else a table.
// TODO(codec): use agent/migration/codec/crc32c.h once it has a BUILD.
uint32_t Crc32c(uint32_t crc, const void* data, size_t n);

// Pages [first, result) of `slot` starting at `page` that are holes in the
// memfd (never written, so zero) — found with lseek(SEEK_DATA) instead of
// reading them, which would fault in (and allocate) untouched guest RAM.
// Returns `page` itself when that page is backed. Racy by nature: use it
// only where a later write is caught by dirty tracking or the VM is paused.
uint64_t HoleEnd(const mmu::GuestMemory& memory, const mmu::Memslot& slot,
                 uint64_t page);

// The layout as the wire describes it (VmState.memory, Hello.memory).
v1::MemoryLayout LayoutOf(const mmu::GuestMemory& memory);
// OK if `got` describes exactly `want`; otherwise FAILED_PRECONDITION
// naming the first difference.
absl::Status CompareLayouts(const v1::MemoryLayout& want,
                            const v1::MemoryLayout& got);

// DIGEST_ALGORITHM_CRC32C_OF_PAGES over `memory`. FULL: every page.
// SAMPLED: `sample_pages` pages chosen from all of memory by `seed` (the
// same choice on both sides). NONE: an empty digest. Read racily; call it
// with the vCPUs paused.
v1::MemoryDigest ComputeDigest(const mmu::GuestMemory& memory,
                               v1::MemoryVerification coverage, uint64_t seed,
                               uint32_t sample_pages);
// OK if equal; DATA_LOSS naming the first memslot that differs.
absl::Status CompareDigests(const v1::MemoryDigest& want,
                            const v1::MemoryDigest& got);

class BatchDecoder {
 public:
  virtual ~BatchDecoder() = default;
  // Validates `batch` completely (structure, ranges, stripe, CRC) and only
  // then writes it into `memory`. Nothing is written on error:
  // INVALID_ARGUMENT for a malformed or out-of-range batch, DATA_LOSS for
  // a checksum mismatch, UNIMPLEMENTED for an encoding it does not know.
  // Returns the number of pages applied.
  virtual absl::StatusOr<uint64_t> Apply(const v1::PageBatch& batch,
                                         uint32_t stream_index,
                                         uint32_t stream_count,
                                         mmu::GuestMemory& memory) = 0;
};

// RAW and ZERO runs, COMPRESSION_NONE.
class RawBatchDecoder : public BatchDecoder {
 public:
  absl::StatusOr<uint64_t> Apply(const v1::PageBatch& batch,
                                 uint32_t stream_index, uint32_t stream_count,
                                 mmu::GuestMemory& memory) override;
};

}  // namespace ferry::migration

#endif  // FERRY_AGENT_MIGRATION_DESTINATION_WIRE_H_
