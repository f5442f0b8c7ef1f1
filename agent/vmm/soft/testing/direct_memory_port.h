// DirectMemoryPort (testonly): a SoftMemoryPort that reaches guest memory
// straight through GuestMemory's mapping and marks written pages in a
// bitmap, standing in for the software MMU until mmu/softmmu/ lands. Its
// tracker reports mode kFake: nothing is write-protected, every Store64
// while tracking simply sets the page's bit (atomically, so vCPU threads
// and the collector never lose a bit).
#ifndef FERRY_AGENT_VMM_SOFT_TESTING_DIRECT_MEMORY_PORT_H_
#define FERRY_AGENT_VMM_SOFT_TESTING_DIRECT_MEMORY_PORT_H_

#include <atomic>
#include <memory>
#include <vector>

#include "agent/vmm/soft/memory_port.h"
#include "mmu/dirty_set.h"

namespace ferry::vmm::testing {

class DirectMemoryPort : public SoftMemoryPort {
 public:
  explicit DirectMemoryPort(mmu::GuestMemory& memory);

  uint64_t Load64(uint32_t vcpu, uint64_t gpa) override;
  void Store64(uint32_t vcpu, uint64_t gpa, uint64_t value) override;
  absl::StatusOr<std::unique_ptr<mmu::DirtyTracker>> CreateDirtyTracker(
      mmu::DirtyTrackingMode mode) override;

 private:
  class Tracker;

  // Index into slots_ of the slot holding gpa; traps if none (VMM bug).
  size_t SlotIndex(uint64_t gpa) const;
  uint64_t* Word(uint64_t gpa, size_t* slot_index) const;

  std::vector<mmu::Memslot> slots_;
  mmu::DirtySet live_;  // shaped like slots_, set by Store64 while tracking
  std::atomic<bool> tracking_{false};
  std::atomic<bool> has_tracker_{false};
};

// The factory to hand to SoftBackend.
SoftMemoryPortFactory DirectMemoryPortFactory();

}  // namespace ferry::vmm::testing

#endif  // FERRY_AGENT_VMM_SOFT_TESTING_DIRECT_MEMORY_PORT_H_
