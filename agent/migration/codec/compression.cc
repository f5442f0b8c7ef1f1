#include "agent/migration/codec/compression.h"

#include <lz4.h>
#include <time.h>
#include <zstd.h>

#include <algorithm>

#include "absl/strings/str_format.h"

namespace ferry::migration::codec {
namespace {

using ::ferry::v1::COMPRESSION_AUTO;
using ::ferry::v1::COMPRESSION_LZ4;
using ::ferry::v1::COMPRESSION_NONE;
using ::ferry::v1::COMPRESSION_ZSTD;

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

constexpr int kZstdLevel = 1;

}  // namespace

double EffectiveRate(const CompressorEstimate& e, double link_bytes_per_s) {
  if (!e.valid || e.bytes_per_s <= 0 || e.ratio <= 0 || link_bytes_per_s <= 0) {
    return 0;
  }
  return 1.0 / (1.0 / e.bytes_per_s + 1.0 / (e.ratio * link_bytes_per_s));
}

Compression ChooseCompression(const CompressionPolicyInputs& in) {
  if (!(in.link_bytes_per_s > 0)) return COMPRESSION_NONE;
  Compression best = COMPRESSION_NONE;
  double best_rate = in.link_bytes_per_s * in.min_gain;
  const struct {
    Compression c;
    const CompressorEstimate& e;
  } candidates[] = {{COMPRESSION_LZ4, in.lz4}, {COMPRESSION_ZSTD, in.zstd}};
  for (const auto& cand : candidates) {
    if (!cand.e.valid || cand.e.ratio < in.min_ratio) continue;
    const double rate = EffectiveRate(cand.e, in.link_bytes_per_s);
    if (rate >= best_rate) {
      best = cand.c;
      best_rate = rate;
    }
  }
  return best;
}

size_t CompressBound(Compression c, size_t n) {
  switch (c) {
    case COMPRESSION_LZ4:
      return static_cast<size_t>(LZ4_compressBound(static_cast<int>(n)));
    case COMPRESSION_ZSTD:
      return ZSTD_compressBound(n);
    default:
      return n;
  }
}

Compressor::Compressor() : zstd_(ZSTD_createCCtx()) {
  ZSTD_CCtx_setParameter(zstd_, ZSTD_c_compressionLevel, kZstdLevel);
  // The receiver knows the size from the batch header; the frame carries it
  // too (its decompressor checks both).
  ZSTD_CCtx_setParameter(zstd_, ZSTD_c_contentSizeFlag, 1);
  ZSTD_CCtx_setParameter(zstd_, ZSTD_c_checksumFlag, 0);
}

Compressor::~Compressor() { ZSTD_freeCCtx(zstd_); }

absl::Status Compressor::Compress(Compression c, absl::Span<const uint8_t> in,
                                  std::string* out) {
  out->resize(CompressBound(c, in.size()));
  switch (c) {
    case COMPRESSION_LZ4: {
      const int n = LZ4_compress_default(
          reinterpret_cast<const char*>(in.data()), out->data(),
          static_cast<int>(in.size()), static_cast<int>(out->size()));
      if (n <= 0) return absl::InternalError("LZ4_compress_default failed");
      out->resize(static_cast<size_t>(n));
      return absl::OkStatus();
    }
    case COMPRESSION_ZSTD: {
      const size_t n = ZSTD_compress2(zstd_, out->data(), out->size(),
                                      in.data(), in.size());
      if (ZSTD_isError(n)) {
        return absl::InternalError(
            absl::StrFormat("ZSTD_compress2: %s", ZSTD_getErrorName(n)));
      }
      out->resize(n);
      return absl::OkStatus();
    }
    default:
      return absl::InternalError(absl::StrFormat(
          "no compressor for %s", ::ferry::v1::Compression_Name(c)));
  }
}

Decompressor::Decompressor() : zstd_(ZSTD_createDCtx()) {}
Decompressor::~Decompressor() { ZSTD_freeDCtx(zstd_); }

absl::Status Decompressor::Decompress(Compression c,
                                      absl::Span<const uint8_t> in,
                                      absl::Span<uint8_t> out) {
  switch (c) {
    case COMPRESSION_LZ4: {
      if (in.size() > static_cast<size_t>(LZ4_MAX_INPUT_SIZE) ||
          out.size() > static_cast<size_t>(LZ4_MAX_INPUT_SIZE)) {
        return absl::DataLossError("lz4 payload too large");
      }
      // _safe never writes past out.size() and fails if the input would
      // produce more (a "bomb" ends here) or reads past its end.
      const int n = LZ4_decompress_safe(
          reinterpret_cast<const char*>(in.data()),
          reinterpret_cast<char*>(out.data()), static_cast<int>(in.size()),
          static_cast<int>(out.size()));
      if (n < 0) {
        return absl::DataLossError(absl::StrFormat(
            "lz4 payload of %d bytes is corrupt or decompresses to more than "
            "the declared %d bytes",
            in.size(), out.size()));
      }
      if (static_cast<size_t>(n) != out.size()) {
        return absl::DataLossError(absl::StrFormat(
            "lz4 payload decompresses to %d bytes, batch declares %d", n,
            out.size()));
      }
      return absl::OkStatus();
    }
    case COMPRESSION_ZSTD: {
      // One-shot into a flat buffer of the declared size: zstd never
      // writes past it (dstSize_tooSmall) and allocates no window.
      const size_t n = ZSTD_decompressDCtx(zstd_, out.data(), out.size(),
                                           in.data(), in.size());
      if (ZSTD_isError(n)) {
        return absl::DataLossError(absl::StrFormat(
            "zstd payload of %d bytes (declared %d after decompression): %s",
            in.size(), out.size(), ZSTD_getErrorName(n)));
      }
      if (n != out.size()) {
        return absl::DataLossError(absl::StrFormat(
            "zstd payload decompresses to %d bytes, batch declares %d", n,
            out.size()));
      }
      return absl::OkStatus();
    }
    default:
      return absl::InvalidArgumentError(absl::StrFormat(
          "no decompressor for %s", ::ferry::v1::Compression_Name(c)));
  }
}

CompressionSelector::CompressionSelector(CompressionSelectorOptions opts)
    : opts_(opts), link_(opts.default_link_bytes_per_s) {}

void CompressionSelector::SetLinkBandwidth(double bytes_per_s) {
  link_ = bytes_per_s > 0 ? bytes_per_s : opts_.default_link_bytes_per_s;
}

const CompressorEstimate& CompressionSelector::estimate(Compression c) const {
  return c == COMPRESSION_ZSTD ? zstd_ : lz4_;
}

CompressionPolicyInputs CompressionSelector::PolicyInputs() const {
  CompressionPolicyInputs in;
  in.link_bytes_per_s = link_;
  in.lz4 = lz4_;
  in.zstd = zstd_;
  in.min_ratio = opts_.min_ratio;
  in.min_gain = opts_.min_gain;
  return in;
}

void CompressionSelector::Update(Compression c, size_t in, size_t out,
                                 int64_t ns) {
  CompressorEstimate& e = c == COMPRESSION_ZSTD ? zstd_ : lz4_;
  const double speed = static_cast<double>(in) * 1e9 /
                       static_cast<double>(std::max<int64_t>(ns, 1));
  const double ratio =
      static_cast<double>(in) / static_cast<double>(std::max<size_t>(out, 1));
  if (!e.valid) {
    e = CompressorEstimate{true, speed, ratio};
    return;
  }
  const double a = opts_.ewma_alpha;
  e.bytes_per_s = (1 - a) * e.bytes_per_s + a * speed;
  e.ratio = (1 - a) * e.ratio + a * ratio;
}

absl::Status CompressionSelector::Measure(Compression c,
                                          absl::Span<const uint8_t> in,
                                          std::string* out, int64_t* ns) {
  const int64_t t0 = NowNs();
  absl::Status s = compressor_.Compress(c, in, out);
  const int64_t dt = NowNs() - t0;
  *ns += dt;
  if (s.ok()) Update(c, in.size(), out->size(), dt);
  return s;
}

absl::StatusOr<Compression> CompressionSelector::Compress(
    std::string* payload, int64_t* compress_ns) {
  *compress_ns = 0;
  ++batches_;
  const Compression mode = opts_.mode;
  if (mode == COMPRESSION_NONE || mode == ::ferry::v1::COMPRESSION_UNSPECIFIED ||
      payload->size() < opts_.min_compress_bytes) {
    return COMPRESSION_NONE;
  }
  const absl::Span<const uint8_t> in(
      reinterpret_cast<const uint8_t*>(payload->data()), payload->size());
  Compression choice = mode;
  if (mode == COMPRESSION_AUTO) {
    // Refresh stale or missing estimates on a sample.
    const absl::Span<const uint8_t> sample =
        in.subspan(0, std::min(in.size(), opts_.probe_sample_bytes));
    const bool periodic =
        opts_.probe_interval_batches > 0 &&
        batches_ % opts_.probe_interval_batches == 0;
    for (Compression c : {COMPRESSION_LZ4, COMPRESSION_ZSTD}) {
      if (!estimate(c).valid || periodic) {
        ++probes_;
        absl::Status s = Measure(c, sample, &scratch_, compress_ns);
        if (!s.ok()) return s;
      }
    }
    choice = ChooseCompression(PolicyInputs());
    if (choice == COMPRESSION_NONE) return COMPRESSION_NONE;
  }
  {
    absl::Status s = Measure(choice, in, &scratch_, compress_ns);
    if (!s.ok()) return s;
  }
  if (scratch_.size() >= payload->size()) return COMPRESSION_NONE;
  payload->swap(scratch_);
  return choice;
}

}  // namespace ferry::migration::codec
