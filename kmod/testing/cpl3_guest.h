// A tiny 64-bit guest that runs at CPL3 (native speed on kvm_pvm, where CPL0
// is emulated; see KVM-FACTS.md), in the style of the KVM selftests: the
// host builds the GDT, TSS and identity-mapped page tables and enters long
// mode directly through KVM_SET_SREGS, with no firmware.
//
// The guest program: for each gpa in a list, store an 8-byte stamp at that
// address; then `out` to kDonePort and spin on `jmp .`. Re-arm it (new list,
// new stamp) with ArmWrites and run it again.
//
// Guest-physical layout:
//   slot 0, system [0, 2 MiB), never dirty-logged (the CPU's own page-walk
//     and descriptor accesses land here, keeping the data slot exact):
//     0x1000 GDT, 0x2000 TSS, 0x3000 PML4, 0x4000 PDPT, 0x5000 PD,
//     0x8000 page list (4096 gpas), 0x10000 code, stack below 0x1ff000.
//   slot 1, data [2 MiB, 2 MiB + data_pages * 4 KiB), flags as requested.
// Everything below 1 GiB is identity-mapped with 2 MiB user pages.
#ifndef FERRY_KMOD_TESTING_CPL3_GUEST_H_
#define FERRY_KMOD_TESTING_CPL3_GUEST_H_

#include "kmod/kvm_abi.h"

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "kmod/fd.h"
#include "kmod/kvm.h"
#include "kmod/vcpu.h"
#include "kmod/vm.h"

namespace ferry::kmod::testing {

class Cpl3Guest {
 public:
  static constexpr uint32_t kSystemSlot = 0;
  static constexpr uint32_t kDataSlot = 1;
  static constexpr uint64_t kPageSize = 4096;
  static constexpr uint64_t kDataGpa = 2ull << 20;
  static constexpr uint16_t kDonePort = 0xe0;
  static constexpr size_t kMaxWrites = 4096;

  struct Options {
    uint32_t data_pages = 512;  // at most (1 GiB - 2 MiB) / 4 KiB
    uint32_t data_slot_flags = KVM_MEM_LOG_DIRTY_PAGES;
  };

  // Allocates memfd-backed memory, writes the system structures and code,
  // and registers both memslots on `vm`.
  static absl::StatusOr<Cpl3Guest> Create(VmFd& vm, const Options& options);

  Cpl3Guest(Cpl3Guest&&) = default;
  Cpl3Guest& operator=(Cpl3Guest&&) = default;

  // CPUID (KVM's supported set: EFER.LME needs the long-mode bit) and
  // segment/control registers for CPL3 long mode.
  absl::Status SetUpVcpu(const Kvm& kvm, const VcpuFd& vcpu) const;
  // Points the vCPU at the program, to write `stamp` at the start of each
  // data page in `pages` (indices into the data slot).
  absl::Status ArmWrites(const VcpuFd& vcpu, absl::Span<const uint64_t> pages,
                         uint64_t stamp);
  // Runs until the guest's `out` to kDonePort. Any other exit is an error
  // naming it, except KVM_EXIT_DIRTY_RING_FULL when `on_ring_full` is given
  // (it must harvest and reset; the run then resumes).
  absl::Status RunUntilDone(VcpuFd& vcpu,
                            absl::Duration timeout = absl::Seconds(20),
                            std::function<absl::Status()> on_ring_full = {});

  // The first 8 bytes of data page `page`, as the guest left them.
  uint64_t ReadDataWord(uint64_t page) const;
  uint32_t data_pages() const { return data_pages_; }

 private:
  Cpl3Guest(Fd memfd, Mmap memory, uint32_t data_pages)
      : memfd_(std::move(memfd)),
        memory_(std::move(memory)),
        data_pages_(data_pages) {}

  void WriteSystemStructures();
  uint8_t* Gpa(uint64_t gpa) const { return memory_.bytes() + gpa; }

  Fd memfd_;
  Mmap memory_;  // gpa 0 .. 2 MiB + data
  uint32_t data_pages_;
};

}  // namespace ferry::kmod::testing

#endif  // FERRY_KMOD_TESTING_CPL3_GUEST_H_
