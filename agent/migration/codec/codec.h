// The Transfer stream's page codec: dirty page runs -> PageBatch messages
// (PageBatchEncoder, source side) and back into guest memory
// (PageBatchDecoder, destination side). README.md has the wire format.
//
// Thread model: one encoder and one decoder per Transfer stream, each used
// by one thread at a time. A page always travels on stream
// StreamOf(gpa, stream_count) (proto/migration.proto, "Ordering"), so the
// XOR cache, which lives in the encoder, is per stream too.
//
// Per page, the encoder sends (in this order of preference):
//   ZERO       the page is all zero: a flag, no bytes (or nothing at all in
//              a pass with skip_zero_pages, e.g. round 0, where the
//              destination's memory is known to be zero);
//   XOR_DELTA  xor_delta is on, the stream's cache holds the copy last sent
//              for this gfn, and the delta is smaller than xor_max_bytes;
//   RAW        otherwise.
// Consecutive pages with one encoding share a PageRun. A batch closes when
// the next page would take its payload over max_payload_bytes (1 MiB), its
// runs over max_runs_per_batch (4096), its pages with data (RAW + XOR) over
// 256 (= 1 MiB of page contents) or its ZERO pages over
// max_zero_pages_per_batch. The payload is then CRC-32C'd and compressed as
// CompressionSelector decides.
//
// XOR consistency. The encoder's cache must hold exactly what the
// destination holds for each cached gfn. The encoder reads each page ONCE
// into the payload (RAW) or a snapshot (XOR), so what it sends and what it
// caches are the same bytes even while vCPUs write the page; a page sent as
// ZERO (or skipped as zero) leaves the cache. The destination decodes a
// delta against its guest memory, which holds the last copy of that page it
// applied; since the page always travels on the same stream and a stream's
// batches are applied in sequence order, that is the last copy the encoder
// sent -- PROVIDED every batch the encoder produced is applied. When a
// stream breaks, batches after the receiver's applied sequence are lost and
// their pages re-marked dirty: the sender must call ResetXorCache() before
// encoding for the reopened stream (the per-page CRC in every delta turns a
// forgotten reset into DATA_LOSS rather than silent corruption). The
// destination VM must not run (or otherwise write guest memory) while
// batches arrive, which the protocol guarantees until Switchover.
//
// Decoder rule: Apply validates the whole batch first -- header, caps, every
// run's bounds against the memslots, run overlap, declared vs actual sizes,
// decompression to exactly the declared size into a bounded buffer, the
// CRC-32C, every XOR page's format and resulting-page CRC -- and only then
// writes guest memory. A batch that fails returns an error and has written
// nothing. Errors: INVALID_ARGUMENT for a malformed header or run list (the
// sender broke the protocol) and for a malformed XOR stream that passed the
// CRC; DATA_LOSS for payload damage (size mismatch, corrupt compressed data,
// CRC mismatch, XOR page CRC mismatch). Either fails the stream.
#ifndef FERRY_AGENT_MIGRATION_CODEC_CODEC_H_
#define FERRY_AGENT_MIGRATION_CODEC_CODEC_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "agent/migration/codec/compression.h"
#include "agent/migration/codec/xor_cache.h"
#include "mmu/guest_memory.h"
#include "mmu/memslot.h"
#include "proto/migration.pb.h"

namespace ferry::migration::codec {

inline constexpr uint64_t kMaxBatchPayloadBytes =
    ::ferry::v1::WIRE_CONSTANT_MAX_BATCH_PAYLOAD_BYTES;
inline constexpr uint32_t kMaxRunsPerBatch =
    ::ferry::v1::WIRE_CONSTANT_MAX_RUNS_PER_BATCH;
inline constexpr uint64_t kStreamStripeBytes =
    ::ferry::v1::WIRE_CONSTANT_STREAM_STRIPE_BYTES;
// Pages carrying data (RAW + XOR_DELTA) in one batch: at most 1 MiB of page
// contents, so the decoder's work per batch is bounded (a codec rule, not
// yet in the proto).
inline constexpr uint32_t kMaxDataPagesPerBatch =
    kMaxBatchPayloadBytes / mmu::kPageSize;

// Which Transfer stream carries the page at `gpa`.
inline uint32_t StreamOf(uint64_t gpa, uint32_t stream_count) {
  return static_cast<uint32_t>((gpa / kStreamStripeBytes) % stream_count);
}

// Splits runs at stripe boundaries and routes the pieces: result[i] holds
// stream i's runs, in input order. stream_count >= 1.
std::vector<std::vector<mmu::PageRun>> SplitRunsByStream(
    absl::Span<const mmu::PageRun> runs, uint32_t stream_count);

// This codec's stream, for checking that every page is on it. count 0 (or
// 1) checks nothing.
struct StreamRoute {
  uint32_t index = 0;
  uint32_t count = 0;
};

// Counters for progress and metrics; cumulative. Encoder and decoder fill
// the same fields from their side.
struct CodecStats {
  uint64_t batches = 0;
  uint64_t pages_raw = 0;
  uint64_t pages_zero = 0;          // sent as ZERO runs
  uint64_t pages_zero_skipped = 0;  // not sent (skip_zero_pages)
  uint64_t pages_xor = 0;
  uint64_t payload_bytes = 0;  // uncompressed
  uint64_t wire_bytes = 0;     // PageBatch.payload after compression
  uint64_t batches_none = 0;
  uint64_t batches_lz4 = 0;
  uint64_t batches_zstd = 0;
  // Encoder only: XOR cache behaviour.
  uint64_t xor_cache_hits = 0;
  uint64_t xor_cache_misses = 0;
  uint64_t xor_too_large = 0;  // cached, but the delta did not pay: sent RAW
  // Time in Encode/Apply per batch (wall clock, ns); compress_ns is the part
  // spent compressing (encoder) or decompressing (decoder).
  int64_t total_ns = 0;
  int64_t last_batch_ns = 0;
  int64_t max_batch_ns = 0;
  int64_t compress_ns = 0;
  // Decoder only: batches refused.
  uint64_t rejected = 0;

  // payload_bytes / wire_bytes (1.0 when nothing was sent).
  double compression_ratio() const;
};

struct EncoderOptions {
  CompressionSelectorOptions compression;
  // XOR deltas for re-sent pages (MigrationPolicy.xor_delta) and the cache
  // budget (xor_delta_cache_bytes).
  bool xor_delta = false;
  uint64_t xor_cache_bytes = uint64_t{64} << 20;
  // Send a delta only if it is smaller than this (default: half a page).
  uint32_t xor_max_bytes = 2048;
  uint32_t max_zero_pages_per_batch = 16384;  // 64 MiB of zeros
  // Caps; lower them only in tests.
  uint64_t max_payload_bytes = kMaxBatchPayloadBytes;
  uint32_t max_runs_per_batch = kMaxRunsPerBatch;
  StreamRoute route;
};

// One pass over a list of page runs (a round's harvest for this stream) and
// how far the encoder got through it. The runs must outlive the pass.
struct EncodePass {
  explicit EncodePass(absl::Span<const mmu::PageRun> r) : runs(r) {}

  absl::Span<const mmu::PageRun> runs;
  // The destination is known to hold zeros (round 0 into fresh memory):
  // zero pages are skipped instead of sent.
  bool skip_zero_pages = false;
  // Put pages that are not in the XOR cache into it. QEMU skips this in the
  // first full pass: most pages are sent once and would only churn the
  // cache; pages sent again are the ones worth caching.
  bool cache_new_pages = true;

  size_t run = 0;   // cursor: runs[run], page `page` of it
  uint64_t page = 0;
  bool done() const { return run >= runs.size(); }

  // Round 0: skip zero pages, do not cache. Later rounds: neither.
  static EncodePass FirstRound(absl::Span<const mmu::PageRun> r);
  static EncodePass LaterRound(absl::Span<const mmu::PageRun> r);
};

class PageBatchEncoder {
 public:
  // `memory` must outlive the encoder.
  PageBatchEncoder(const mmu::GuestMemory* memory, EncoderOptions opts);
  PageBatchEncoder(const PageBatchEncoder&) = delete;
  PageBatchEncoder& operator=(const PageBatchEncoder&) = delete;

  // Fills *batch (cleared first; reusing one message keeps its payload
  // buffer) with the next batch of the pass: runs, compression, payload,
  // uncompressed_size_bytes, payload_crc32c. round and sequence are left 0
  // for the caller. Returns false, with *batch empty, when the pass has no
  // more pages to send. INVALID_ARGUMENT for a run outside guest memory,
  // not page aligned, or (with a route) not on this stream.
  absl::StatusOr<bool> NextBatch(EncodePass* pass, ::ferry::v1::PageBatch* batch);

  // Convenience: every batch of the pass, in order, handed to `sink`.
  absl::Status EncodeAll(
      EncodePass* pass,
      absl::FunctionRef<absl::Status(::ferry::v1::PageBatch&)> sink);

  // The stream's measured wire rate, for the AUTO compression policy.
  void SetLinkBandwidth(double bytes_per_s) {
    compression_.SetLinkBandwidth(bytes_per_s);
  }
  // Forget every cached page. Required when the stream is reopened (see
  // "XOR consistency" above).
  void ResetXorCache() { cache_.Clear(); }
  // Forget the cached copies of these pages (e.g. the pages of batches
  // known to be lost, when the caller tracks them).
  void InvalidatePages(absl::Span<const mmu::PageRun> runs);

  const CodecStats& stats() const { return stats_; }
  const XorCache& xor_cache() const { return cache_; }
  const CompressionSelector& compression() const { return compression_; }

 private:
  const mmu::GuestMemory* memory_;
  EncoderOptions opts_;
  XorCache cache_;
  CompressionSelector compression_;
  CodecStats stats_;
  std::unique_ptr<uint8_t[]> snapshot_;  // one page
  std::unique_ptr<uint8_t[]> delta_;     // one encoded page
};

struct DecoderOptions {
  StreamRoute route;
  // What Hello negotiated; anything else is refused.
  bool allow_xor_delta = true;
  bool allow_lz4 = true;
  bool allow_zstd = true;
};

class PageBatchDecoder {
 public:
  // `memory` must outlive the decoder.
  PageBatchDecoder(mmu::GuestMemory* memory, DecoderOptions opts);
  PageBatchDecoder(const PageBatchDecoder&) = delete;
  PageBatchDecoder& operator=(const PageBatchDecoder&) = delete;

  // Validates the whole batch, then writes it to guest memory. On error
  // nothing has been written. Does not look at round or sequence (the
  // stream handler orders batches).
  absl::Status Apply(const ::ferry::v1::PageBatch& batch);

  const CodecStats& stats() const { return stats_; }

 private:
  struct Run {
    uint8_t* hva;
    uint64_t gpa;
    uint64_t pages;
    ::ferry::v1::PageEncoding encoding;
    uint64_t offset;  // into the uncompressed payload
    uint64_t bytes;
  };
  absl::Status Validate(const ::ferry::v1::PageBatch& batch,
                        absl::Span<const uint8_t>* payload);

  mmu::GuestMemory* memory_;
  DecoderOptions opts_;
  Decompressor decompressor_;
  CodecStats stats_;
  std::vector<Run> runs_;
  std::vector<std::pair<uint64_t, uint64_t>> extents_;
  std::unique_ptr<uint8_t[]> buffer_;   // kMaxBatchPayloadBytes
  std::unique_ptr<uint8_t[]> scratch_;  // one page
};

}  // namespace ferry::migration::codec

#endif  // FERRY_AGENT_MIGRATION_CODEC_CODEC_H_
