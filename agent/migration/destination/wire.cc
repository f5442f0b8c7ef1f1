#include "agent/migration/destination/wire.h"

#include <nmmintrin.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace ferry::migration {
namespace {

constexpr uint32_t kCastagnoli = 0x82F63B78u;

struct Table {
  uint32_t t[256];
  Table() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kCastagnoli : c >> 1;
      t[i] = c;
    }
  }
};

uint32_t Crc32cTable(uint32_t crc, const uint8_t* p, size_t n) {
  static const Table table;
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table.t[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

__attribute__((target("sse4.2"))) uint32_t Crc32cSse42(uint32_t crc,
                                                        const uint8_t* p,
                                                        size_t n) {
  uint64_t c = ~crc & 0xffffffffu;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    c = _mm_crc32_u64(c, w);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n-- > 0) c32 = _mm_crc32_u8(c32, *p++);
  return ~c32;
}

bool HaveSse42() {
  static const bool have = __builtin_cpu_supports("sse4.2");
  return have;
}

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint32_t PageCrc(const mmu::Memslot& slot, uint64_t page) {
  // SAFETY: page < slot.npages(), so [hva + page*4K, +4K) is inside the
  // slot's mapping, which lives as long as the GuestMemory. The caller
  // pauses the vCPUs, so the read is stable.
  return Crc32c(0, slot.hva + (page << mmu::kPageShift), mmu::kPageSize);
}

void AppendLe32(uint32_t v, uint8_t out[4]) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<uint8_t>(v >> (8 * i));
}

}  // namespace

uint32_t Crc32c(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  return HaveSse42() ? Crc32cSse42(crc, p, n) : Crc32cTable(crc, p, n);
}

uint64_t HoleEnd(const mmu::GuestMemory& memory, const mmu::Memslot& slot,
                 uint64_t page) {
  const off_t base = static_cast<off_t>(slot.memfd_offset);
  const off_t at = base + static_cast<off_t>(page << mmu::kPageShift);
  const off_t data = lseek(memory.memfd(), at, SEEK_DATA);
  if (data < 0) {
    // ENXIO: no data after `at` at all; anything else: assume backed.
    return errno == ENXIO ? slot.npages() : page;
  }
  const uint64_t data_page = static_cast<uint64_t>(data - base) >> mmu::kPageShift;
  return std::min(std::max(data_page, page), slot.npages());
}

v1::MemoryLayout LayoutOf(const mmu::GuestMemory& memory) {
  v1::MemoryLayout layout;
  layout.set_page_size_bytes(mmu::kPageSize);
  for (const mmu::Memslot& s : memory.slots()) {
    v1::Memslot* m = layout.add_memslots();
    m->set_slot_id(s.slot);
    m->set_gpa(s.gpa);
    m->set_size_bytes(s.size);
    m->set_name("ram");
  }
  return layout;
}

absl::Status CompareLayouts(const v1::MemoryLayout& want,
                            const v1::MemoryLayout& got) {
  if (got.page_size_bytes() != want.page_size_bytes()) {
    return absl::FailedPreconditionError(
        absl::StrCat("page size ", got.page_size_bytes(), " but this side uses ",
                     want.page_size_bytes()));
  }
  if (got.memslots_size() != want.memslots_size()) {
    return absl::FailedPreconditionError(
        absl::StrCat(got.memslots_size(), " memslots but this side prepared ",
                     want.memslots_size()));
  }
  for (int i = 0; i < want.memslots_size(); ++i) {
    const v1::Memslot& a = want.memslots(i);
    const v1::Memslot& b = got.memslots(i);
    if (a.slot_id() != b.slot_id() || a.gpa() != b.gpa() ||
        a.size_bytes() != b.size_bytes() || a.read_only() != b.read_only()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "memslot #", i, " is (id ", b.slot_id(), ", gpa 0x",
          absl::Hex(b.gpa()), ", ", b.size_bytes(), " bytes) but this side has (id ",
          a.slot_id(), ", gpa 0x", absl::Hex(a.gpa()), ", ", a.size_bytes(),
          " bytes)"));
    }
  }
  return absl::OkStatus();
}

v1::MemoryDigest ComputeDigest(const mmu::GuestMemory& memory,
                               v1::MemoryVerification coverage, uint64_t seed,
                               uint32_t sample_pages) {
  v1::MemoryDigest digest;
  digest.set_coverage(coverage);
  if (coverage != v1::MEMORY_VERIFICATION_FULL &&
      coverage != v1::MEMORY_VERIFICATION_SAMPLED) {
    digest.set_coverage(v1::MEMORY_VERIFICATION_NONE);
    return digest;
  }
  digest.set_algorithm(v1::DIGEST_ALGORITHM_CRC32C_OF_PAGES);
  const auto slots = memory.slots();
  // Per slot, the page indices that go into its digest (gpa order).
  std::vector<std::vector<uint64_t>> chosen(slots.size());
  if (coverage == v1::MEMORY_VERIFICATION_SAMPLED) {
    digest.set_sample_seed(seed);
    digest.set_sample_pages(sample_pages);
    std::vector<uint64_t> global;
    global.reserve(sample_pages);
    uint64_t state = seed;
    const uint64_t total = memory.total_pages();
    for (uint32_t i = 0; i < sample_pages && total > 0; ++i) {
      global.push_back(SplitMix64(&state) % total);
    }
    std::sort(global.begin(), global.end());
    size_t slot = 0;
    uint64_t slot_first = 0;  // global index of the slot's first page
    for (uint64_t g : global) {
      while (g >= slot_first + slots[slot].npages()) {
        slot_first += slots[slot].npages();
        ++slot;
      }
      chosen[slot].push_back(g - slot_first);
    }
  }
  for (size_t i = 0; i < slots.size(); ++i) {
    const mmu::Memslot& s = slots[i];
    uint32_t crc = 0;
    uint64_t pages = 0;
    static const uint32_t kZeroPageCrc = [] {
      static const uint8_t zero[mmu::kPageSize] = {};
      return Crc32c(0, zero, sizeof(zero));
    }();
    uint64_t hole_from = 0, hole_to = 0;  // known hole [from, to)
    auto page_crc = [&](uint64_t page) {
      if (page >= hole_from && page < hole_to) return kZeroPageCrc;
      const uint64_t end = HoleEnd(memory, s, page);
      if (end > page) {
        hole_from = page;
        hole_to = end;
        return kZeroPageCrc;
      }
      return PageCrc(s, page);
    };
    auto add_crc = [&](uint32_t page_crc_value) {
      uint8_t le[4];
      AppendLe32(page_crc_value, le);
      crc = Crc32c(crc, le, 4);
      ++pages;
    };
    if (coverage == v1::MEMORY_VERIFICATION_FULL) {
      // One SEEK_DATA per hole; within data, read the pages.
      for (uint64_t p = 0; p < s.npages();) {
        const uint64_t end = HoleEnd(memory, s, p);
        for (; p < end; ++p) add_crc(kZeroPageCrc);
        // Up to the next 2 MiB boundary at least, then ask again.
        const uint64_t stop = std::min(s.npages(), (p | 511) + 1);
        for (; p < stop; ++p) add_crc(PageCrc(s, p));
      }
    } else {
      for (uint64_t p : chosen[i]) add_crc(page_crc(p));
    }

    v1::MemslotDigest* m = digest.add_memslots();
    m->set_slot_id(s.slot);
    m->set_digest(crc);
    m->set_pages(pages);
  }
  return digest;
}

absl::Status CompareDigests(const v1::MemoryDigest& want,
                            const v1::MemoryDigest& got) {
  if (want.memslots_size() != got.memslots_size()) {
    return absl::DataLossError(absl::StrCat("digest covers ", got.memslots_size(),
                                            " memslots, expected ",
                                            want.memslots_size()));
  }
  for (int i = 0; i < want.memslots_size(); ++i) {
    const v1::MemslotDigest& a = want.memslots(i);
    const v1::MemslotDigest& b = got.memslots(i);
    if (a.slot_id() != b.slot_id() || a.digest() != b.digest() ||
        a.pages() != b.pages()) {
      return absl::DataLossError(absl::StrCat(
          "memory digest mismatch in memslot ", a.slot_id(), ": source 0x",
          absl::Hex(a.digest()), " over ", a.pages(), " pages, destination 0x",
          absl::Hex(b.digest()), " over ", b.pages(), " pages"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> RawBatchDecoder::Apply(const v1::PageBatch& batch,
                                                uint32_t stream_index,
                                                uint32_t stream_count,
                                                mmu::GuestMemory& memory) {
  if (batch.compression() != v1::COMPRESSION_NONE) {
    return absl::UnimplementedError(
        absl::StrCat("batch ", batch.sequence(), " uses ",
                     v1::Compression_Name(batch.compression()),
                     "; this receiver decodes COMPRESSION_NONE only"));
  }
  if (batch.uncompressed_size_bytes() > kMaxBatchPayloadBytes ||
      batch.runs_size() > static_cast<int>(kMaxRunsPerBatch) ||
      batch.runs_size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch ", batch.sequence(), ": ", batch.runs_size(), " runs / ",
        batch.uncompressed_size_bytes(), " payload bytes outside (0, ",
        kMaxRunsPerBatch, "] / [0, ", kMaxBatchPayloadBytes, "]"));
  }
  if (batch.payload().size() != batch.uncompressed_size_bytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch ", batch.sequence(), ": payload is ",
                     batch.payload().size(), " bytes, header says ",
                     batch.uncompressed_size_bytes()));
  }
  // Pass 1: validate everything; nothing is written before it succeeds.
  uint64_t offset = 0;
  uint64_t pages = 0;
  for (const v1::PageRun& run : batch.runs()) {
    const uint64_t len = uint64_t{run.page_count()} << mmu::kPageShift;
    if (run.gpa() % mmu::kPageSize != 0 || run.page_count() == 0 ||
        !memory.GpaToHva(run.gpa(), len).ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "batch ", batch.sequence(), ": run gpa 0x", absl::Hex(run.gpa()),
          " + ", run.page_count(), " pages is unaligned, empty or not inside "
          "one memslot of guest memory"));
    }
    if (StreamForGpa(run.gpa(), stream_count) != stream_index ||
        run.gpa() / kStripeBytes != (run.gpa() + len - 1) / kStripeBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "batch ", batch.sequence(), ": run at gpa 0x", absl::Hex(run.gpa()),
          " does not belong to stream ", stream_index, " of ", stream_count,
          " (runs must stay inside one 2 MiB stripe of their stream)"));
    }
    uint64_t want_payload = 0;
    switch (run.encoding()) {
      case v1::PAGE_ENCODING_RAW:
        want_payload = len;
        break;
      case v1::PAGE_ENCODING_ZERO:
        want_payload = 0;
        break;
      default:
        return absl::UnimplementedError(absl::StrCat(
            "batch ", batch.sequence(), ": encoding ",
            v1::PageEncoding_Name(run.encoding()),
            " is not supported by this receiver"));
    }
    if (run.payload_bytes() != want_payload) {
      return absl::InvalidArgumentError(
          absl::StrCat("batch ", batch.sequence(), ": run payload_bytes ",
                       run.payload_bytes(), ", expected ", want_payload));
    }
    offset += want_payload;
    pages += run.page_count();
  }
  if (offset != batch.uncompressed_size_bytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch ", batch.sequence(), ": runs consume ", offset,
                     " payload bytes, header says ",
                     batch.uncompressed_size_bytes()));
  }
  const uint32_t crc = Crc32c(0, batch.payload().data(), batch.payload().size());
  if (crc != batch.payload_crc32c()) {
    return absl::DataLossError(absl::StrCat(
        "batch ", batch.sequence(), " on stream ", stream_index,
        ": CRC-32C 0x", absl::Hex(crc), " but the sender computed 0x",
        absl::Hex(batch.payload_crc32c()), "; not applied"));
  }
  // Pass 2: apply.
  const uint8_t* src = reinterpret_cast<const uint8_t*>(batch.payload().data());
  for (const v1::PageRun& run : batch.runs()) {
    const uint64_t len = uint64_t{run.page_count()} << mmu::kPageShift;
    uint8_t* dst = *memory.GpaToHva(run.gpa(), len);
    // SAFETY: [dst, dst + len) lies in one memslot (checked in pass 1); the
    // destination's vCPUs do not run before Switchover, so nothing races.
    if (run.encoding() == v1::PAGE_ENCODING_RAW) {
      std::memcpy(dst, src, len);
      src += len;
    } else {
      std::memset(dst, 0, len);
    }
  }
  return pages;
}

}  // namespace ferry::migration
