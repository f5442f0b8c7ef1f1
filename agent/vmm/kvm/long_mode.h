// x86-64 long mode for the payload, entered directly through KVM_SET_SREGS
// (no firmware), at CPL3 from the first instruction: on kvm_pvm CPL0 code
// is emulated ~10^4x slower (KVM-FACTS.md). Layout per agent/guest/abi.h:
//
//   0x1000  GDT: null, kernel code/data (unused), user code 0x1b (DPL3,
//           L=1), user data 0x23 (DPL3), 64-bit TSS at 0x28; TSS at +0x80
//   0x2000  IDT page, left empty: IDTR.limit = 0, so any exception is a
//           triple fault = KVM_EXIT_SHUTDOWN, which the VMM reports
//   0x10000 PML4, 0x11000 PDPT, 0x12000 page table of the first 2 MiB
//           (page 0 unmapped as a null guard; GDT/IDT/page tables
//           supervisor-only), 0x13000.. one PD per GiB in 2 MiB pages
//
// Every user mapping has U=1 at all levels; A/D bits are preset so the CPU
// never writes the tables.
#ifndef FERRY_AGENT_VMM_KVM_LONG_MODE_H_
#define FERRY_AGENT_VMM_KVM_LONG_MODE_H_

#include "kmod/kvm_abi.h"

#include <cstdint>

#include "absl/status/status.h"
#include "mmu/guest_memory.h"

namespace ferry::vmm {

// Writes the GDT, TSS and identity page tables covering all guest memory.
// INVALID_ARGUMENT if memory is too large for the page-table area.
absl::Status WriteLongModeTables(mmu::GuestMemory& memory);

// Segment and control registers for CPL3 long mode (starting from the
// vCPU's current sregs, so APIC base and the like keep KVM's values).
void SetLongModeSregs(kvm_sregs* sregs);

// RIP at the payload entry, RDI = vCPU index, RSP at its stack top,
// RFLAGS with IOPL=3 (abi.h).
kvm_regs EntryRegs(uint32_t vcpu_index);

}  // namespace ferry::vmm

#endif  // FERRY_AGENT_VMM_KVM_LONG_MODE_H_
