#include "agent/migration/source/batch_encoder.h"

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "agent/migration/destination/wire.h"

namespace ferry::migration {
namespace {

bool AllZero(const uint8_t* p) {
  uint64_t acc = 0;
  for (size_t i = 0; i < mmu::kPageSize; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    acc |= w;
    if ((i & 511) == 504 && acc != 0) return false;
  }
  return acc == 0;
}

}  // namespace

absl::Status RawBatchEncoder::Encode(absl::Span<const mmu::PageRun> runs,
                                     const mmu::GuestMemory& memory,
                                     bool skip_zero, v1::PageBatch* out,
                                     EncodeStats* stats) {
  uint64_t total = 0;
  for (const mmu::PageRun& r : runs) total += r.npages;
  if (total > kBatchPages) {
    return absl::InvalidArgumentError(
        absl::StrCat("Encode: ", total, " pages exceed ", kBatchPages));
  }
  std::string* payload = out->mutable_payload();
  payload->clear();
  payload->reserve(total * mmu::kPageSize);
  v1::PageRun* cur = nullptr;
  for (const mmu::PageRun& r : runs) {
    absl::StatusOr<uint8_t*> hva = memory.GpaToHva(r.gpa, r.length());
    if (!hva.ok()) return hva.status();
    absl::StatusOr<mmu::Memslot> slot = memory.FindSlot(r.gpa);
    if (!slot.ok()) return slot.status();
    uint64_t hole_end = 0;    // run-relative: [.., hole_end) is a hole
    uint64_t next_check = 0;  // run-relative page of the next SEEK_DATA
    for (uint64_t i = 0; i < r.npages; ++i) {
      const uint64_t gpa = r.gpa + (i << mmu::kPageShift);
      if (skip_zero) {
        // Round 0: never read pages that were never written (a read would
        // fault them in and allocate them). A write after this check is
        // in the dirty log, which started before round 0.
        if (i >= next_check) {
          const uint64_t page = r.first_page + i;
          hole_end = HoleEnd(memory, *slot, page) - r.first_page;
          next_check = hole_end > i ? hole_end : ((page | 511) + 1) - r.first_page;
        }
        if (i < hole_end) {
          ++stats->zero_pages;
          cur = nullptr;
          continue;
        }
      }
      const size_t at = payload->size();
      // SAFETY: page i of run r lies in one memslot (GpaToHva checked the
      // whole run); vCPUs may write it concurrently, which only tears the
      // copy (see the header).
      payload->append(reinterpret_cast<const char*>(*hva + (i << mmu::kPageShift)),
                      mmu::kPageSize);
      const bool zero = AllZero(reinterpret_cast<const uint8_t*>(&(*payload)[at]));
      if (zero) payload->resize(at);
      if (zero) {
        ++stats->zero_pages;
        if (skip_zero) {
          cur = nullptr;
          continue;
        }
      } else {
        ++stats->data_pages;
      }
      const v1::PageEncoding enc =
          zero ? v1::PAGE_ENCODING_ZERO : v1::PAGE_ENCODING_RAW;
      if (cur != nullptr && cur->encoding() == enc &&
          cur->gpa() + (uint64_t{cur->page_count()} << mmu::kPageShift) == gpa) {
        cur->set_page_count(cur->page_count() + 1);
      } else {
        cur = out->add_runs();
        cur->set_gpa(gpa);
        cur->set_page_count(1);
        cur->set_encoding(enc);
      }
      if (!zero) cur->set_payload_bytes(cur->payload_bytes() + mmu::kPageSize);
    }
    cur = nullptr;  // input runs are not contiguous with each other
  }
  out->set_compression(v1::COMPRESSION_NONE);
  out->set_uncompressed_size_bytes(static_cast<uint32_t>(payload->size()));
  out->set_payload_crc32c(Crc32c(0, payload->data(), payload->size()));
  stats->payload_bytes += payload->size();
  return absl::OkStatus();
}

}  // namespace ferry::migration
