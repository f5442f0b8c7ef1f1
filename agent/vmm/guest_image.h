// Putting the guest into fresh memory, and reading what it reports back.
// Backend-independent: both backends run the same workload over the same
// layout (abi.h), so a VM's memory looks the same whichever runs it.
#ifndef FERRY_AGENT_VMM_GUEST_IMAGE_H_
#define FERRY_AGENT_VMM_GUEST_IMAGE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "agent/guest/abi.h"
#include "mmu/guest_memory.h"

namespace ferry::vmm {

// Writes the params page and the payload image into zeroed memory. The
// backend adds its own structures (KVM: GDT and page tables).
absl::Status LoadGuestImage(const ferry_guest_params& params,
                            mmu::GuestMemory& memory);

// One vCPU's status page, as the guest last published it.
struct VcpuCounters {
  bool initialised = false;  // status magic present
  uint64_t state = FERRY_VCPU_STATE_NONE;
  uint64_t fatal_code = FERRY_GUEST_FATAL_NONE;
  uint64_t iterations = 0;
  uint64_t pages_written = 0;
  uint64_t pages_verified = 0;
  uint64_t selfcheck_errors = 0;
  uint64_t last_stamp = 0;
  uint64_t first_bad_page = FERRY_GUEST_NO_PAGE;
};

struct GuestTotals {
  uint64_t iterations = 0;
  uint64_t pages_written = 0;
  uint64_t pages_verified = 0;
  uint64_t selfcheck_errors = 0;
  std::vector<VcpuCounters> vcpus;
};

// Reads the status pages of vCPUs [0, vcpu_count) with relaxed atomic loads
// (the vCPUs may be writing them). Fields are individually consistent only.
GuestTotals ReadGuestTotals(const mmu::GuestMemory& memory,
                            uint32_t vcpu_count);

}  // namespace ferry::vmm

#endif  // FERRY_AGENT_VMM_GUEST_IMAGE_H_
