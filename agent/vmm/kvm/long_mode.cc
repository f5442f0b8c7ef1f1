#include "agent/vmm/kvm/long_mode.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "agent/guest/abi.h"
#include "common/status_macros.h"

namespace ferry::vmm {
namespace {

constexpr uint64_t kPml4Gpa = FERRY_GUEST_PAGE_TABLES_GPA;
constexpr uint64_t kPdptGpa = kPml4Gpa + 0x1000;
constexpr uint64_t kPt0Gpa = kPml4Gpa + 0x2000;
constexpr uint64_t kPdBaseGpa = kPml4Gpa + 0x3000;
constexpr uint64_t kMaxPds = (FERRY_GUEST_PAGE_TABLES_END - kPdBaseGpa) / 0x1000;
constexpr uint64_t kTssGpa = FERRY_GUEST_GDT_GPA + 0x80;
// A 104-byte 64-bit TSS followed by an I/O permission bitmap for ports
// 0..0xfff (all allowed) and its 0xff terminator byte; the limit covers both.
constexpr uint32_t kTssIoBitmapOffset = 0x68;
constexpr uint32_t kTssIoBitmapBytes = 0x1000 / 8;
constexpr uint32_t kTssLimit = kTssIoBitmapOffset + kTssIoBitmapBytes;
static_assert(FERRY_GUEST_EVENT_PORT < kTssIoBitmapBytes * 8,
              "the event port must be inside the TSS I/O bitmap");
static_assert(kTssGpa + kTssLimit < FERRY_GUEST_IDT_GPA, "TSS overlaps IDT");
constexpr uint16_t kTssSelector = 0x28;
constexpr uint64_t kGiB = uint64_t{1} << 30;
static_assert(kMaxPds <= 512, "one PDPT");

// Accessed bit preset so the CPU never writes a descriptor.
constexpr uint64_t kGdt[] = {
    0,                      // null
    0x00af9b000000ffffull,  // 0x08 kernel code (unused): DPL0, L=1
    0x00cf93000000ffffull,  // 0x10 kernel data (unused): DPL0
    0x00affb000000ffffull,  // 0x18 user code: P, DPL3, exec/read, L=1, G=1
    0x00cff3000000ffffull,  // 0x20 user data: P, DPL3, read/write, D=1, G=1
};
static_assert((3 << 3 | 3) == FERRY_GUEST_USER_CS, "user code selector");
static_assert((4 << 3 | 3) == FERRY_GUEST_USER_DS, "user data selector");

constexpr uint64_t kPresent = 1 << 0, kWritable = 1 << 1, kUser = 1 << 2;
constexpr uint64_t kAccessed = 1 << 5, kDirty = 1 << 6, kHuge = 1 << 7;
constexpr uint64_t kTable = kPresent | kWritable | kUser | kAccessed;

constexpr uint64_t kCr0Pe = 1ull << 0, kCr0Mp = 1ull << 1, kCr0Et = 1ull << 4;
constexpr uint64_t kCr0Ne = 1ull << 5, kCr0Wp = 1ull << 16;
constexpr uint64_t kCr0Pg = 1ull << 31;
constexpr uint64_t kCr4Pae = 1ull << 5;
constexpr uint64_t kEferLme = 1ull << 8, kEferLma = 1ull << 10;

absl::Status WriteWords(mmu::GuestMemory& memory, uint64_t gpa,
                        const std::vector<uint64_t>& words) {
  return memory.Write(
      gpa, absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(words.data()),
                               words.size() * 8));
}

bool Supervisor(uint64_t gpa) {
  return (gpa >= FERRY_GUEST_GDT_GPA && gpa < FERRY_GUEST_PARAMS_GPA) ||
         (gpa >= FERRY_GUEST_PAGE_TABLES_GPA && gpa < FERRY_GUEST_PAGE_TABLES_END);
}

absl::Status WriteGdt(mmu::GuestMemory& memory) {
  std::vector<uint64_t> gdt(std::begin(kGdt), std::end(kGdt));
  // 64-bit TSS descriptor (two slots): type 0xb = busy TSS, present.
  gdt.push_back((kTssLimit & 0xffff) | ((kTssGpa & 0xffffff) << 16) |
                (0x8bull << 40) | (uint64_t{(kTssLimit >> 16) & 0xf} << 48) |
                (((kTssGpa >> 24) & 0xff) << 56));
  gdt.push_back(kTssGpa >> 32);
  RETURN_IF_ERROR(WriteWords(memory, FERRY_GUEST_GDT_GPA, gdt));
  // TSS: zero except the I/O map base and the bitmap's terminator. The
  // payload's `out` needs permission at CPL3: hardware VMX grants it through
  // IOPL=3 in RFLAGS, but kvm_pvm ignores IOPL (it reads back as 0) and
  // checks only the TSS bitmap, triple-faulting on any port the bitmap does
  // not cover. Measured on this machine; both are set so either works.
  const uint16_t iomap_base = kTssIoBitmapOffset;
  RETURN_IF_ERROR(memory.Write(
      kTssGpa + 0x66,
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(&iomap_base), 2)));
  const uint8_t terminator = 0xff;
  return memory.Write(kTssGpa + kTssLimit, absl::MakeConstSpan(&terminator, 1));
}

absl::Status WritePageTables(mmu::GuestMemory& memory, uint64_t pds) {
  RETURN_IF_ERROR(WriteWords(memory, kPml4Gpa, {kPdptGpa | kTable}));
  std::vector<uint64_t> pdpt(pds);
  for (uint64_t i = 0; i < pds; ++i) pdpt[i] = (kPdBaseGpa + i * 0x1000) | kTable;
  RETURN_IF_ERROR(WriteWords(memory, kPdptGpa, pdpt));
  std::vector<uint64_t> pt0(512);
  for (uint64_t i = 1; i < 512; ++i) {  // entry 0 stays 0: null guard
    const uint64_t gpa = i << 12;
    pt0[i] = gpa | kPresent | kWritable | kAccessed | kDirty |
             (Supervisor(gpa) ? 0 : kUser);
  }
  RETURN_IF_ERROR(WriteWords(memory, kPt0Gpa, pt0));
  std::vector<uint64_t> pd(512 * pds);
  for (uint64_t i = 0; i < pd.size(); ++i) {
    pd[i] = (i << 21) | kTable | kDirty | kHuge;
  }
  pd[0] = kPt0Gpa | kTable;  // the first 2 MiB in 4 KiB pages
  return WriteWords(memory, kPdBaseGpa, pd);
}

kvm_segment UserSegment(uint16_t selector, bool code) {
  kvm_segment s{};
  s.limit = 0xffffffff;
  s.selector = selector;
  s.type = code ? 0xb : 0x3;  // accessed exec/read code, accessed r/w data
  s.present = 1;
  s.dpl = 3;
  s.db = code ? 0 : 1;  // must be 0 with L=1
  s.s = 1;
  s.l = code ? 1 : 0;
  s.g = 1;
  return s;
}

}  // namespace

absl::Status WriteLongModeTables(mmu::GuestMemory& memory) {
  const uint64_t pds = (memory.total_bytes() + kGiB - 1) / kGiB;
  if (pds > kMaxPds) {
    return absl::InvalidArgumentError(absl::StrCat(
        "VmSpec.memory_bytes: the KVM backend maps at most ", kMaxPds,
        " GiB of guest memory; lower it"));
  }
  RETURN_IF_ERROR(WriteGdt(memory));
  return WritePageTables(memory, pds);
}

void SetLongModeSregs(kvm_sregs* sregs) {
  sregs->cs = UserSegment(FERRY_GUEST_USER_CS, /*code=*/true);
  sregs->ds = sregs->es = sregs->fs = sregs->gs = sregs->ss =
      UserSegment(FERRY_GUEST_USER_DS, /*code=*/false);
  sregs->tr = kvm_segment{};
  sregs->tr.base = kTssGpa;
  sregs->tr.limit = kTssLimit;
  sregs->tr.selector = kTssSelector;
  sregs->tr.type = 0xb;  // busy 64-bit TSS
  sregs->tr.present = 1;
  sregs->ldt = kvm_segment{};
  sregs->ldt.type = 0x2;
  sregs->ldt.unusable = 1;
  sregs->gdt.base = FERRY_GUEST_GDT_GPA;
  sregs->gdt.limit = 7 * 8 - 1;
  sregs->idt.base = FERRY_GUEST_IDT_GPA;
  sregs->idt.limit = 0;
  sregs->cr0 = kCr0Pe | kCr0Mp | kCr0Et | kCr0Ne | kCr0Wp | kCr0Pg;
  sregs->cr3 = kPml4Gpa;
  sregs->cr4 = kCr4Pae;  // no OSFXSR: the payload is general-registers only
  sregs->efer = kEferLme | kEferLma;
}

kvm_regs EntryRegs(uint32_t vcpu_index) {
  kvm_regs regs{};
  regs.rip = FERRY_GUEST_ENTRY_GPA;
  regs.rdi = vcpu_index;
  regs.rsp = FERRY_GUEST_STACK_TOP_OF(vcpu_index);
  regs.rflags = FERRY_GUEST_ENTRY_RFLAGS;
  return regs;
}

}  // namespace ferry::vmm
