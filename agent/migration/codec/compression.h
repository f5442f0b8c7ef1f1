// Batch compression: the lz4 / zstd(level 1) wrappers, the bounded
// decompressors, and the AUTO policy.
//
// The policy is a pure function of explicit inputs (ChooseCompression); the
// state that feeds it (moving averages of each compressor's speed and ratio
// on this stream's data, refreshed by probing a sample now and then) lives
// in CompressionSelector.
#ifndef FERRY_AGENT_MIGRATION_CODEC_COMPRESSION_H_
#define FERRY_AGENT_MIGRATION_CODEC_COMPRESSION_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "proto/migration.pb.h"

struct ZSTD_CCtx_s;
struct ZSTD_DCtx_s;

namespace ferry::migration::codec {

using ::ferry::v1::Compression;

// What one compressor is measured to do on this stream's payloads.
struct CompressorEstimate {
  bool valid = false;
  // Input bytes per second of CPU (wall time of the compress call).
  double bytes_per_s = 0;
  // Input bytes / output bytes.
  double ratio = 1.0;
};

struct CompressionPolicyInputs {
  // Wire rate this stream can get (its share of the link), bytes/s; > 0.
  double link_bytes_per_s = 0;
  CompressorEstimate lz4;
  CompressorEstimate zstd;
  // Compress only if the ratio is at least this...
  double min_ratio = 1.1;
  // ...and the effective rate beats sending raw by this factor.
  double min_gain = 1.1;
};

// The AUTO policy. A stream encodes a batch, then sends it, so compressing
// N bytes costs N/speed + N/(ratio*link) against N/link raw: the effective
// rate of a compressor is 1 / (1/speed + 1/(ratio*link)). Picks the
// compressor with the highest effective rate if that rate is at least
// min_gain * link and its ratio at least min_ratio; otherwise NONE. Invalid
// estimates are never picked; a link rate <= 0 gives NONE. Returns
// COMPRESSION_NONE, _LZ4 or _ZSTD.
Compression ChooseCompression(const CompressionPolicyInputs& in);

// Effective rate as defined above (bytes of payload per second).
double EffectiveRate(const CompressorEstimate& e, double link_bytes_per_s);

// Worst-case compressed size of `n` input bytes.
size_t CompressBound(Compression c, size_t n);

// One compressor context per stream (zstd keeps its context between calls).
class Compressor {
 public:
  Compressor();
  ~Compressor();
  Compressor(const Compressor&) = delete;
  Compressor& operator=(const Compressor&) = delete;

  // Compresses `in` with c (LZ4 or ZSTD level 1) into `out` (resized to the
  // result). Internal error only (the output is always big enough).
  absl::Status Compress(Compression c, absl::Span<const uint8_t> in,
                        std::string* out);

 private:
  ZSTD_CCtx_s* zstd_ = nullptr;
};

// Bounded decompression: writes at most out.size() bytes, and succeeds only
// if `in` decompresses to exactly out.size() bytes. DATA_LOSS otherwise
// (corrupt input, or output longer or shorter than declared).
class Decompressor {
 public:
  Decompressor();
  ~Decompressor();
  Decompressor(const Decompressor&) = delete;
  Decompressor& operator=(const Decompressor&) = delete;

  absl::Status Decompress(Compression c, absl::Span<const uint8_t> in,
                          absl::Span<uint8_t> out);

 private:
  ZSTD_DCtx_s* zstd_ = nullptr;
};

struct CompressionSelectorOptions {
  // NONE, LZ4, ZSTD (always that one) or AUTO.
  Compression mode = ::ferry::v1::COMPRESSION_AUTO;
  // Used until SetLinkBandwidth: a 10 GbE link shared by 4 streams.
  double default_link_bytes_per_s = 312.5e6;
  double min_ratio = 1.1;
  double min_gain = 1.1;
  // AUTO: every this many batches, probe the compressors not in use on a
  // sample of the batch to refresh their estimates.
  uint32_t probe_interval_batches = 32;
  size_t probe_sample_bytes = 64 * 1024;
  // Weight of a new measurement in the moving averages.
  double ewma_alpha = 0.25;
  // Payloads smaller than this go uncompressed.
  size_t min_compress_bytes = 1024;
};

// Chooses and runs the compression of each batch's payload. Fixed modes
// always compress with that algorithm (but send NONE for a batch the
// compressor could not shrink). AUTO follows ChooseCompression, with
// estimates measured on this stream's own batches.
class CompressionSelector {
 public:
  explicit CompressionSelector(CompressionSelectorOptions opts);

  // The stream's measured wire rate (bytes/s); <= 0 restores the default.
  void SetLinkBandwidth(double bytes_per_s);

  // Compresses *payload in place as chosen: on return it holds the bytes to
  // send and the result says which algorithm they are in (NONE: untouched).
  // *compress_ns gets the time spent compressing and probing.
  absl::StatusOr<Compression> Compress(std::string* payload,
                                       int64_t* compress_ns);

  const CompressorEstimate& estimate(Compression c) const;
  CompressionPolicyInputs PolicyInputs() const;
  uint64_t probes() const { return probes_; }

 private:
  absl::Status Measure(Compression c, absl::Span<const uint8_t> in,
                       std::string* out, int64_t* ns);
  void Update(Compression c, size_t in, size_t out, int64_t ns);

  CompressionSelectorOptions opts_;
  double link_ = 0;
  Compressor compressor_;
  CompressorEstimate lz4_, zstd_;
  uint64_t batches_ = 0;
  uint64_t probes_ = 0;
  std::string scratch_;
};

}  // namespace ferry::migration::codec

#endif  // FERRY_AGENT_MIGRATION_CODEC_COMPRESSION_H_
