// GuestConfig: a VmSpec checked against the guest ABI (agent/guest/abi.h)
// and a backend's limits, resolved to the numbers the params page carries.
// Validation happens here, before anything is allocated, so a bad spec
// leaves nothing behind.
#ifndef FERRY_AGENT_VMM_GUEST_CONFIG_H_
#define FERRY_AGENT_VMM_GUEST_CONFIG_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/guest/abi.h"
#include "proto/vm.pb.h"

namespace ferry::vmm {

struct GuestConfig {
  uint64_t memory_bytes = 0;
  uint32_t vcpu_count = 0;
  uint64_t kind = FERRY_WL_UNSPECIFIED;  // FERRY_WL_*
  uint64_t ws_pages = 0;
  uint64_t dirty_pages_per_sec = 0;      // whole VM; 0 = unthrottled
  uint64_t seed = 0;                     // never 0 once resolved
  uint64_t hot_fraction_permille = 100;
  uint64_t hot_probability_permille = 900;
  // The guest verifies a chunk of its slice every N batches, so a lost page
  // shows up in selfcheck_errors while it runs, not only on demand.
  uint64_t verify_interval_batches = 16;
  uint64_t verify_chunk_pages = 64;
  // Words of pseudo-random filler per page write (PageFill); 0 = stamp only.
  uint64_t fill_words = 0;
  std::vector<uint64_t> vcpu_kind;       // MIXED: FERRY_WL_* per vCPU
};

// Checks `spec` and resolves it. Every error is INVALID_ARGUMENT naming the
// field, what was wrong and what to do. `max_vcpus` is the backend's limit.
// A zero seed is replaced by `fallback_seed` (the caller logs it).
absl::StatusOr<GuestConfig> ResolveGuestConfig(const v1::VmSpec& spec,
                                               uint32_t max_vcpus,
                                               uint64_t fallback_seed);

// The params page for `config`; `tsc_hz` is the guest clock's frequency.
ferry_guest_params MakeGuestParams(const GuestConfig& config, uint64_t tsc_hz);

// Working-set pages that fit in `memory_bytes` after the fixed layout,
// including an out-of-line stamp table when it is needed. 0 if none fit.
uint64_t MaxWorkingSetPages(uint64_t memory_bytes);

// FERRY_WL_* for a proto kind; FERRY_WL_UNSPECIFIED if unknown.
uint64_t WorkloadKindToAbi(v1::WorkloadKind kind);

}  // namespace ferry::vmm

#endif  // FERRY_AGENT_VMM_GUEST_CONFIG_H_
