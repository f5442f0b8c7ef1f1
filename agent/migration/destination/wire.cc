#include "agent/migration/destination/wire.h"

#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/migration/codec/crc32c.h"

namespace ferry::migration {
namespace {

using codec::Crc32c;

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

uint64_t DataEnd(const mmu::GuestMemory& memory, const mmu::Memslot& slot,
                 uint64_t page) {
  const off_t base = static_cast<off_t>(slot.memfd_offset);
  const off_t at = base + static_cast<off_t>(page << mmu::kPageShift);
  const off_t hole = lseek(memory.memfd(), at, SEEK_HOLE);
  if (hole < 0) return slot.npages();  // unknown: treat the rest as backed
  const uint64_t hole_page =
      static_cast<uint64_t>(hole - base + mmu::kPageSize - 1) >> mmu::kPageShift;
  return std::min(std::max(hole_page, page + 1), slot.npages());
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
                               uint32_t sample_pages,
                               const std::function<bool(uint64_t gfn)>& known_zero) {
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
    uint64_t data_from = 0, data_to = 0;  // known backed [from, to)
    const uint64_t first_gfn = s.gpa >> mmu::kPageShift;
    auto page_crc = [&](uint64_t page) {
      if (known_zero && known_zero(first_gfn + page)) return kZeroPageCrc;
      if (page >= hole_from && page < hole_to) return kZeroPageCrc;
      if (page >= data_from && page < data_to) return PageCrc(s, page);
      // One SEEK_DATA per hole or per 2 MiB of data (an lseek costs more
      // than hashing a warm page).
      const uint64_t end = HoleEnd(memory, s, page);
      if (end > page) {
        hole_from = page;
        hole_to = end;
        return kZeroPageCrc;
      }
      data_from = page;
      data_to = std::min(s.npages(), (page | 511) + 1);
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
        for (; p < stop; ++p) {
          add_crc(known_zero && known_zero(first_gfn + p) ? kZeroPageCrc
                                                          : PageCrc(s, p));
        }
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

}  // namespace ferry::migration
