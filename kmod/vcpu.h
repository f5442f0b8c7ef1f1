// A KVM vCPU: its fd, the mmapped struct kvm_run, its dirty ring (if the VM
// enabled one) and typed get/set of every piece of architectural state.
//
// Threading: Run() and the state accessors belong to the one thread that
// runs this vCPU. set_immediate_exit() may be called from any thread or a
// signal handler (that is how a vCPU is kicked). The dirty ring may be
// harvested by another thread.
#ifndef FERRY_KMOD_VCPU_H_
#define FERRY_KMOD_VCPU_H_

#include "kmod/kvm_abi.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kmod/dirty_ring.h"
#include "kmod/fd.h"

namespace ferry::kmod {

// What a vCPU needs to know about its VM; VmFd::CreateVcpu fills it in.
struct VcpuConfig {
  uint32_t id = 0;
  size_t mmap_size = 0;           // Kvm::GetVcpuMmapSize()
  uint32_t dirty_ring_bytes = 0;  // 0: no ring
  uint32_t xsave_bytes = 0;       // KVM_CAP_XSAVE2 size; 0: legacy 4 KiB
  bool has_irqchip = false;       // in-kernel LAPIC present
};

struct MsrEntry {
  uint32_t index = 0;
  uint64_t data = 0;

  friend bool operator==(const MsrEntry& a, const MsrEntry& b) {
    return a.index == b.index && a.data == b.data;
  }
};

// A KVM_EXIT_IO, decoded. `data` points into the kvm_run page: for an OUT it
// holds what the guest wrote; for an IN, fill it before the next Run().
struct IoExit {
  bool out = false;
  uint16_t port = 0;
  uint8_t size = 0;    // bytes per access: 1, 2 or 4
  uint32_t count = 0;  // > 1 for rep ins/outs
  absl::Span<uint8_t> data;
};

// A KVM_EXIT_MMIO. For a read, fill data[0..len) before the next Run().
struct MmioExit {
  uint64_t gpa = 0;
  bool write = false;
  absl::Span<uint8_t> data;
};

// "KVM_EXIT_IO" for known exit reasons, "KVM_EXIT_<n>" otherwise.
std::string ExitReasonName(uint32_t reason);

class VcpuFd {
 public:
  enum class RunResult {
    kExit,         // look at exit_reason()
    kInterrupted,  // a signal or immediate_exit stopped KVM_RUN (EINTR)
  };

  // Adopts a vCPU fd and maps its kvm_run (and ring). Used by
  // VmFd::CreateVcpu, and by tests that hand in a non-KVM fd.
  static absl::StatusOr<VcpuFd> FromFd(Fd fd, const VcpuConfig& config);

  VcpuFd(VcpuFd&&) = default;
  VcpuFd& operator=(VcpuFd&&) = default;

  uint32_t id() const { return config_.id; }
  const Fd& fd() const { return fd_; }
  const VcpuConfig& config() const { return config_; }

  // --- Running ---
  // KVM_RUN. EINTR is not an error: it is how kicks arrive.
  absl::StatusOr<RunResult> Run();
  // Makes the next (or current, if a signal also arrives) KVM_RUN return at
  // once with EINTR. Async-signal-safe.
  void set_immediate_exit(bool value);
  // After an IN/MMIO-read exit, RIP and the destination register are only
  // updated on the next KVM_RUN. This enters with immediate_exit set so the
  // kernel completes the instruction and returns without running more guest
  // code; call it before saving state (api.rst, "kvm_run" notes).
  // It leaves immediate_exit set: the vCPU is being stopped, and clearing it
  // here could swallow a kick another thread sent meanwhile. Whoever runs
  // the vCPU next clears it once it has decided to run.
  absl::Status CompletePendingExit();

  // The guest's TSC frequency in kHz (KVM_GET_TSC_KHZ). A migration carries
  // it and the destination sets it with SetTscKhz (needs
  // KVM_CAP_TSC_CONTROL), so guest time does not change speed.
  absl::StatusOr<uint32_t> GetTscKhz() const;
  absl::Status SetTscKhz(uint32_t khz) const;

  uint32_t exit_reason() const;
  // The raw shared struct, for exits without a typed accessor.
  const kvm_run& run() const { return *run_ptr(); }
  kvm_run& mutable_run() { return *run_ptr(); }
  absl::StatusOr<IoExit> io() const;
  absl::StatusOr<MmioExit> mmio() const;

  // nullptr unless the VM enabled the dirty ring before creating this vCPU.
  DirtyRing* dirty_ring() { return ring_ ? &*ring_ : nullptr; }

  // --- State (api.rst §4) ---
  absl::StatusOr<kvm_regs> GetRegs() const;
  absl::Status SetRegs(const kvm_regs& regs) const;
  absl::StatusOr<kvm_sregs> GetSregs() const;
  absl::Status SetSregs(const kvm_sregs& sregs) const;
  absl::StatusOr<kvm_fpu> GetFpu() const;
  absl::Status SetFpu(const kvm_fpu& fpu) const;
  // The XSAVE area as KVM lays it out (struct kvm_xsave's u32 region, longer
  // than 4 KiB with XSAVE2).
  absl::StatusOr<std::vector<uint32_t>> GetXsave() const;
  absl::Status SetXsave(absl::Span<const uint32_t> xsave) const;
  absl::StatusOr<kvm_xcrs> GetXcrs() const;
  absl::Status SetXcrs(const kvm_xcrs& xcrs) const;
  absl::StatusOr<kvm_lapic_state> GetLapic() const;
  absl::Status SetLapic(const kvm_lapic_state& lapic) const;
  absl::StatusOr<kvm_vcpu_events> GetVcpuEvents() const;
  absl::Status SetVcpuEvents(const kvm_vcpu_events& events) const;
  absl::StatusOr<kvm_mp_state> GetMpState() const;
  absl::Status SetMpState(const kvm_mp_state& mp_state) const;
  absl::StatusOr<kvm_debugregs> GetDebugRegs() const;
  absl::Status SetDebugRegs(const kvm_debugregs& debugregs) const;
  // Must happen before the first Run(); later, KVM refuses any change.
  absl::Status SetCpuid2(absl::Span<const kvm_cpuid_entry2> entries) const;
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> GetCpuid2() const;

  // MSRs. KVM processes entries in order and stops at the first it refuses,
  // returning how many it handled; these fail naming that MSR.
  absl::StatusOr<std::vector<MsrEntry>> GetMsrs(
      absl::Span<const uint32_t> indices) const;
  absl::Status SetMsrs(absl::Span<const MsrEntry> msrs) const;
  // The lower-level form: how many leading entries KVM accepted (get: read
  // into `msrs`). Callers that skip refused MSRs build on this.
  absl::StatusOr<size_t> GetMsrsPrefix(absl::Span<MsrEntry> msrs) const;
  absl::StatusOr<size_t> SetMsrsPrefix(absl::Span<const MsrEntry> msrs) const;

 private:
  VcpuFd(Fd fd, Mmap run_map, std::optional<DirtyRing> ring,
         const VcpuConfig& config);

  std::string Name() const;
  kvm_run* run_ptr() const {
    // SAFETY: run_map_ is a MAP_SHARED mapping of at least sizeof(kvm_run)
    // bytes at offset 0 of the vCPU fd, where KVM keeps this vCPU's struct
    // kvm_run (page aligned). It lives as long as this object. The kernel
    // writes it only inside KVM_RUN, so the vCPU thread reads it race-free
    // between runs; immediate_exit is the one field written concurrently.
    return static_cast<kvm_run*>(run_map_.data());
  }

  Fd fd_;
  Mmap run_map_;
  std::optional<DirtyRing> ring_;
  VcpuConfig config_;
};

}  // namespace ferry::kmod

#endif  // FERRY_KMOD_VCPU_H_
