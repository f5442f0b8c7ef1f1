#include "agent/vmm/guest_image.h"

#include <cstddef>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "agent/guest/payload.h"
#include "common/status_macros.h"

namespace ferry::vmm {
namespace {

uint64_t LoadStatusWord(const uint8_t* page, size_t offset) {
  // SAFETY: `page` is the host mapping of a whole status page (checked by
  // GpaToHva); offset is a field offset < 4 KiB and 8-aligned. The vCPU may
  // be storing to it concurrently, hence the atomic load.
  return __atomic_load_n(reinterpret_cast<const uint64_t*>(page + offset),
                         __ATOMIC_RELAXED);
}

#define STATUS_FIELD(page, field) \
  LoadStatusWord(page, offsetof(ferry_guest_status, field))

VcpuCounters ReadOne(const uint8_t* page) {
  VcpuCounters c;
  c.initialised = STATUS_FIELD(page, magic) == FERRY_GUEST_STATUS_MAGIC;
  if (!c.initialised) return c;
  c.state = STATUS_FIELD(page, state);
  c.fatal_code = STATUS_FIELD(page, fatal_code);
  c.iterations = STATUS_FIELD(page, iterations);
  c.pages_written = STATUS_FIELD(page, pages_written);
  c.pages_verified = STATUS_FIELD(page, pages_verified);
  c.selfcheck_errors = STATUS_FIELD(page, selfcheck_errors);
  c.last_stamp = STATUS_FIELD(page, last_stamp);
  c.first_bad_page = STATUS_FIELD(page, first_bad_page);
  return c;
}

#undef STATUS_FIELD

}  // namespace

absl::Status LoadGuestImage(const ferry_guest_params& params,
                            mmu::GuestMemory& memory) {
  if (guest::kGuestPayloadSize > guest::kGuestPayloadMax) {
    return absl::InternalError(absl::StrCat(
        "guest payload is ", guest::kGuestPayloadSize, " bytes, more than the ",
        guest::kGuestPayloadMax, " the ABI reserves"));
  }
  RETURN_IF_ERROR(memory.Write(
      FERRY_GUEST_PARAMS_GPA,
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(&params),
                          sizeof(params))));
  return memory.Write(guest::kGuestLoadGpa,
                      absl::MakeConstSpan(guest::kGuestPayload,
                                          guest::kGuestPayloadSize));
}

GuestTotals ReadGuestTotals(const mmu::GuestMemory& memory,
                            uint32_t vcpu_count) {
  GuestTotals totals;
  totals.vcpus.reserve(vcpu_count);
  for (uint32_t i = 0; i < vcpu_count; ++i) {
    absl::StatusOr<uint8_t*> page =
        memory.GpaToHva(FERRY_GUEST_STATUS_GPA_OF(i), FERRY_GUEST_PAGE_SIZE);
    VcpuCounters c = page.ok() ? ReadOne(*page) : VcpuCounters{};
    totals.iterations += c.iterations;
    totals.pages_written += c.pages_written;
    totals.pages_verified += c.pages_verified;
    totals.selfcheck_errors += c.selfcheck_errors;
    totals.vcpus.push_back(c);
  }
  return totals;
}

}  // namespace ferry::vmm
