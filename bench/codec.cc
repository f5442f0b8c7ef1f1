// Page codec throughput: PageBatchEncoder / PageBatchDecoder over whole
// guest-memory passes, by page mix and compression.
//
//   bazel run -c opt //bench:codec [-- --quick]
//
// One JSON object per line. For each (mix, compression): guest bytes per
// second through NextBatch (encode) and Apply (decode), best of several
// passes, and the ratio guest bytes / wire bytes (PageBatch.payload after
// compression; protobuf framing excluded). Mixes:
//   zero        every page zero (ZERO flags, no payload)
//   random      incompressible pages
//   text        text and small-integer pages
//   realistic   KVM-FACTS.md's mix: 25% zero, 25% random, 50% text/integers
//   xor_1pct, xor_10pct
//               realistic pages re-sent with 1% / 10% of their bytes
//               changed (scattered), XOR deltas on, cache primed by the
//               previous pass
// "auto" runs the AUTO policy with a per-stream link rate of link_mb_s:
// 312.5 MB/s (the default: 10 GbE shared by 4 streams) and 31.25 MB/s
// (1 GbE / 4); batches_{none,lz4,zstd} show what it picked. A last line
// times CRC-32C alone.
#include <time.h>

#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "agent/migration/codec/codec.h"
#include "agent/migration/codec/crc32c.h"
#include "mmu/guest_memory.h"
#include "proto/migration.pb.h"

namespace {

using ferry::migration::codec::CodecStats;
using ferry::migration::codec::EncodePass;
using ferry::migration::codec::EncoderOptions;
using ferry::migration::codec::PageBatchDecoder;
using ferry::migration::codec::PageBatchEncoder;
using ferry::mmu::GuestMemory;
using ferry::mmu::kPageSize;
using ferry::v1::PageBatch;

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

void RandomPage(uint8_t* p, std::mt19937_64& rng) {
  for (size_t i = 0; i < kPageSize; i += 8) {
    const uint64_t v = rng();
    std::memcpy(p + i, &v, 8);
  }
}

// Half English-ish text, half arrays of small integers and pointers.
void TextPage(uint8_t* p, std::mt19937_64& rng) {
  if (rng() % 2 == 0) {
    static const char* kWords[] = {
        "the ",    "of ",     "and ",      "migration ", "page ",  "kernel ",
        "memory ", "struct ", "return ",   "if ",        "0x7f3a", "error ",
        "value ",  "int ",    "static ",   "= ",         "{\n",    "}\n",
        "for ",    "while ",  "unsigned ", "const ",     "char ",  ";\n"};
    size_t i = 0;
    while (i < kPageSize) {
      const char* w = kWords[rng() % (sizeof kWords / sizeof *kWords)];
      for (; *w && i < kPageSize; ++w) p[i++] = static_cast<uint8_t>(*w);
    }
  } else {
    for (size_t i = 0; i < kPageSize; i += 8) {
      uint64_t v;
      switch (rng() % 4) {
        case 0: v = rng() % 1000; break;                          // counters
        case 1: v = 0xffff888000000000ull + (rng() % 65536) * 64; break;  // pointers
        case 2: v = 0; break;
        default: v = rng() % 0x10000; break;
      }
      std::memcpy(p + i, &v, 8);
    }
  }
}

enum class Mix { kZero, kRandom, kText, kRealistic };

void Fill(GuestMemory* m, Mix mix, std::mt19937_64& rng) {
  for (const ferry::mmu::Memslot& s : m->slots()) {
    for (uint64_t i = 0; i < s.npages(); ++i) {
      uint8_t* p = s.hva + i * kPageSize;
      Mix kind = mix;
      if (mix == Mix::kRealistic) {
        const uint64_t r = rng() % 4;
        kind = r == 0 ? Mix::kZero : r == 1 ? Mix::kRandom : Mix::kText;
      }
      switch (kind) {
        case Mix::kZero: std::memset(p, 0, kPageSize); break;
        case Mix::kRandom: RandomPage(p, rng); break;
        default: TextPage(p, rng); break;
      }
    }
  }
}

// Changes `fraction` of the bytes of every non-zero page, at random spots.
void Mutate(GuestMemory* m, double fraction, std::mt19937_64& rng) {
  const int n = static_cast<int>(kPageSize * fraction);
  for (const ferry::mmu::Memslot& s : m->slots()) {
    for (uint64_t i = 0; i < s.npages(); ++i) {
      uint8_t* p = s.hva + i * kPageSize;
      bool zero = true;
      for (size_t k = 0; k < kPageSize && zero; k += 512) zero = p[k] == 0 && p[k + 1] == 0;
      if (zero) continue;
      for (int k = 0; k < n; ++k) p[rng() % kPageSize] ^= static_cast<uint8_t>(1 + rng() % 255);
    }
  }
}

std::unique_ptr<GuestMemory> MakeMemory(uint64_t bytes, bool populate) {
  ferry::mmu::GuestMemoryLayout layout;
  layout.slots = {{0, 0, bytes}};
  layout.populate = populate;
  auto m = GuestMemory::Create(layout);
  if (!m.ok()) {
    std::fprintf(stderr, "%s\n", m.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(m).value();
}

const char* CompName(ferry::v1::Compression c) {
  switch (c) {
    case ferry::v1::COMPRESSION_NONE: return "none";
    case ferry::v1::COMPRESSION_LZ4: return "lz4";
    case ferry::v1::COMPRESSION_ZSTD: return "zstd";
    default: return "auto";
  }
}

struct Result {
  double encode_mb_s = 0, decode_mb_s = 0, ratio = 0, payload_ratio = 0;
};

void RunCase(const char* name, Mix mix, double xor_fraction,
             ferry::v1::Compression comp, double link, uint64_t bytes,
             int reps) {
  std::mt19937_64 rng(42);
  auto src = MakeMemory(bytes, false);
  auto dst = MakeMemory(bytes, true);
  Fill(src.get(), mix, rng);
  EncoderOptions o;
  o.compression.mode = comp;
  o.compression.default_link_bytes_per_s = link;
  o.xor_delta = xor_fraction > 0;
  o.xor_cache_bytes = bytes * 2;
  PageBatchEncoder enc(src.get(), o);
  PageBatchDecoder dec(dst.get(), {});
  ferry::mmu::PageRun all;
  all.npages = bytes / kPageSize;
  all.gpa = 0;
  std::vector<ferry::mmu::PageRun> runs = {all};
  // Batch messages are reused pass after pass, as a sender reuses its
  // message: NextBatch keeps the payload's capacity, so the timed passes do
  // not pay page faults on fresh 1 MiB buffers.
  std::vector<PageBatch> batches(bytes / (1 << 20) + 16);
  size_t used = 0;

  auto pass = [&](bool timed, Result* r) {
    EncodePass p = EncodePass::LaterRound(runs);
    const CodecStats before = enc.stats();
    const int64_t t0 = NowNs();
    used = 0;
    while (true) {
      if (used == batches.size()) batches.emplace_back();
      auto more = enc.NextBatch(&p, &batches[used]);
      if (!more.ok()) {
        std::fprintf(stderr, "%s\n", more.status().ToString().c_str());
        std::exit(1);
      }
      if (!*more) break;
      ++used;
    }
    const int64_t t1 = NowNs();
    for (size_t i = 0; i < used; ++i) {
      absl::Status s = dec.Apply(batches[i]);
      if (!s.ok()) {
        std::fprintf(stderr, "%s\n", s.ToString().c_str());
        std::exit(1);
      }
    }
    const int64_t t2 = NowNs();
    if (!timed) return;
    const CodecStats& after = enc.stats();
    const double wire = static_cast<double>(after.wire_bytes - before.wire_bytes);
    const double payload = static_cast<double>(after.payload_bytes - before.payload_bytes);
    r->encode_mb_s = std::max(r->encode_mb_s, bytes * 1e3 / static_cast<double>(t1 - t0));
    r->decode_mb_s = std::max(r->decode_mb_s, bytes * 1e3 / static_cast<double>(t2 - t1));
    r->ratio = wire > 0 ? bytes / wire : 0;  // 0: nothing on the wire
    r->payload_ratio = wire > 0 ? payload / wire : 0;
  };

  Result r;
  if (xor_fraction > 0) pass(false, nullptr);  // prime the cache
  // Warm-up pass (AUTO settles its estimates), then timed ones.
  if (xor_fraction == 0) pass(false, nullptr);
  const CodecStats start = enc.stats();
  for (int i = 0; i < reps; ++i) {
    if (xor_fraction > 0) Mutate(src.get(), xor_fraction, rng);
    pass(true, &r);
  }
  const CodecStats& s = enc.stats();
  const uint64_t nb = s.batches - start.batches;
  if (std::memcmp(src->slots()[0].hva, dst->slots()[0].hva, bytes) != 0) {
    std::fprintf(stderr, "destination differs from source!\n");
    std::exit(1);
  }
  std::printf(
      "{\"bench\":\"codec\",\"mix\":\"%s\",\"compression\":\"%s\",\"xor\":%s,"
      "\"link_mb_s\":%.2f,\"guest_mib\":%" PRIu64 ",\"encode_mb_s\":%.0f,\"decode_mb_s\":%.0f,"
      "\"ratio\":%.2f,\"payload_ratio\":%.2f,\"batches\":%" PRIu64
      ",\"batches_none\":%" PRIu64 ",\"batches_lz4\":%" PRIu64
      ",\"batches_zstd\":%" PRIu64 ",\"pages_zero\":%" PRIu64
      ",\"pages_raw\":%" PRIu64 ",\"pages_xor\":%" PRIu64 "}\n",
      name, CompName(comp), xor_fraction > 0 ? "true" : "false",
      comp == ferry::v1::COMPRESSION_AUTO ? link / 1e6 : 0.0, bytes >> 20,
      r.encode_mb_s, r.decode_mb_s, r.ratio, r.payload_ratio, nb,
      s.batches_none - start.batches_none, s.batches_lz4 - start.batches_lz4,
      s.batches_zstd - start.batches_zstd, s.pages_zero - start.pages_zero,
      s.pages_raw - start.pages_raw, s.pages_xor - start.pages_xor);
  std::fflush(stdout);
}

void Crc(uint64_t bytes) {
  std::vector<uint8_t> buf(1 << 20);
  std::mt19937_64 rng(1);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  volatile uint32_t sink = 0;
  double best_hw = 0, best_sw = 0;
  for (int rep = 0; rep < 5; ++rep) {
    int64_t t0 = NowNs();
    for (uint64_t done = 0; done < bytes; done += buf.size()) {
      sink = ferry::migration::codec::Crc32c(buf.data(), buf.size());
    }
    int64_t t1 = NowNs();
    for (uint64_t done = 0; done < bytes / 8; done += buf.size()) {
      sink = ferry::migration::codec::Crc32cPortable(0, buf.data(), buf.size());
    }
    int64_t t2 = NowNs();
    best_hw = std::max(best_hw, bytes * 1e3 / static_cast<double>(t1 - t0));
    best_sw = std::max(best_sw, bytes / 8 * 1e3 / static_cast<double>(t2 - t1));
  }
  (void)sink;
  std::printf("{\"bench\":\"codec_crc32c\",\"hardware\":%s,\"crc32c_mb_s\":%.0f,"
              "\"portable_mb_s\":%.0f}\n",
              ferry::migration::codec::Crc32cHardwareAvailable() ? "true" : "false",
              best_hw, best_sw);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const uint64_t bytes = (quick ? 16ull : 64ull) << 20;
  const int reps = quick ? 2 : 4;
  const struct {
    const char* name;
    Mix mix;
    double xor_fraction;
  } mixes[] = {{"zero", Mix::kZero, 0},
               {"random", Mix::kRandom, 0},
               {"text", Mix::kText, 0},
               {"realistic", Mix::kRealistic, 0},
               {"xor_1pct", Mix::kRealistic, 0.01},
               {"xor_10pct", Mix::kRealistic, 0.10}};
  for (const auto& m : mixes) {
    for (ferry::v1::Compression c :
         {ferry::v1::COMPRESSION_NONE, ferry::v1::COMPRESSION_LZ4,
          ferry::v1::COMPRESSION_ZSTD}) {
      RunCase(m.name, m.mix, m.xor_fraction, c, 0, bytes, reps);
    }
    // AUTO at the default link estimate (10 GbE / 4 streams) and at
    // 1 GbE / 4 streams.
    for (double link : {312.5e6, 31.25e6}) {
      RunCase(m.name, m.mix, m.xor_fraction, ferry::v1::COMPRESSION_AUTO,
              link, bytes, reps);
    }
  }
  Crc(uint64_t{256} << 20);
  return 0;
}
