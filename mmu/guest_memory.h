// Guest RAM: one memfd, mapped MAP_SHARED, carved into KVM memslots.
//
// Why a memfd: another process (the destination agent's receiver in a test,
// a vhost-user backend, a crash dumper) can map the same pages by fd, and
// the file offset of every slot is stable and reported (Memslot::memfd_offset).
//
// Host virtual layout: one PROT_NONE reservation holds every slot at a 2 MiB
// aligned address with a 2 MiB PROT_NONE guard after it, so an overrun past
// a slot faults instead of silently writing the next slot, and a slot whose
// gpa is 2 MiB aligned has gpa ≡ hva (mod 2 MiB), which KVM needs before it
// maps a guest large page with a host huge page. Slot offsets in the memfd
// are rounded up to 2 MiB for the same reason (shmem THP is file-aligned);
// the holes are never touched and cost nothing.
//
// Thread-safety: the object is immutable after Create(); the memory itself is
// shared with vCPUs and must be accessed as racy shared memory.
#ifndef FERRY_MMU_GUEST_MEMORY_H_
#define FERRY_MMU_GUEST_MEMORY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "mmu/memslot.h"

namespace ferry::mmu {

struct MemslotSpec {
  uint32_t slot = 0;
  uint64_t gpa = 0;
  uint64_t size = 0;
};

struct GuestMemoryLayout {
  std::vector<MemslotSpec> slots;
  // Prefault every page (MADV_POPULATE_WRITE, or touching each page on
  // kernels older than 5.14). The destination of a migration wants this:
  // copying into unpopulated memory is ~17x slower (KVM-FACTS.md).
  bool populate = false;
  // MADV_HUGEPAGE on the mapping. Only a hint: shmem THP also needs
  // /sys/kernel/mm/transparent_hugepage/shmem_enabled = advise (or always).
  bool transparent_hugepages = false;
  // Name shown in /proc/<pid>/fd and /proc/<pid>/maps.
  std::string name = "ferry-guest-ram";
};

// Slots of at most `max_slot_bytes` each, contiguous from gpa 0, ids from 0.
// Per-slot dirty bitmaps stay small and can be harvested in parallel.
// ram_bytes and max_slot_bytes must be non-zero multiples of kPageSize.
absl::StatusOr<GuestMemoryLayout> DefaultLayout(
    uint64_t ram_bytes, uint64_t max_slot_bytes = uint64_t{4} << 30);

// Checks a layout without allocating: non-empty, page-multiple sizes and
// gpas, no zero size, no gpa overflow, no overlapping ranges, unique ids.
absl::Status ValidateLayout(const GuestMemoryLayout& layout);

class GuestMemory {
 public:
  static absl::StatusOr<std::unique_ptr<GuestMemory>> Create(
      const GuestMemoryLayout& layout);

  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;
  ~GuestMemory();

  // The memfd holding all slots; owned by this object, valid until it dies.
  int memfd() const { return memfd_; }
  uint64_t memfd_size() const { return memfd_size_; }
  // Sum of slot sizes (guest RAM, not counting alignment holes).
  uint64_t total_bytes() const { return total_bytes_; }
  uint64_t total_pages() const { return total_bytes_ >> kPageShift; }
  bool transparent_hugepages_advised() const { return thp_advised_; }

  // Sorted by gpa.
  absl::Span<const Memslot> slots() const { return slots_; }
  void ForEachSlot(absl::FunctionRef<void(const Memslot&)> fn) const;

  // The slot containing `gpa`; NOT_FOUND if none does.
  absl::StatusOr<Memslot> FindSlot(uint64_t gpa) const;
  absl::StatusOr<Memslot> SlotById(uint32_t slot) const;

  // Host address of [gpa, gpa + len); the range must lie in one slot.
  // len 0 is allowed (checks that gpa itself is in a slot).
  absl::StatusOr<uint8_t*> GpaToHva(uint64_t gpa, uint64_t len = 1) const;
  absl::StatusOr<absl::Span<uint8_t>> Range(uint64_t gpa, uint64_t len) const;

  // Copies in/out of guest memory; the range may cross adjacent slots but
  // every byte must be backed. Not atomic with respect to running vCPUs.
  // A VMM write must also be reported to the dirty log (DirtyLog::MarkDirty).
  absl::Status Read(uint64_t gpa, absl::Span<uint8_t> out) const;
  absl::Status Write(uint64_t gpa, absl::Span<const uint8_t> data);

 private:
  GuestMemory() = default;

  int memfd_ = -1;
  uint64_t memfd_size_ = 0;
  uint64_t total_bytes_ = 0;
  uint8_t* reservation_ = nullptr;
  uint64_t reservation_size_ = 0;
  bool thp_advised_ = false;
  std::vector<Memslot> slots_;  // sorted by gpa
};

}  // namespace ferry::mmu

#endif  // FERRY_MMU_GUEST_MEMORY_H_
