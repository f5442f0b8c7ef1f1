// Writes the fuzz seed corpus (a few small files) into the directory given:
//
//   bazel run //agent/migration/codec:make_corpus -- $PWD/agent/migration/codec/corpus
//
// Seeds are valid inputs of each mode of codec_fuzz.h, built with the real
// encoder against the fuzz target's initial memory, so mutations start from
// batches that get all the way through validation.
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "agent/migration/codec/codec.h"
#include "agent/migration/codec/codec_fuzz.h"
#include "agent/migration/codec/crc32c.h"
#include "agent/migration/codec/xor_delta.h"
#include "proto/migration.pb.h"

namespace ferry::migration::codec::fuzz {
namespace {

using ::ferry::v1::PageBatch;

std::string Dir;
size_t Total = 0;

void Write(const std::string& name, const std::string& bytes) {
  const std::string path = Dir + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    std::perror(path.c_str());
    std::exit(1);
  }
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
  Total += bytes.size();
  std::printf("%-24s %6zu bytes\n", name.c_str(), bytes.size());
}

mmu::PageRun PagesAt(uint64_t gpa, uint64_t n) {
  mmu::PageRun r;
  r.slot = gpa >= kSlot1Gpa ? 1 : 0;
  r.first_page = (gpa % kSlot1Gpa) / 4096;
  r.npages = n;
  r.gpa = gpa;
  return r;
}

std::string Mode0(const PageBatch& b) {
  std::string s(1, '\0');
  s += b.SerializeAsString();
  return s;
}

PageBatch Encode(mmu::GuestMemory* src, ::ferry::v1::Compression c,
                 std::vector<mmu::PageRun> runs) {
  EncoderOptions o;
  o.compression.mode = c;
  PageBatchEncoder enc(src, o);
  EncodePass pass(runs);
  PageBatch b;
  if (!*enc.NextBatch(&pass, &b)) std::exit(2);
  return b;
}

void Main() {
  auto src = MakeMemory();
  ResetMemory(src.get());
  // Pages 0..7 of slot 0: zero, pattern, text, random, ... (ResetMemory).
  // mode 0, LZ4 and ZSTD: text and pattern pages plus a zero page.
  Write("batch_lz4", Mode0(Encode(src.get(), ::ferry::v1::COMPRESSION_LZ4,
                                  {PagesAt(0, 3)})));
  Write("batch_zstd", Mode0(Encode(src.get(), ::ferry::v1::COMPRESSION_ZSTD,
                                   {PagesAt(kSlot1Gpa + 4 * 4096, 3)})));
  // mode 0, XOR: cache pages 1,2,3 (the destination holds them already),
  // change a few bytes, encode again.
  {
    EncoderOptions o;
    o.compression.mode = ::ferry::v1::COMPRESSION_NONE;
    o.xor_delta = true;
    PageBatchEncoder enc(src.get(), o);
    std::vector<mmu::PageRun> runs = {PagesAt(4096, 3), PagesAt(8 * 4096, 1)};
    EncodePass first(runs);
    PageBatch b;
    enc.NextBatch(&first, &b).IgnoreError();
    uint8_t* p = *src->GpaToHva(4096, 3 * 4096);
    for (int i = 0; i < 3 * 4096; i += 997) p[i] ^= 0x5A;
    EncodePass second(runs);
    enc.NextBatch(&second, &b).IgnoreError();
    Write("batch_xor", Mode0(b));
    ResetMemory(src.get());
  }
  // mode 1: NONE, a ZERO run and an XOR run whose payload is "page 2
  // unchanged" (crc, skip 4096, len 0) then "page 3: byte 0 flipped".
  {
    const uint8_t* p2 = *src->GpaToHva(2 * 4096, 4096);
    const uint8_t* p3 = *src->GpaToHva(3 * 4096, 4096);
    std::vector<uint8_t> cur3(p3, p3 + 4096);
    cur3[0] ^= 1;
    uint8_t enc2[16], enc3[4200];
    const size_t n2 = EncodeXorPage(p2, p2, Crc32c(p2, 4096), enc2, sizeof enc2);
    const size_t n3 = EncodeXorPage(cur3.data(), p3, Crc32c(cur3.data(), 4096),
                                    enc3, sizeof enc3);
    const size_t xor_bytes = n2 + n3;
    std::string s;
    s += '\x01';                      // mode 1
    s += '\x00';                      // NONE
    s += '\x01';                      // 2 runs
    s += std::string("\x05\x00\x02\x00\x00", 5);  // page 5, 1 page, ZERO
    s += '\x02';                                  // page 2
    s += '\x01';                                  // 2 pages
    s += '\x03';                                  // XOR, natural size
    s += static_cast<char>(xor_bytes & 0xFF);
    s += static_cast<char>(xor_bytes >> 8);
    s.append(reinterpret_cast<const char*>(enc2), n2);
    s.append(reinterpret_cast<const char*>(enc3), n3);
    Write("header_none_xor", s);
    // Same, compressed by the harness with zstd, and as raw lz4 garbage.
    s[1] = '\x06';  // ZSTD | harness compresses
    Write("header_zstd_xor", s);
    s[1] = '\x01';  // LZ4, payload given as is
    Write("header_lz4_raw", s);
  }
  // mode 2: differential, lz4 + XOR, a few shaped pages per round.
  {
    std::string s;
    s += '\x02';
    s += '\x05';  // LZ4 (1), XOR on (bit 2)
    std::mt19937 rng(7);
    for (int i = 0; i < 3 * 32; ++i) {
      const uint8_t op = static_cast<uint8_t>(rng() % 5);
      s += static_cast<char>(op);
      if (op == 2) s += std::string("\x10\x02\x33", 3);
      if (op == 3) s += 'x';
      if (op == 4) s += std::string("\x00\x01hello, page", 13);
    }
    Write("differential_lz4_xor", s);
    s[1] = '\x04';  // NONE, XOR on
    Write("differential_none_xor", s);
  }
  std::printf("total %zu bytes\n", Total);
}

}  // namespace
}  // namespace ferry::migration::codec::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_corpus DIR\n");
    return 1;
  }
  ferry::migration::codec::fuzz::Dir = argv[1];
  ferry::migration::codec::fuzz::Main();
  return 0;
}
