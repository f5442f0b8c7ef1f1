// Fuzz target for PageBatchDecoder (and, in mode 2, the encoder against it).
// Input format: codec_fuzz.h. Build and run with libFuzzer: fuzz.sh. Bazel
// builds it with gcc into :codec_fuzz_replay_test, which replays corpus/.
#include "agent/migration/codec/codec_fuzz.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "agent/migration/codec/codec.h"
#include "agent/migration/codec/compression.h"
#include "agent/migration/codec/crc32c.h"
#include "proto/migration.pb.h"

namespace ferry::migration::codec::fuzz {
namespace {

using ::ferry::v1::PageBatch;

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "codec_fuzz invariant broken: %s\n", what);
  std::abort();
}

std::vector<uint8_t> Snapshot(const mmu::GuestMemory& m) {
  std::vector<uint8_t> out;
  for (const mmu::Memslot& s : m.slots()) out.insert(out.end(), s.hva, s.hva + s.size);
  return out;
}

bool SameAs(const mmu::GuestMemory& m, const std::vector<uint8_t>& snap) {
  size_t off = 0;
  for (const mmu::Memslot& s : m.slots()) {
    if (std::memcmp(s.hva, snap.data() + off, s.size) != 0) return false;
    off += s.size;
  }
  return true;
}

struct Reader {
  const uint8_t* p;
  size_t n;
  uint8_t U8() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  uint16_t U16() { return static_cast<uint16_t>(U8() | (U8() << 8)); }
};

struct State {
  std::unique_ptr<mmu::GuestMemory> dst = MakeMemory();
  std::unique_ptr<mmu::GuestMemory> src = MakeMemory();
  std::vector<uint8_t> initial;
  PageBatchDecoder decoder{dst.get(), DecoderOptions{}};
  Compressor compressor;
  Decompressor decompressor;
  std::vector<uint8_t> buffer = std::vector<uint8_t>(kMaxBatchPayloadBytes);
  // Mode 2: one encoder per (compression, xor), reused with a reset cache.
  std::unique_ptr<PageBatchEncoder> encoders[3][2];

  State() {
    ResetMemory(dst.get());
    initial = Snapshot(*dst);
    const ::ferry::v1::Compression comps[3] = {
        ::ferry::v1::COMPRESSION_NONE, ::ferry::v1::COMPRESSION_LZ4,
        ::ferry::v1::COMPRESSION_ZSTD};
    for (int c = 0; c < 3; ++c) {
      for (int x = 0; x < 2; ++x) {
        EncoderOptions o;
        o.compression.mode = comps[c];
        o.compression.min_compress_bytes = 0;
        o.xor_delta = x == 1;
        o.xor_cache_bytes = 1 << 20;
        encoders[c][x] = std::make_unique<PageBatchEncoder>(src.get(), o);
      }
    }
  }
};

State& GetState() {
  static State* s = new State();
  return *s;
}

void ApplyChecked(State& st, const PageBatch& b) {
  const std::vector<uint8_t>& before = st.initial;
  absl::Status s = st.decoder.Apply(b);
  static const bool verbose = std::getenv("FERRY_CODEC_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "apply: %s\n", s.ToString().c_str());
  if (!s.ok()) {
    if (s.code() != absl::StatusCode::kInvalidArgument &&
        s.code() != absl::StatusCode::kDataLoss) {
      Fail("unexpected status code");
    }
    if (!SameAs(*st.dst, before)) Fail("refused batch wrote guest memory");
  }
}

void ModeBatch(State& st, const uint8_t* data, size_t size) {
  PageBatch b;
  if (!b.ParseFromArray(data, static_cast<int>(size))) return;
  ApplyChecked(st, b);
}

void ModeHeader(State& st, Reader r) {
  const uint8_t flags = r.U8();
  static const ::ferry::v1::Compression kComp[4] = {
      ::ferry::v1::COMPRESSION_NONE, ::ferry::v1::COMPRESSION_LZ4,
      ::ferry::v1::COMPRESSION_ZSTD, ::ferry::v1::COMPRESSION_NONE};
  const ::ferry::v1::Compression comp = kComp[flags & 3];
  const bool harness_compresses = flags & 4;
  const int nruns = 1 + r.U8() % 8;
  PageBatch b;
  uint64_t declared = 0;
  for (int i = 0; i < nruns; ++i) {
    const uint8_t page = r.U8();
    const uint32_t count = 1 + r.U8() % 4;
    const uint8_t enc = r.U8();
    const uint16_t bytes = r.U16();
    ::ferry::v1::PageRun* run = b.add_runs();
    run->set_gpa(((page & 0x80) ? kSlot1Gpa : 0) + uint64_t{page & 0x3Fu} * 4096);
    run->set_page_count(count);
    run->set_encoding(static_cast<::ferry::v1::PageEncoding>(enc % 4));
    uint32_t pb = bytes;
    if (!(enc & 0x80)) {
      switch (enc % 4) {
        case ::ferry::v1::PAGE_ENCODING_RAW:
          pb = count * 4096;
          break;
        case ::ferry::v1::PAGE_ENCODING_XOR_DELTA:
          break;
        default:
          pb = 0;
      }
    }
    run->set_payload_bytes(pb);
    declared += pb;
  }
  if (declared > kMaxBatchPayloadBytes) declared = kMaxBatchPayloadBytes;
  b.set_uncompressed_size_bytes(static_cast<uint32_t>(declared));
  b.set_compression(comp);
  if (comp == ::ferry::v1::COMPRESSION_NONE || harness_compresses) {
    std::string payload(reinterpret_cast<const char*>(r.p), r.n);
    payload.resize(declared, '\0');
    b.set_payload_crc32c(Crc32c(payload.data(), payload.size()));
    if (comp != ::ferry::v1::COMPRESSION_NONE) {
      std::string z;
      if (!st.compressor
               .Compress(comp,
                         absl::MakeConstSpan(
                             reinterpret_cast<const uint8_t*>(payload.data()),
                             payload.size()),
                         &z)
               .ok()) {
        Fail("compressor failed");
      }
      payload.swap(z);
    }
    b.set_payload(std::move(payload));
  } else {
    b.set_payload(reinterpret_cast<const char*>(r.p), r.n);
    uint32_t crc = 0;
    if (st.decompressor
            .Decompress(comp, absl::MakeConstSpan(r.p, r.n),
                        absl::MakeSpan(st.buffer.data(), declared))
            .ok()) {
      crc = Crc32c(st.buffer.data(), declared);
    }
    b.set_payload_crc32c(crc);
  }
  ApplyChecked(st, b);
}

void ModeDifferential(State& st, Reader r) {
  const uint8_t opts = r.U8();
  PageBatchEncoder& enc = *st.encoders[(opts & 3) % 3][(opts >> 2) & 1];
  enc.ResetXorCache();
  ResetMemory(st.src.get());
  ResetMemory(st.dst.get());  // both sides start equal
  std::vector<mmu::PageRun> runs;
  for (const mmu::Memslot& s : st.src->slots()) {
    mmu::PageRun run;
    run.slot = s.slot;
    run.npages = s.npages();
    run.gpa = s.gpa;
    runs.push_back(run);
  }
  for (int round = 0; round < 3 && r.n > 0; ++round) {
    // Shape pages: per page one op byte, then maybe data.
    for (const mmu::Memslot& s : st.src->slots()) {
      for (uint64_t p = 0; p < s.npages(); ++p) {
        uint8_t* page = s.hva + p * 4096;
        const uint8_t op = r.U8();
        switch (op % 5) {
          case 0:
            break;  // unchanged
          case 1:
            std::memset(page, 0, 4096);
            break;
          case 2: {  // a few bytes changed
            const int n = 1 + op / 5 % 16;
            for (int k = 0; k < n; ++k) page[r.U16() % 4096] ^= r.U8() | 1;
            break;
          }
          case 3:  // filled with a byte
            std::memset(page, r.U8(), 4096);
            break;
          case 4: {  // a span copied from the input
            const size_t off = r.U16() % 4096;
            const size_t len = std::min<size_t>(r.n, std::min<size_t>(64, 4096 - off));
            std::memcpy(page + off, r.p, len);
            r.p += len;
            r.n -= len;
            break;
          }
        }
      }
    }
    EncodePass pass = round == 0 ? EncodePass(runs) : EncodePass::LaterRound(runs);
    absl::Status s = enc.EncodeAll(&pass, [&](PageBatch& b) {
      std::string wire;
      b.SerializeToString(&wire);
      PageBatch got;
      if (!got.ParseFromString(wire)) Fail("own batch does not parse");
      return st.decoder.Apply(got);
    });
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      Fail("encoder's own batch refused");
    }
    for (size_t i = 0; i < st.src->slots().size(); ++i) {
      if (std::memcmp(st.src->slots()[i].hva, st.dst->slots()[i].hva,
                      st.src->slots()[i].size) != 0) {
        Fail("round trip differs");
      }
    }
  }
  ResetMemory(st.dst.get());
}

}  // namespace

std::unique_ptr<mmu::GuestMemory> MakeMemory() {
  mmu::GuestMemoryLayout layout;
  layout.slots = {{0, 0, kSlotBytes}, {1, kSlot1Gpa, kSlotBytes}};
  absl::StatusOr<std::unique_ptr<mmu::GuestMemory>> m =
      mmu::GuestMemory::Create(layout);
  if (!m.ok()) Fail("cannot create guest memory");
  return std::move(m).value();
}

namespace {

// The image of one slot, built once (the fuzz loop resets memory often).
const std::vector<uint8_t>& SlotImage(uint32_t slot) {
  static const std::vector<uint8_t>* images = [] {
    auto* v = new std::vector<uint8_t>[2];
    uint32_t x = 0x12345678;
    for (int s = 0; s < 2; ++s) {
      v[s].resize(kSlotBytes);
      for (uint64_t p = 0; p < kPagesPerSlot; ++p) {
        uint8_t* page = v[s].data() + p * 4096;
        switch (p % 4) {
          case 0:
            std::memset(page, 0, 4096);
            break;
          case 1:
            for (int i = 0; i < 4096; ++i) {
              page[i] = static_cast<uint8_t>(i * 7 + p);
            }
            break;
          case 2:
            for (int i = 0; i < 4096; ++i) page[i] = "ferry page "[i % 11];
            break;
          default:
            for (int i = 0; i < 4096; ++i) {
              x = x * 1103515245 + 12345;
              page[i] = static_cast<uint8_t>(x >> 16);
            }
        }
      }
    }
    return v;
  }();
  return images[slot & 1];
}

}  // namespace

void ResetMemory(mmu::GuestMemory* m) {
  for (const mmu::Memslot& s : m->slots()) {
    std::memcpy(s.hva, SlotImage(s.slot).data(), s.size);
  }
}

}  // namespace ferry::migration::codec::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ferry::migration::codec::fuzz;  // NOLINT
  if (size == 0 || size > (2 << 20)) return 0;
  State& st = GetState();
  switch (data[0] % 3) {
    case 0:
      ModeBatch(st, data + 1, size - 1);
      break;
    case 1:
      ModeHeader(st, Reader{data + 1, size - 1});
      break;
    default:
      ModeDifferential(st, Reader{data + 1, size - 1});
      break;
  }
  // A successful batch changed memory; start the next input from the same
  // content (and keep the check above meaningful).
  if (!SameAs(*st.dst, st.initial)) ResetMemory(st.dst.get());
  return 0;
}
