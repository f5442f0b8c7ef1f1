// BatchEncoder: guest pages -> one PageBatch (runs, payload, CRC-32C).
//
// The engine's seam to the wire codec. RawBatchEncoder sends data pages RAW
// and all-zero pages as ZERO runs (or not at all in round 0, when the
// destination's fresh memory is already zero), uncompressed.
// TODO(codec): when agent/migration/codec exposes its PageBatch encoder
// (XOR deltas, lz4/zstd AUTO), wrap it in this interface and advertise its
// compressions / xor_delta in Hello.
#ifndef FERRY_AGENT_MIGRATION_SOURCE_BATCH_ENCODER_H_
#define FERRY_AGENT_MIGRATION_SOURCE_BATCH_ENCODER_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "mmu/guest_memory.h"
#include "mmu/memslot.h"
#include "proto/migration.pb.h"

namespace ferry::migration {

// At most this many pages per batch: WIRE_CONSTANT_MAX_BATCH_PAYLOAD_BYTES.
inline constexpr uint64_t kBatchPages = 256;

struct EncodeStats {
  uint64_t data_pages = 0;     // RAW (or XOR) pages
  uint64_t zero_pages = 0;     // sent as ZERO runs or skipped
  uint64_t payload_bytes = 0;  // uncompressed
};

class BatchEncoder {
 public:
  virtual ~BatchEncoder() = default;
  // Reads the pages of `runs` (<= kBatchPages in total) from `memory` and
  // fills out->runs/payload/compression/uncompressed_size/crc; the caller
  // sets round and sequence. With skip_zero, zero pages are left out (the
  // batch may end up with no runs: then there is nothing to send). Each
  // page is copied first and then tested, so what is classified is what
  // is sent even while vCPUs write (a torn copy is re-sent: the write that
  // tore it is in the dirty log).
  virtual absl::Status Encode(absl::Span<const mmu::PageRun> runs,
                              const mmu::GuestMemory& memory, bool skip_zero,
                              v1::PageBatch* out, EncodeStats* stats) = 0;
  // What Hello must announce for this encoder.
  virtual std::vector<v1::Compression> compressions() const = 0;
  virtual bool xor_delta() const = 0;
};

class RawBatchEncoder : public BatchEncoder {
 public:
  absl::Status Encode(absl::Span<const mmu::PageRun> runs,
                      const mmu::GuestMemory& memory, bool skip_zero,
                      v1::PageBatch* out, EncodeStats* stats) override;
  std::vector<v1::Compression> compressions() const override {
    return {v1::COMPRESSION_NONE};
  }
  bool xor_delta() const override { return false; }
};

}  // namespace ferry::migration

#endif  // FERRY_AGENT_MIGRATION_SOURCE_BATCH_ENCODER_H_
