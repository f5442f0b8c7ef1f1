#include "kmod/vcpu.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "kmod/flex_buffer.h"
#include "kmod/ioctl_call.h"

namespace ferry::kmod {
namespace {

using internal::FlexBuffer;
using internal::Ioctl;
using internal::IoctlError;
using internal::IoctlValue;

// KVM handles at most this many MSRs per KVM_GET/SET_MSRS (MAX_IO_MSRS).
constexpr size_t kMaxMsrsPerCall = 256;

// Guard against a kernel whose XSAVE area outgrew what it advertised when
// the vCPU was created (e.g. a later arch_prctl(ARCH_REQ_XCOMP_GUEST_PERM)):
// GET would overrun a buffer of the advertised size. 16 KiB covers every
// x86 feature to date (AMX included).
constexpr size_t kXsaveSlackBytes = 16384;

template <const IoctlSpec& kSpec, typename T>
absl::StatusOr<T> GetStruct(const Fd& fd, const std::string& object) {
  T value{};
  int r = Ioctl<kSpec>(fd, &value);
  if (r < 0) return IoctlError(kSpec, object, -r);
  return value;
}

template <const IoctlSpec& kSpec, typename T>
absl::Status SetStruct(const Fd& fd, const T& value, const std::string& object,
                       absl::string_view hint = {}) {
  int r = Ioctl<kSpec>(fd, &value);
  if (r < 0) return IoctlError(kSpec, object, -r, r == -EINVAL ? hint : "");
  return absl::OkStatus();
}

}  // namespace

std::string ExitReasonName(uint32_t reason) {
  switch (reason) {
#define FERRY_EXIT(name) \
  case name:             \
    return #name;
    FERRY_EXIT(KVM_EXIT_UNKNOWN)
    FERRY_EXIT(KVM_EXIT_EXCEPTION)
    FERRY_EXIT(KVM_EXIT_IO)
    FERRY_EXIT(KVM_EXIT_HYPERCALL)
    FERRY_EXIT(KVM_EXIT_DEBUG)
    FERRY_EXIT(KVM_EXIT_HLT)
    FERRY_EXIT(KVM_EXIT_MMIO)
    FERRY_EXIT(KVM_EXIT_IRQ_WINDOW_OPEN)
    FERRY_EXIT(KVM_EXIT_SHUTDOWN)
    FERRY_EXIT(KVM_EXIT_FAIL_ENTRY)
    FERRY_EXIT(KVM_EXIT_INTR)
    FERRY_EXIT(KVM_EXIT_SET_TPR)
    FERRY_EXIT(KVM_EXIT_TPR_ACCESS)
    FERRY_EXIT(KVM_EXIT_NMI)
    FERRY_EXIT(KVM_EXIT_INTERNAL_ERROR)
    FERRY_EXIT(KVM_EXIT_SYSTEM_EVENT)
    FERRY_EXIT(KVM_EXIT_IOAPIC_EOI)
    FERRY_EXIT(KVM_EXIT_HYPERV)
    FERRY_EXIT(KVM_EXIT_X86_RDMSR)
    FERRY_EXIT(KVM_EXIT_X86_WRMSR)
    FERRY_EXIT(KVM_EXIT_DIRTY_RING_FULL)
    FERRY_EXIT(KVM_EXIT_AP_RESET_HOLD)
    FERRY_EXIT(KVM_EXIT_X86_BUS_LOCK)
    FERRY_EXIT(KVM_EXIT_NOTIFY)
#undef FERRY_EXIT
    default:
      return absl::StrCat("KVM_EXIT_", reason);
  }
}

VcpuFd::VcpuFd(Fd fd, Mmap run_map, std::optional<DirtyRing> ring,
               const VcpuConfig& config)
    : fd_(std::move(fd)),
      run_map_(std::move(run_map)),
      ring_(std::move(ring)),
      config_(config) {}

absl::StatusOr<VcpuFd> VcpuFd::FromFd(Fd fd, const VcpuConfig& config) {
  const std::string name = absl::StrCat("vcpu ", config.id);
  if (config.mmap_size < sizeof(kvm_run)) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": mmap size ", config.mmap_size, " < sizeof(kvm_run)"));
  }
  // kvm_run lives at offset 0 of the vCPU fd; MAP_SHARED because the kernel
  // and we both write it.
  ASSIGN_OR_RETURN(
      Mmap run_map,
      Mmap::Create(fd.get(), config.mmap_size, PROT_READ | PROT_WRITE,
                   MAP_SHARED, 0, absl::StrCat("kvm_run ", name)));
  std::optional<DirtyRing> ring;
  if (config.dirty_ring_bytes != 0) {
    ASSIGN_OR_RETURN(ring,
                     DirtyRing::Create(fd, config.dirty_ring_bytes, name));
  }
  return VcpuFd(std::move(fd), std::move(run_map), std::move(ring), config);
}

std::string VcpuFd::Name() const { return absl::StrCat("vcpu ", config_.id); }

// --- Running ---

absl::StatusOr<VcpuFd::RunResult> VcpuFd::Run() {
  int r = IoctlValue<kRun>(fd_);
  if (r == -EINTR) return RunResult::kInterrupted;
  if (r < 0) return IoctlError(kRun, Name(), -r);
  return RunResult::kExit;
}

void VcpuFd::set_immediate_exit(bool value) {
  if (!run_map_.valid()) return;
  // SAFETY: a byte in the shared kvm_run; the kernel reads it with READ_ONCE
  // on entry to KVM_RUN. Atomic so it is safe from another thread or a
  // signal handler; relaxed because the kick's signal/syscall orders it.
  __atomic_store_n(&run_ptr()->immediate_exit, value ? 1 : 0, __ATOMIC_RELAXED);
}

absl::Status VcpuFd::CompletePendingExit() {
  set_immediate_exit(true);
  absl::StatusOr<RunResult> result = Run();
  if (!result.ok()) return result.status();
  if (*result == RunResult::kExit) {
    return absl::FailedPreconditionError(absl::StrCat(
        "KVM_RUN ", Name(), " with immediate_exit: the pending instruction ",
        "produced another exit (", ExitReasonName(exit_reason()),
        "); handle it and call CompletePendingExit again"));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> VcpuFd::GetTscKhz() const {
  int r = IoctlValue<kGetTscKhz>(fd_);
  if (r < 0) return IoctlError(kGetTscKhz, Name(), -r);
  return static_cast<uint32_t>(r);
}

absl::Status VcpuFd::SetTscKhz(uint32_t khz) const {
  if (khz == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KVM_SET_TSC_KHZ ", Name(), ": 0 kHz; pass the source's GetTscKhz()"));
  }
  int r = IoctlValue<kSetTscKhz>(fd_, khz);
  if (r < 0) {
    return IoctlError(
        kSetTscKhz, absl::StrCat(Name(), " khz=", khz), -r,
        r == -EINVAL ? "the host cannot scale the TSC to that rate "
                       "(KVM_CAP_TSC_CONTROL / TSC scaling missing)"
                     : "");
  }
  return absl::OkStatus();
}

uint32_t VcpuFd::exit_reason() const { return run_ptr()->exit_reason; }

absl::StatusOr<IoExit> VcpuFd::io() const {
  const kvm_run& run = *run_ptr();
  if (run.exit_reason != KVM_EXIT_IO) {
    return absl::FailedPreconditionError(
        absl::StrCat(Name(), ": exit is ", ExitReasonName(run.exit_reason),
                     ", not KVM_EXIT_IO"));
  }
  const uint64_t offset = run.io.data_offset;
  const uint64_t length = uint64_t{run.io.size} * run.io.count;
  if (offset > run_map_.size() || length > run_map_.size() - offset) {
    return absl::InternalError(absl::StrCat(
        Name(), ": KVM_EXIT_IO data [", offset, ", +", length,
        ") lies outside the ", run_map_.size(), "-byte vCPU mapping"));
  }
  IoExit exit;
  exit.out = run.io.direction == KVM_EXIT_IO_OUT;
  exit.port = run.io.port;
  exit.size = run.io.size;
  exit.count = run.io.count;
  // SAFETY: bounds checked above against the live vCPU mapping.
  exit.data = absl::MakeSpan(run_map_.bytes() + offset, length);
  return exit;
}

absl::StatusOr<MmioExit> VcpuFd::mmio() const {
  kvm_run& run = *run_ptr();
  if (run.exit_reason != KVM_EXIT_MMIO) {
    return absl::FailedPreconditionError(
        absl::StrCat(Name(), ": exit is ", ExitReasonName(run.exit_reason),
                     ", not KVM_EXIT_MMIO"));
  }
  MmioExit exit;
  exit.gpa = run.mmio.phys_addr;
  exit.write = run.mmio.is_write != 0;
  const size_t len = std::min<size_t>(run.mmio.len, sizeof(run.mmio.data));
  exit.data = absl::MakeSpan(run.mmio.data, len);
  return exit;
}

// --- State ---

absl::StatusOr<kvm_regs> VcpuFd::GetRegs() const {
  return GetStruct<kGetRegs, kvm_regs>(fd_, Name());
}
absl::Status VcpuFd::SetRegs(const kvm_regs& regs) const {
  return SetStruct<kSetRegs>(fd_, regs, Name());
}
absl::StatusOr<kvm_sregs> VcpuFd::GetSregs() const {
  return GetStruct<kGetSregs, kvm_sregs>(fd_, Name());
}
absl::Status VcpuFd::SetSregs(const kvm_sregs& sregs) const {
  return SetStruct<kSetSregs>(
      fd_, sregs, Name(),
      "invalid control registers or EFER (EFER.LME needs CPUID long mode: "
      "call SetCpuid2 first)");
}
absl::StatusOr<kvm_fpu> VcpuFd::GetFpu() const {
  return GetStruct<kGetFpu, kvm_fpu>(fd_, Name());
}
absl::Status VcpuFd::SetFpu(const kvm_fpu& fpu) const {
  return SetStruct<kSetFpu>(fd_, fpu, Name());
}
absl::StatusOr<kvm_xcrs> VcpuFd::GetXcrs() const {
  return GetStruct<kGetXcrs, kvm_xcrs>(fd_, Name());
}
absl::Status VcpuFd::SetXcrs(const kvm_xcrs& xcrs) const {
  return SetStruct<kSetXcrs>(fd_, xcrs, Name(),
                             "XCR0 not allowed by the guest CPUID");
}
absl::StatusOr<kvm_lapic_state> VcpuFd::GetLapic() const {
  return GetStruct<kGetLapic, kvm_lapic_state>(fd_, Name());
}
absl::Status VcpuFd::SetLapic(const kvm_lapic_state& lapic) const {
  return SetStruct<kSetLapic>(fd_, lapic, Name());
}
absl::StatusOr<kvm_vcpu_events> VcpuFd::GetVcpuEvents() const {
  return GetStruct<kGetVcpuEvents, kvm_vcpu_events>(fd_, Name());
}
absl::Status VcpuFd::SetVcpuEvents(const kvm_vcpu_events& events) const {
  return SetStruct<kSetVcpuEvents>(fd_, events, Name());
}
absl::StatusOr<kvm_mp_state> VcpuFd::GetMpState() const {
  return GetStruct<kGetMpState, kvm_mp_state>(fd_, Name());
}
absl::Status VcpuFd::SetMpState(const kvm_mp_state& mp_state) const {
  return SetStruct<kSetMpState>(
      fd_, mp_state, Name(),
      "states other than RUNNABLE need an in-kernel irqchip");
}
absl::StatusOr<kvm_debugregs> VcpuFd::GetDebugRegs() const {
  return GetStruct<kGetDebugregs, kvm_debugregs>(fd_, Name());
}
absl::Status VcpuFd::SetDebugRegs(const kvm_debugregs& debugregs) const {
  return SetStruct<kSetDebugregs>(fd_, debugregs, Name());
}

absl::StatusOr<std::vector<uint32_t>> VcpuFd::GetXsave() const {
  const size_t bytes = std::max<size_t>(config_.xsave_bytes, sizeof(kvm_xsave));
  std::vector<uint32_t> buffer(
      std::max(bytes, kXsaveSlackBytes) / sizeof(uint32_t) + 1, 0);
  // SAFETY: kvm_xsave is a u32 array; `buffer` is u32-aligned and at least
  // as large as what either ioctl writes (plus slack, see above).
  auto* xsave = reinterpret_cast<kvm_xsave*>(buffer.data());
  int r = config_.xsave_bytes > 0 ? Ioctl<kGetXsave2>(fd_, xsave)
                                  : Ioctl<kGetXsave>(fd_, xsave);
  if (r < 0) {
    return IoctlError(config_.xsave_bytes > 0 ? kGetXsave2 : kGetXsave, Name(),
                      -r);
  }
  buffer.resize((bytes + sizeof(uint32_t) - 1) / sizeof(uint32_t));
  return buffer;
}

absl::Status VcpuFd::SetXsave(absl::Span<const uint32_t> xsave) const {
  // KVM_SET_XSAVE reads as many bytes as this vCPU's XSAVE area, whatever
  // the source had: pad with zeros (components absent from XSTATE_BV are
  // ignored), with the same slack as GetXsave.
  const size_t words =
      std::max({xsave.size(), kXsaveSlackBytes / sizeof(uint32_t),
                size_t{config_.xsave_bytes} / sizeof(uint32_t) + 1});
  std::vector<uint32_t> buffer(words, 0);
  std::copy(xsave.begin(), xsave.end(), buffer.begin());
  // SAFETY: see GetXsave; the kernel only reads.
  const auto* arg = reinterpret_cast<const kvm_xsave*>(buffer.data());
  int r = Ioctl<kSetXsave>(fd_, arg);
  if (r < 0) {
    return IoctlError(kSetXsave,
                      absl::StrCat(Name(), " bytes=", xsave.size() * 4), -r,
                      r == -EINVAL ? "XSTATE_BV has features this host or "
                                     "guest CPUID does not allow"
                                   : "");
  }
  return absl::OkStatus();
}

absl::Status VcpuFd::SetCpuid2(
    absl::Span<const kvm_cpuid_entry2> entries) const {
  FlexBuffer<kvm_cpuid2, kvm_cpuid_entry2> buffer(entries.size());
  buffer.header()->nent = static_cast<uint32_t>(entries.size());
  std::copy(entries.begin(), entries.end(), buffer.entries());
  int r = Ioctl<kSetCpuid2>(fd_, buffer.header());
  if (r < 0) {
    absl::string_view hint;
    if (r == -EBUSY || r == -EINVAL) {
      hint = "CPUID cannot change once the vCPU has run";
    }
    if (r == -E2BIG) hint = "too many entries (max 256)";
    return IoctlError(kSetCpuid2,
                      absl::StrCat(Name(), " nent=", entries.size()), -r, hint);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<kvm_cpuid_entry2>> VcpuFd::GetCpuid2() const {
  for (size_t capacity = 256; capacity <= 4096; capacity *= 2) {
    FlexBuffer<kvm_cpuid2, kvm_cpuid_entry2> buffer(capacity);
    buffer.header()->nent = static_cast<uint32_t>(capacity);
    int r = Ioctl<kGetCpuid2>(fd_, buffer.header());
    if (r == -E2BIG) continue;
    if (r < 0) return IoctlError(kGetCpuid2, Name(), -r);
    const kvm_cpuid_entry2* entries = buffer.entries();
    return std::vector<kvm_cpuid_entry2>(entries,
                                         entries + buffer.header()->nent);
  }
  return absl::OutOfRangeError(
      absl::StrCat("KVM_GET_CPUID2 ", Name(), ": more than 4096 entries"));
}

// --- MSRs ---

absl::StatusOr<size_t> VcpuFd::GetMsrsPrefix(absl::Span<MsrEntry> msrs) const {
  size_t done = 0;
  while (done < msrs.size()) {
    const size_t n = std::min(kMaxMsrsPerCall, msrs.size() - done);
    FlexBuffer<kvm_msrs, kvm_msr_entry> buffer(n);
    buffer.header()->nmsrs = static_cast<uint32_t>(n);
    for (size_t i = 0; i < n; ++i) {
      buffer.entries()[i].index = msrs[done + i].index;
    }
    int r = Ioctl<kGetMsrs>(fd_, buffer.header());
    if (r < 0) {
      return IoctlError(kGetMsrs, absl::StrCat(Name(), " nmsrs=", n), -r);
    }
    for (int i = 0; i < r; ++i) msrs[done + i].data = buffer.entries()[i].data;
    done += static_cast<size_t>(r);
    if (static_cast<size_t>(r) < n) break;
  }
  return done;
}

absl::StatusOr<size_t> VcpuFd::SetMsrsPrefix(
    absl::Span<const MsrEntry> msrs) const {
  size_t done = 0;
  while (done < msrs.size()) {
    const size_t n = std::min(kMaxMsrsPerCall, msrs.size() - done);
    FlexBuffer<kvm_msrs, kvm_msr_entry> buffer(n);
    buffer.header()->nmsrs = static_cast<uint32_t>(n);
    for (size_t i = 0; i < n; ++i) {
      buffer.entries()[i].index = msrs[done + i].index;
      buffer.entries()[i].data = msrs[done + i].data;
    }
    int r = Ioctl<kSetMsrs>(fd_, buffer.header());
    if (r < 0) {
      return IoctlError(kSetMsrs, absl::StrCat(Name(), " nmsrs=", n), -r);
    }
    done += static_cast<size_t>(r);
    if (static_cast<size_t>(r) < n) break;
  }
  return done;
}

absl::StatusOr<std::vector<MsrEntry>> VcpuFd::GetMsrs(
    absl::Span<const uint32_t> indices) const {
  std::vector<MsrEntry> msrs;
  msrs.reserve(indices.size());
  for (uint32_t index : indices) msrs.push_back(MsrEntry{index, 0});
  ASSIGN_OR_RETURN(size_t done, GetMsrsPrefix(absl::MakeSpan(msrs)));
  if (done < msrs.size()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "KVM_GET_MSRS %s: MSR 0x%x unreadable (entry %d of %d; KVM does not "
        "emulate it for this guest)",
        Name(), msrs[done].index, done, msrs.size()));
  }
  return msrs;
}

absl::Status VcpuFd::SetMsrs(absl::Span<const MsrEntry> msrs) const {
  ASSIGN_OR_RETURN(size_t done, SetMsrsPrefix(msrs));
  if (done < msrs.size()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "KVM_SET_MSRS %s: MSR 0x%x = 0x%x refused (entry %d of %d; the %d "
        "before it were set). KVM refuses MSRs it does not emulate and "
        "values invalid in the current state (e.g. 0x4b564d06 without an "
        "in-kernel irqchip); skip it or fix the value",
        Name(), msrs[done].index, msrs[done].data, done, msrs.size(), done));
  }
  return absl::OkStatus();
}

}  // namespace ferry::kmod
