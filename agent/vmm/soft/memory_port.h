// SoftMemoryPort: how a software-backend vCPU reaches guest memory. The
// workload core (agent/guest/workload.h) does every guest access through
// 64-bit load/store hooks; the soft backend forwards them here.
//
// The production port is the software MMU (mmu/softmmu/): it translates
// gpa -> hva through its shadow structures and marks the page dirty in its
// own write-protection log, which it exposes as a DirtyTracker of mode
// kSoftMmu. Plugging it in means implementing this interface (a thin
// adapter) and a SoftMemoryPortFactory; nothing else in agent/vmm changes.
//
// Contract:
//  * Load64/Store64 are called concurrently from every vCPU thread, each
//    call with that vCPU's index (lets the port attribute writes per vCPU,
//    like the dirty ring does). gpa is 8-aligned and inside guest memory:
//    the VMM validated the params page, so anything else is a VMM bug and
//    the port may crash.
//  * Accesses must be single-copy atomic 64-bit (relaxed is enough): other
//    threads (migration copier, host checker) read the same memory.
//  * A Store64 after a tracker's Start() must be reported by a later
//    Collect() of that tracker (DirtyTracker's contract).
//  * The port outlives every tracker it creates; the Machine owning the
//    port destroys it after the vCPU threads are joined.
#ifndef FERRY_AGENT_VMM_SOFT_MEMORY_PORT_H_
#define FERRY_AGENT_VMM_SOFT_MEMORY_PORT_H_

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "mmu/dirty_tracker.h"
#include "mmu/guest_memory.h"

namespace ferry::vmm {

class SoftMemoryPort {
 public:
  virtual ~SoftMemoryPort() = default;

  virtual uint64_t Load64(uint32_t vcpu, uint64_t gpa) = 0;
  virtual void Store64(uint32_t vcpu, uint64_t gpa, uint64_t value) = 0;

  // kUnspecified = the port's own mode (kSoftMmu for the software MMU).
  // Other modes: INVALID_ARGUMENT. At most one live tracker per port.
  virtual absl::StatusOr<std::unique_ptr<mmu::DirtyTracker>>
  CreateDirtyTracker(mmu::DirtyTrackingMode mode) = 0;
};

// Makes the port for one machine over `memory` (which outlives the port).
using SoftMemoryPortFactory =
    std::function<absl::StatusOr<std::unique_ptr<SoftMemoryPort>>(
        mmu::GuestMemory& memory, uint32_t vcpu_count)>;

}  // namespace ferry::vmm

#endif  // FERRY_AGENT_VMM_SOFT_MEMORY_PORT_H_
