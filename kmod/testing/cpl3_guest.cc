#include "kmod/testing/cpl3_guest.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace ferry::kmod::testing {
namespace {

constexpr uint64_t kSystemBytes = 2ull << 20;
constexpr uint64_t kGdtGpa = 0x1000;
constexpr uint64_t kTssGpa = 0x2000;
constexpr uint64_t kPml4Gpa = 0x3000;
constexpr uint64_t kPdptGpa = 0x4000;
constexpr uint64_t kPdGpa = 0x5000;
constexpr uint64_t kListGpa = 0x8000;
constexpr uint64_t kCodeGpa = 0x10000;
constexpr uint64_t kStackTop = 0x1ff000;

// GDT slots. Selectors: index * 8 | RPL.
constexpr uint16_t kUserCodeSelector = 0x1b;  // index 3, RPL 3
constexpr uint16_t kUserDataSelector = 0x23;  // index 4, RPL 3
constexpr uint16_t kTssSelector = 0x28;       // index 5 (16-byte descriptor)
// 104-byte 64-bit TSS, then an all-allowed I/O bitmap for ports 0..0xfff and
// its 0xff terminator: kvm_pvm ignores IOPL and checks only this bitmap.
constexpr uint64_t kTssIoBitmapOffset = 0x68;
constexpr uint64_t kTssLimit = kTssIoBitmapOffset + 0x1000 / 8;

// Descriptors with the accessed bit preset, so the CPU never writes them.
constexpr uint64_t kGdt[] = {
    0,                      // null
    0x00af9b000000ffffull,  // 0x08 kernel code: P, DPL0, exec/read, L=1, G=1
    0x00cf93000000ffffull,  // 0x10 kernel data: P, DPL0, read/write, D=1, G=1
    0x00affb000000ffffull,  // 0x18 user code:   P, DPL3, exec/read, L=1, G=1
    0x00cff3000000ffffull,  // 0x20 user data:   P, DPL3, read/write, D=1, G=1
};

// Page-table entry bits.
constexpr uint64_t kPresent = 1 << 0, kWritable = 1 << 1, kUser = 1 << 2;
constexpr uint64_t kAccessed = 1 << 5, kDirty = 1 << 6, kHuge = 1 << 7;

// Control-register bits.
constexpr uint64_t kCr0Pe = 1ull << 0, kCr0Mp = 1ull << 1, kCr0Et = 1ull << 4;
constexpr uint64_t kCr0Ne = 1ull << 5, kCr0Wp = 1ull << 16;
constexpr uint64_t kCr0Pg = 1ull << 31;
constexpr uint64_t kCr4Pae = 1ull << 5, kCr4Osfxsr = 1ull << 9;
constexpr uint64_t kCr4Osxmmexcpt = 1ull << 10;
constexpr uint64_t kEferLme = 1ull << 8, kEferLma = 1ull << 10;
// RFLAGS: bit 1 is always 1; IOPL=3 lets CPL3 use `out` without a TSS I/O
// bitmap.
constexpr uint64_t kRflags = 0x2 | (3ull << 12);

// The guest program. In: rsi = gpa of a list of gpas, rcx = count,
// rbx = stamp, rdi = done port.
constexpr uint8_t kGuestCode[] = {
    0x48, 0x85, 0xc9,        // 0x00 test rcx, rcx
    0x74, 0x0f,              // 0x03 jz   done (0x14)
    0x48, 0x8b, 0x06,        // 0x05 loop: mov rax, [rsi]   ; next gpa
    0x48, 0x89, 0x18,        // 0x08 mov  [rax], rbx        ; the write
    0x48, 0x83, 0xc6, 0x08,  // 0x0b add  rsi, 8
    0x48, 0xff, 0xc9,        // 0x0f dec  rcx
    0x75, 0xf1,              // 0x12 jnz  loop (0x05)
    0x89, 0xfa,              // 0x14 done: mov edx, edi
    0xee,                    // 0x16 out  dx, al            ; "done" exit
    0xeb, 0xfe,              // 0x17 jmp  .  (hlt would #GP at CPL3)
};

kvm_segment Segment(uint16_t selector, uint8_t type, bool code) {
  kvm_segment s{};
  s.base = 0;
  s.limit = 0xffffffff;
  s.selector = selector;
  s.type = type;
  s.present = 1;
  s.dpl = 3;
  s.db = code ? 0 : 1;  // must be 0 with L=1
  s.s = 1;
  s.l = code ? 1 : 0;
  s.g = 1;
  return s;
}

// Watchdog: the SIGALRM handler sets immediate_exit on the running vCPU, so
// KVM_RUN returns even if the alarm fires between two runs.
std::atomic<VcpuFd*> g_watched_vcpu{nullptr};
std::atomic<bool> g_alarm_fired{false};

void OnAlarm(int) {
  g_alarm_fired.store(true);
  if (VcpuFd* vcpu = g_watched_vcpu.load()) vcpu->set_immediate_exit(true);
}

void InstallAlarmHandler() {
  static const bool kInstalled = [] {
    struct sigaction action {};
    action.sa_handler = OnAlarm;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return EINTR
    sigaction(SIGALRM, &action, nullptr);
    return true;
  }();
  (void)kInstalled;
}

}  // namespace

absl::StatusOr<Cpl3Guest> Cpl3Guest::Create(VmFd& vm, const Options& options) {
  const uint64_t data_bytes = uint64_t{options.data_pages} * kPageSize;
  if (options.data_pages == 0 || kDataGpa + data_bytes > (1ull << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Cpl3Guest: data_pages ", options.data_pages,
                     " must be 1..", ((1ull << 30) - kDataGpa) / kPageSize));
  }
  const uint64_t total = kSystemBytes + data_bytes;
  ASSIGN_OR_RETURN(Fd memfd, CreateMemfd("cpl3-guest", total));
  // SAFETY: a fresh shared mapping of the whole memfd; KVM maps the same
  // pages into the guest, so from here on the guest may write any of them
  // while it runs. Only the system area is written by the host while the
  // vCPU is stopped.
  ASSIGN_OR_RETURN(Mmap memory,
                   Mmap::Create(memfd.get(), total, PROT_READ | PROT_WRITE,
                                MAP_SHARED, 0, "cpl3 guest memory"));
  Cpl3Guest guest(std::move(memfd), std::move(memory), options.data_pages);
  guest.WriteSystemStructures();
  RETURN_IF_ERROR(
      vm.SetUserMemoryRegion(kSystemSlot, 0, kSystemBytes, guest.Gpa(0), 0));
  RETURN_IF_ERROR(vm.SetUserMemoryRegion(kDataSlot, kDataGpa, data_bytes,
                                         guest.Gpa(kDataGpa),
                                         options.data_slot_flags));
  return guest;
}

void Cpl3Guest::WriteSystemStructures() {
  // SAFETY (whole function): all offsets are inside the 2 MiB system area
  // of memory_, and no vCPU runs yet.
  std::memcpy(Gpa(kGdtGpa), kGdt, sizeof(kGdt));
  // 64-bit TSS descriptor (two GDT slots): type 0xb = busy TSS, present.
  uint64_t tss_low = (kTssLimit & 0xffff) | ((kTssGpa & 0xffffff) << 16) |
                     (0x8bull << 40) | (((kTssLimit >> 16) & 0xf) << 48) |
                     (((kTssGpa >> 24) & 0xff) << 56);
  uint64_t tss_high = kTssGpa >> 32;
  std::memcpy(Gpa(kGdtGpa + 5 * 8), &tss_low, 8);
  std::memcpy(Gpa(kGdtGpa + 6 * 8), &tss_high, 8);
  // TSS: all zero except the I/O map base and the bitmap's terminator.
  uint16_t iomap_base = static_cast<uint16_t>(kTssIoBitmapOffset);
  std::memcpy(Gpa(kTssGpa + 0x66), &iomap_base, 2);
  *Gpa(kTssGpa + kTssLimit) = 0xff;

  // Identity map of the first 1 GiB in 2 MiB user pages, A/D preset so the
  // CPU has nothing to write back.
  const uint64_t table = kPresent | kWritable | kUser | kAccessed;
  uint64_t pml4e = kPdptGpa | table, pdpte = kPdGpa | table;
  std::memcpy(Gpa(kPml4Gpa), &pml4e, 8);
  std::memcpy(Gpa(kPdptGpa), &pdpte, 8);
  for (uint64_t i = 0; i < 512; ++i) {
    uint64_t pde = (i << 21) | table | kDirty | kHuge;
    std::memcpy(Gpa(kPdGpa + i * 8), &pde, 8);
  }
  std::memcpy(Gpa(kCodeGpa), kGuestCode, sizeof(kGuestCode));
}

absl::Status Cpl3Guest::SetUpVcpu(const Kvm& kvm, const VcpuFd& vcpu) const {
  ASSIGN_OR_RETURN(std::vector<kvm_cpuid_entry2> cpuid,
                   kvm.GetSupportedCpuid());
  RETURN_IF_ERROR(vcpu.SetCpuid2(cpuid));
  ASSIGN_OR_RETURN(kvm_sregs sregs, vcpu.GetSregs());
  sregs.cs = Segment(kUserCodeSelector, /*type=*/0xb, /*code=*/true);
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss =
      Segment(kUserDataSelector, /*type=*/0x3, /*code=*/false);
  sregs.tr = kvm_segment{};
  sregs.tr.base = kTssGpa;
  sregs.tr.limit = static_cast<uint32_t>(kTssLimit);
  sregs.tr.selector = kTssSelector;
  sregs.tr.type = 0xb;  // busy 64-bit TSS
  sregs.tr.present = 1;
  sregs.ldt = kvm_segment{};
  sregs.ldt.type = 0x2;
  sregs.ldt.unusable = 1;
  sregs.gdt.base = kGdtGpa;
  sregs.gdt.limit = 7 * 8 - 1;
  sregs.idt.base = 0;   // no IDT: any exception becomes a triple fault,
  sregs.idt.limit = 0;  // i.e. KVM_EXIT_SHUTDOWN, which tests report.
  sregs.cr0 = kCr0Pe | kCr0Mp | kCr0Et | kCr0Ne | kCr0Wp | kCr0Pg;
  sregs.cr3 = kPml4Gpa;
  sregs.cr4 = kCr4Pae | kCr4Osfxsr | kCr4Osxmmexcpt;
  sregs.efer = kEferLme | kEferLma;
  return vcpu.SetSregs(sregs);
}

absl::Status Cpl3Guest::ArmWrites(const VcpuFd& vcpu,
                                  absl::Span<const uint64_t> pages,
                                  uint64_t stamp) {
  if (pages.size() > kMaxWrites) {
    return absl::InvalidArgumentError(
        absl::StrCat("ArmWrites: ", pages.size(), " pages > ", kMaxWrites));
  }
  for (size_t i = 0; i < pages.size(); ++i) {
    if (pages[i] >= data_pages_) {
      return absl::InvalidArgumentError(
          absl::StrCat("ArmWrites: page ", pages[i], " outside the ",
                       data_pages_, "-page data slot"));
    }
    uint64_t gpa = kDataGpa + pages[i] * kPageSize;
    // SAFETY: the list lives in the system area; the vCPU is stopped.
    std::memcpy(Gpa(kListGpa + i * 8), &gpa, 8);
  }
  kvm_regs regs{};
  regs.rip = kCodeGpa;
  regs.rsp = kStackTop;
  regs.rflags = kRflags;
  regs.rsi = kListGpa;
  regs.rcx = pages.size();
  regs.rbx = stamp;
  regs.rdi = kDonePort;
  return vcpu.SetRegs(regs);
}

absl::Status Cpl3Guest::RunUntilDone(
    VcpuFd& vcpu, absl::Duration timeout,
    std::function<absl::Status()> on_ring_full) {
  InstallAlarmHandler();
  g_alarm_fired.store(false);
  g_watched_vcpu.store(&vcpu);
  ::alarm(static_cast<unsigned>(std::ceil(absl::ToDoubleSeconds(timeout))));
  absl::Status status;
  for (;;) {
    absl::StatusOr<VcpuFd::RunResult> result = vcpu.Run();
    if (!result.ok()) {
      status = result.status();
      break;
    }
    if (*result == VcpuFd::RunResult::kInterrupted) {
      if (!g_alarm_fired.load()) continue;  // some other signal
      status = absl::DeadlineExceededError(absl::StrCat(
          "guest did not report done within ", absl::FormatDuration(timeout)));
      break;
    }
    const uint32_t reason = vcpu.exit_reason();
    if (reason == KVM_EXIT_IO) {
      absl::StatusOr<IoExit> io = vcpu.io();
      if (io.ok() && io->out && io->port == kDonePort) break;
    }
    if (reason == KVM_EXIT_DIRTY_RING_FULL && on_ring_full) {
      status = on_ring_full();
      if (!status.ok()) break;
      continue;
    }
    kvm_regs regs{};
    if (absl::StatusOr<kvm_regs> r = vcpu.GetRegs(); r.ok()) regs = *r;
    status = absl::InternalError(absl::StrFormat(
        "guest exited with %s at rip=0x%x (triple faults show up as "
        "KVM_EXIT_SHUTDOWN)",
        ExitReasonName(reason), regs.rip));
    break;
  }
  ::alarm(0);
  g_watched_vcpu.store(nullptr);
  vcpu.set_immediate_exit(false);
  return status;
}

uint64_t Cpl3Guest::ReadDataWord(uint64_t page) const {
  uint64_t value = 0;
  // SAFETY: the caller passes a page < data_pages_; the vCPU is stopped, so
  // the guest is not writing concurrently.
  std::memcpy(&value, Gpa(kDataGpa + page * kPageSize), 8);
  return value;
}

}  // namespace ferry::kmod::testing
