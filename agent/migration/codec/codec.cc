#include "agent/migration/codec/codec.h"

#include <time.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "agent/migration/codec/crc32c.h"
#include "agent/migration/codec/xor_delta.h"

namespace ferry::migration::codec {
namespace {

using ::ferry::v1::PageBatch;
using ::ferry::v1::PageEncoding;
using ::ferry::v1::PAGE_ENCODING_RAW;
using ::ferry::v1::PAGE_ENCODING_XOR_DELTA;
using ::ferry::v1::PAGE_ENCODING_ZERO;
using ::ferry::v1::COMPRESSION_LZ4;
using ::ferry::v1::COMPRESSION_NONE;
using ::ferry::v1::COMPRESSION_ZSTD;

constexpr uint64_t kPage = mmu::kPageSize;
static_assert(kPage == kPageBytes, "xor_delta and mmu disagree on page size");

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

void RecordTime(CodecStats* s, int64_t ns) {
  s->total_ns += ns;
  s->last_batch_ns = ns;
  s->max_batch_ns = std::max(s->max_batch_ns, ns);
}

void CountCompression(CodecStats* s, ::ferry::v1::Compression c) {
  if (c == COMPRESSION_LZ4) {
    ++s->batches_lz4;
  } else if (c == COMPRESSION_ZSTD) {
    ++s->batches_zstd;
  } else {
    ++s->batches_none;
  }
}

// True if [gpa, gpa + len) lies in one stripe of `route`'s stream.
bool OnRoute(const StreamRoute& route, uint64_t gpa, uint64_t len) {
  if (route.count <= 1) return true;
  const uint64_t first = gpa / kStreamStripeBytes;
  const uint64_t last = (gpa + len - 1) / kStreamStripeBytes;
  return first == last && first % route.count == route.index;
}

}  // namespace

double CodecStats::compression_ratio() const {
  if (wire_bytes == 0) return 1.0;
  return static_cast<double>(payload_bytes) / static_cast<double>(wire_bytes);
}

std::vector<std::vector<mmu::PageRun>> SplitRunsByStream(
    absl::Span<const mmu::PageRun> runs, uint32_t stream_count) {
  std::vector<std::vector<mmu::PageRun>> out(std::max<uint32_t>(stream_count, 1));
  if (stream_count <= 1) {
    out[0].assign(runs.begin(), runs.end());
    return out;
  }
  constexpr uint64_t kStripePages = kStreamStripeBytes / kPage;
  for (const mmu::PageRun& r : runs) {
    uint64_t done = 0;
    while (done < r.npages) {
      const uint64_t gpa = r.gpa + done * kPage;
      const uint64_t in_stripe =
          kStripePages - (gpa / kPage) % kStripePages;
      const uint64_t n = std::min(in_stripe, r.npages - done);
      mmu::PageRun piece;
      piece.slot = r.slot;
      piece.first_page = r.first_page + done;
      piece.npages = n;
      piece.gpa = gpa;
      out[StreamOf(gpa, stream_count)].push_back(piece);
      done += n;
    }
  }
  return out;
}

EncodePass EncodePass::FirstRound(absl::Span<const mmu::PageRun> r) {
  EncodePass p(r);
  p.skip_zero_pages = true;
  p.cache_new_pages = false;
  return p;
}

EncodePass EncodePass::LaterRound(absl::Span<const mmu::PageRun> r) {
  return EncodePass(r);
}

// ---------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------

PageBatchEncoder::PageBatchEncoder(const mmu::GuestMemory* memory,
                                   EncoderOptions opts)
    : memory_(memory),
      opts_(opts),
      cache_(opts.xor_delta ? opts.xor_cache_bytes : 0),
      compression_(opts.compression),
      snapshot_(new uint8_t[kPage]),
      delta_(new uint8_t[kPage]) {
  opts_.max_payload_bytes =
      std::min<uint64_t>(opts_.max_payload_bytes, kMaxBatchPayloadBytes);
  opts_.max_runs_per_batch =
      std::clamp<uint32_t>(opts_.max_runs_per_batch, 1, kMaxRunsPerBatch);
  opts_.xor_max_bytes =
      std::clamp<uint32_t>(opts_.xor_max_bytes, 0, kPage - 1);
}

void PageBatchEncoder::InvalidatePages(absl::Span<const mmu::PageRun> runs) {
  for (const mmu::PageRun& r : runs) {
    for (uint64_t i = 0; i < r.npages; ++i) {
      cache_.Erase(mmu::GpaToGfn(r.gpa) + i);
    }
  }
}

absl::StatusOr<bool> PageBatchEncoder::NextBatch(EncodePass* pass,
                                                 PageBatch* batch) {
  const int64_t t0 = NowNs();
  batch->Clear();
  std::string* payload = batch->mutable_payload();
  payload->clear();
  payload->reserve(opts_.max_payload_bytes);

  ::ferry::v1::PageRun* cur = nullptr;  // the run being extended
  uint64_t cur_end = 0;                 // gpa just past it
  uint32_t data_pages = 0, zero_pages = 0;
  CodecStats delta_stats;  // committed at the end

  while (!pass->done()) {
    const mmu::PageRun& in = pass->runs[pass->run];
    if (pass->page >= in.npages) {
      ++pass->run;
      pass->page = 0;
      continue;
    }
    if (in.gpa % kPage != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "page run at gpa 0x%x is not page aligned", in.gpa));
    }
    if (in.npages > (~uint64_t{0} - in.gpa) / kPage) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "page run at gpa 0x%x of %d pages overflows", in.gpa, in.npages));
    }
    if (!OnRoute(opts_.route, in.gpa, in.length())) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "page run [0x%x, +0x%x) is not (only) on stream %d of %d", in.gpa,
          in.length(), opts_.route.index, opts_.route.count));
    }
    absl::StatusOr<absl::Span<uint8_t>> range =
        memory_->Range(in.gpa, in.length());
    if (!range.ok()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "page run outside guest memory: %s", range.status().message()));
    }
    const uint8_t* base = range->data();

    bool full = false;
    while (pass->page < in.npages) {
      const uint64_t gpa = in.gpa + pass->page * kPage;
      const uint64_t gfn = mmu::GpaToGfn(gpa);
      const uint8_t* page = base + pass->page * kPage;

      PageEncoding enc;
      const uint8_t* data = nullptr;  // bytes to append
      size_t data_len = 0;
      const uint8_t* cache_copy = nullptr;  // what to cache, if anything
      bool cache_hit = false, too_large = false;

      if (IsZeroPage(page)) {
        if (pass->skip_zero_pages) {
          cache_.Erase(gfn);
          ++delta_stats.pages_zero_skipped;
          ++pass->page;
          continue;
        }
        if (zero_pages >= opts_.max_zero_pages_per_batch) {
          full = true;
          break;
        }
        enc = PAGE_ENCODING_ZERO;
      } else {
        if (payload->size() + kPage > opts_.max_payload_bytes ||
            data_pages >= kMaxDataPagesPerBatch) {
          full = true;
          break;
        }
        const uint8_t* old = opts_.xor_delta ? cache_.Lookup(gfn) : nullptr;
        if (old != nullptr) {
          cache_hit = true;
          // One read of the (racy) guest page: what we send and what we
          // cache must be the same bytes.
          std::memcpy(snapshot_.get(), page, kPage);
          const uint32_t crc = Crc32c(snapshot_.get(), kPage);
          const size_t n = EncodeXorPage(snapshot_.get(), old, crc,
                                         delta_.get(), opts_.xor_max_bytes);
          if (n > 0) {
            enc = PAGE_ENCODING_XOR_DELTA;
            data = delta_.get();
            data_len = n;
          } else {
            too_large = true;
            enc = PAGE_ENCODING_RAW;
            data = snapshot_.get();
            data_len = kPage;
          }
          cache_copy = snapshot_.get();
        } else {
          enc = PAGE_ENCODING_RAW;
          data = page;  // copied once, below; the cache copies the payload
          data_len = kPage;
        }
      }

      const bool extends = cur != nullptr && cur->encoding() == enc &&
                           cur_end == gpa;
      if (!extends &&
          static_cast<uint32_t>(batch->runs_size()) >= opts_.max_runs_per_batch) {
        full = true;
        break;
      }

      // Commit the page.
      if (!extends) {
        cur = batch->add_runs();
        cur->set_gpa(gpa);
        cur->set_encoding(enc);
      }
      cur->set_page_count(cur->page_count() + 1);
      cur->set_payload_bytes(cur->payload_bytes() +
                             static_cast<uint32_t>(data_len));
      cur_end = gpa + kPage;
      if (data_len > 0) {
        const size_t at = payload->size();
        payload->append(reinterpret_cast<const char*>(data), data_len);
        ++data_pages;
        if (cache_copy == nullptr && opts_.xor_delta &&
            pass->cache_new_pages) {
          cache_copy = reinterpret_cast<const uint8_t*>(payload->data() + at);
        }
      }
      switch (enc) {
        case PAGE_ENCODING_ZERO:
          ++zero_pages;
          ++delta_stats.pages_zero;
          cache_.Erase(gfn);
          break;
        case PAGE_ENCODING_XOR_DELTA:
          ++delta_stats.pages_xor;
          break;
        default:
          ++delta_stats.pages_raw;
          break;
      }
      if (cache_copy != nullptr) cache_.Put(gfn, cache_copy);
      if (opts_.xor_delta && enc != PAGE_ENCODING_ZERO) {
        if (cache_hit) {
          ++delta_stats.xor_cache_hits;
        } else {
          ++delta_stats.xor_cache_misses;
        }
      }
      if (too_large) ++delta_stats.xor_too_large;
      ++pass->page;
    }
    if (full) break;
  }

  if (batch->runs_size() == 0) {
    stats_.pages_zero_skipped += delta_stats.pages_zero_skipped;
    batch->Clear();
    return false;
  }

  const uint32_t usize = static_cast<uint32_t>(payload->size());
  batch->set_uncompressed_size_bytes(usize);
  batch->set_payload_crc32c(Crc32c(payload->data(), payload->size()));
  int64_t compress_ns = 0;
  absl::StatusOr<::ferry::v1::Compression> c =
      compression_.Compress(payload, &compress_ns);
  if (!c.ok()) return c.status();
  batch->set_compression(*c);

  stats_.batches += 1;
  stats_.pages_raw += delta_stats.pages_raw;
  stats_.pages_zero += delta_stats.pages_zero;
  stats_.pages_zero_skipped += delta_stats.pages_zero_skipped;
  stats_.pages_xor += delta_stats.pages_xor;
  stats_.xor_cache_hits += delta_stats.xor_cache_hits;
  stats_.xor_cache_misses += delta_stats.xor_cache_misses;
  stats_.xor_too_large += delta_stats.xor_too_large;
  stats_.payload_bytes += usize;
  stats_.wire_bytes += batch->payload().size();
  stats_.compress_ns += compress_ns;
  CountCompression(&stats_, *c);
  RecordTime(&stats_, NowNs() - t0);
  return true;
}

absl::Status PageBatchEncoder::EncodeAll(
    EncodePass* pass, absl::FunctionRef<absl::Status(PageBatch&)> sink) {
  PageBatch batch;
  while (true) {
    absl::StatusOr<bool> more = NextBatch(pass, &batch);
    if (!more.ok()) return more.status();
    if (!*more) return absl::OkStatus();
    absl::Status s = sink(batch);
    if (!s.ok()) return s;
  }
}

// ---------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------

PageBatchDecoder::PageBatchDecoder(mmu::GuestMemory* memory,
                                   DecoderOptions opts)
    : memory_(memory),
      opts_(opts),
      buffer_(new uint8_t[kMaxBatchPayloadBytes]),
      scratch_(new uint8_t[kPage]) {
  runs_.reserve(kMaxRunsPerBatch);
  extents_.reserve(kMaxRunsPerBatch);
}

absl::Status PageBatchDecoder::Validate(const PageBatch& b,
                                        absl::Span<const uint8_t>* payload) {
  // 1. Header and caps.
  const ::ferry::v1::Compression comp = b.compression();
  const bool comp_ok = comp == COMPRESSION_NONE ||
                       (comp == COMPRESSION_LZ4 && opts_.allow_lz4) ||
                       (comp == COMPRESSION_ZSTD && opts_.allow_zstd);
  if (!comp_ok) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "batch compression %d is not one this stream accepts",
        static_cast<int>(comp)));
  }
  if (b.runs_size() == 0) {
    return absl::InvalidArgumentError("batch has no runs");
  }
  if (static_cast<uint64_t>(b.runs_size()) > kMaxRunsPerBatch) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "batch has %d runs, the cap is %d", b.runs_size(), kMaxRunsPerBatch));
  }
  const uint64_t usize = b.uncompressed_size_bytes();
  if (usize > kMaxBatchPayloadBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "batch declares %d payload bytes, the cap is %d", usize,
        kMaxBatchPayloadBytes));
  }

  // 2. Runs: bounds, sizes, overlap.
  runs_.clear();
  extents_.clear();
  uint64_t offset = 0;
  uint64_t data_pages = 0;
  for (int i = 0; i < b.runs_size(); ++i) {
    const ::ferry::v1::PageRun& r = b.runs(i);
    const PageEncoding enc = r.encoding();
    if (enc != PAGE_ENCODING_RAW && enc != PAGE_ENCODING_ZERO &&
        !(enc == PAGE_ENCODING_XOR_DELTA && opts_.allow_xor_delta)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "run %d: encoding %d is not one this stream accepts", i,
          static_cast<int>(enc)));
    }
    if (r.page_count() == 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("run %d: no pages", i));
    }
    const uint64_t gpa = r.gpa();
    const uint64_t len = uint64_t{r.page_count()} * kPage;  // < 2^44
    if (gpa % kPage != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "run %d: gpa 0x%x is not page aligned", i, gpa));
    }
    if (gpa > ~uint64_t{0} - len) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "run %d: gpa 0x%x + %d pages overflows", i, gpa, r.page_count()));
    }
    if (!OnRoute(opts_.route, gpa, len)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "run %d: [0x%x, +0x%x) does not belong to stream %d of %d", i, gpa,
          len, opts_.route.index, opts_.route.count));
    }
    absl::StatusOr<absl::Span<uint8_t>> range = memory_->Range(gpa, len);
    if (!range.ok()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "run %d: [0x%x, +0x%x) is not inside one memslot: %s", i, gpa, len,
          range.status().message()));
    }
    const uint64_t bytes = r.payload_bytes();
    switch (enc) {
      case PAGE_ENCODING_ZERO:
        if (bytes != 0) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "run %d: ZERO run declares %d payload bytes", i, bytes));
        }
        break;
      case PAGE_ENCODING_RAW:
        if (bytes != len) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "run %d: RAW run of %d pages declares %d payload bytes, "
              "expected %d",
              i, r.page_count(), bytes, len));
        }
        data_pages += r.page_count();
        break;
      default:  // XOR_DELTA
        if (bytes < uint64_t{r.page_count()} * kXorMinPageBytes) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "run %d: XOR run of %d pages declares only %d payload bytes", i,
              r.page_count(), bytes));
        }
        data_pages += r.page_count();
        break;
    }
    if (data_pages > kMaxDataPagesPerBatch) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "batch carries more than %d pages with data", kMaxDataPagesPerBatch));
    }
    runs_.push_back(Run{range->data(), gpa, r.page_count(), enc, offset, bytes});
    extents_.emplace_back(gpa, len);
    offset += bytes;  // <= 4096 * 2^32: no overflow
  }
  if (offset != usize) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "runs declare %d payload bytes in all, batch header says %d", offset,
        usize));
  }
  std::sort(extents_.begin(), extents_.end());
  for (size_t i = 1; i < extents_.size(); ++i) {
    if (extents_[i - 1].first + extents_[i - 1].second > extents_[i].first) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "runs overlap: [0x%x, +0x%x) and [0x%x, +0x%x)",
          extents_[i - 1].first, extents_[i - 1].second, extents_[i].first,
          extents_[i].second));
    }
  }

  // 3. Payload: exactly the declared size, decompressed into a bounded
  // buffer.
  const std::string& wire = b.payload();
  const absl::Span<const uint8_t> in(
      reinterpret_cast<const uint8_t*>(wire.data()), wire.size());
  if (comp == COMPRESSION_NONE || usize == 0) {
    if (in.size() != usize) {
      return absl::DataLossError(absl::StrFormat(
          "payload is %d bytes, batch declares %d", in.size(), usize));
    }
    *payload = in;
  } else {
    if (in.size() > CompressBound(comp, usize)) {
      return absl::DataLossError(absl::StrFormat(
          "compressed payload of %d bytes is larger than any encoding of %d "
          "bytes",
          in.size(), usize));
    }
    const int64_t t0 = NowNs();
    absl::Status s = decompressor_.Decompress(
        comp, in, absl::Span<uint8_t>(buffer_.get(), usize));
    stats_.compress_ns += NowNs() - t0;
    if (!s.ok()) return s;
    *payload = absl::Span<const uint8_t>(buffer_.get(), usize);
  }

  // 4. CRC of the uncompressed payload.
  const uint32_t crc = Crc32c(payload->data(), payload->size());
  if (crc != b.payload_crc32c()) {
    return absl::DataLossError(absl::StrFormat(
        "payload crc32c 0x%08x, batch declares 0x%08x", crc,
        b.payload_crc32c()));
  }

  // 5. XOR deltas: format and resulting-page CRC against what guest memory
  // holds now (read only).
  for (size_t i = 0; i < runs_.size(); ++i) {
    const Run& r = runs_[i];
    if (r.encoding != PAGE_ENCODING_XOR_DELTA) continue;
    const absl::Span<const uint8_t> bytes = payload->subspan(r.offset, r.bytes);
    size_t used = 0;
    for (uint64_t p = 0; p < r.pages; ++p) {
      absl::StatusOr<size_t> n = ValidateXorPage(
          bytes.subspan(used), r.hva + p * kPage, scratch_.get());
      if (!n.ok()) {
        return absl::Status(
            n.status().code(),
            absl::StrFormat("run %d, page gpa 0x%x: %s", i,
                            r.gpa + p * kPage, n.status().message()));
      }
      used += *n;
    }
    if (used != r.bytes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "run %d: XOR run declares %d payload bytes, its %d pages use %d", i,
          r.bytes, r.pages, used));
    }
  }
  return absl::OkStatus();
}

absl::Status PageBatchDecoder::Apply(const PageBatch& b) {
  const int64_t t0 = NowNs();
  absl::Span<const uint8_t> payload;
  absl::Status s = Validate(b, &payload);
  if (!s.ok()) {
    ++stats_.rejected;
    return s;
  }
  // Nothing below can fail: the batch is applied whole.
  CodecStats add;
  for (const Run& r : runs_) {
    switch (r.encoding) {
      case PAGE_ENCODING_RAW:
        std::memcpy(r.hva, payload.data() + r.offset, r.bytes);
        add.pages_raw += r.pages;
        break;
      case PAGE_ENCODING_ZERO:
        // Reading first keeps never-touched (still zero) pages untouched.
        for (uint64_t p = 0; p < r.pages; ++p) {
          uint8_t* page = r.hva + p * kPage;
          if (!IsZeroPage(page)) std::memset(page, 0, kPage);
        }
        add.pages_zero += r.pages;
        break;
      default: {
        const uint8_t* in = payload.data() + r.offset;
        for (uint64_t p = 0; p < r.pages; ++p) {
          in += ApplyXorPage(in, r.hva + p * kPage);
        }
        add.pages_xor += r.pages;
        break;
      }
    }
  }
  stats_.batches += 1;
  stats_.pages_raw += add.pages_raw;
  stats_.pages_zero += add.pages_zero;
  stats_.pages_xor += add.pages_xor;
  stats_.payload_bytes += payload.size();
  stats_.wire_bytes += b.payload().size();
  CountCompression(&stats_, b.compression());
  RecordTime(&stats_, NowNs() - t0);
  return absl::OkStatus();
}

}  // namespace ferry::migration::codec
