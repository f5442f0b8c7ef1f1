// A KVM virtual machine (the fd KVM_CREATE_VM returns): memslots, dirty
// logging (bitmap, manual-protect, ring), irqchip, clock, vCPU creation.
//
// Thread safety: const methods may run concurrently with each other (e.g. a
// collector thread calling GetDirtyLog while vCPU threads run). Non-const
// methods change VmFd's own bookkeeping and need external serialization
// against everything else.
#ifndef FERRY_KMOD_VM_H_
#define FERRY_KMOD_VM_H_

#include "kmod/kvm_abi.h"

#include <cstddef>
#include <cstdint>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kmod/caps.h"
#include "kmod/dirty_ring.h"
#include "kmod/fd.h"
#include "kmod/vcpu.h"

namespace ferry::kmod {

// One memslot as registered with KVM_SET_USER_MEMORY_REGION. `slot` packs
// the address space in bits 16..31 (x86: 1 = SMM) and the slot id below.
struct Memslot {
  uint32_t slot = 0;
  uint64_t gpa = 0;
  uint64_t size = 0;  // bytes; 0 deletes the slot
  uint64_t hva = 0;
  uint32_t flags = 0;  // KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY

  uint64_t pages() const;
};

class VmFd {
 public:
  // Adopts a VM fd. `vcpu_mmap_size` is Kvm::GetVcpuMmapSize(). Used by
  // Kvm::CreateVm and by tests that hand in a non-KVM fd.
  static VmFd FromFd(Fd fd, size_t vcpu_mmap_size);

  VmFd(VmFd&&) = default;
  VmFd& operator=(VmFd&&) = default;

  const Fd& fd() const { return fd_; }

  // KVM_CHECK_EXTENSION on the VM: the answer for this VM (dirty ring size,
  // XSAVE2 size and manual-protect bits may differ from /dev/kvm's).
  absl::StatusOr<int> CheckExtension(Cap cap) const;

  // --- Memslots ---
  // Creates, moves, re-flags or (size 0) deletes a slot. KVM's rules: gpa,
  // size and hva page-aligned; slots must not overlap; an existing slot may
  // change only its flags or its gpa, not its size or hva (delete it first).
  absl::Status SetUserMemoryRegion(const Memslot& region);
  absl::Status SetUserMemoryRegion(uint32_t slot, uint64_t gpa, uint64_t size,
                                   void* hva, uint32_t flags);
  absl::Status DeleteMemoryRegion(uint32_t slot);
  // Turns KVM_MEM_LOG_DIRTY_PAGES on/off for a registered slot.
  absl::Status SetDirtyLogging(uint32_t slot, bool enabled);
  // The slot as last registered, or NotFound.
  absl::StatusOr<Memslot> GetMemslot(uint32_t slot) const;

  // --- Dirty bitmap ---
  // uint64_t words a bitmap for `pages` pages needs. Bit i (word i / 64, bit
  // i % 64, little-endian x86 longs) is page i of the slot.
  static size_t BitmapWords(uint64_t pages);
  // KVM_GET_DIRTY_LOG: copies the slot's bitmap into `bitmap` (at least
  // BitmapWords(slot pages) words). Classic mode also clears it and
  // write-protects the pages again; with manual protect it only copies.
  absl::Status GetDirtyLog(uint32_t slot, absl::Span<uint64_t> bitmap) const;
  // Switches on KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (checking the kernel
  // supports the requested bits). Do it before enabling logging on slots:
  // INITIALLY_SET takes effect when a slot's logging is switched on (the
  // bitmap starts all-ones and nothing is write-protected up front).
  absl::Status EnableManualDirtyLogProtect(bool initially_set);
  bool manual_dirty_log_protect() const { return manual_protect_; }
  // KVM_CLEAR_DIRTY_LOG: re-protects the pages whose bits are set in
  // `bitmap` (bit 0 = first_page). first_page must be a multiple of 64, and
  // num_pages too unless the range ends at the end of the slot.
  absl::Status ClearDirtyLog(uint32_t slot, uint64_t first_page,
                             uint32_t num_pages,
                             absl::Span<const uint64_t> bitmap) const;
  // The checks ClearDirtyLog makes before calling the kernel (exposed for
  // tests and for callers that plan ranges).
  static absl::Status CheckClearRange(uint64_t slot_pages, uint64_t first_page,
                                      uint64_t num_pages, size_t bitmap_words);

  // --- Dirty ring ---
  // Enables the per-vCPU dirty ring of `bytes` bytes (prefers
  // KVM_CAP_DIRTY_LOG_RING_ACQ_REL). Must precede every CreateVcpu; while on,
  // GetDirtyLog fails (ENXIO) and dirty pages come from each VcpuFd's ring.
  absl::Status EnableDirtyRing(uint32_t bytes);
  // 0 if off.
  uint32_t dirty_ring_bytes() const { return dirty_ring_bytes_; }
  // KVM's rules for a ring size: a power of two, at least a page (in
  // practice bigger: 64 reserved entries, plus PML's 512 on Intel), at most
  // `max_bytes` (what KVM_CHECK_EXTENSION reported).
  static absl::Status ValidateDirtyRingBytes(uint64_t bytes,
                                             uint64_t max_bytes);
  // KVM_RESET_DIRTY_RINGS: re-protects every harvested entry of every vCPU.
  // Returns how many entries the kernel reset.
  absl::StatusOr<uint32_t> ResetDirtyRings() const;
  // Resets and checks the kernel reset exactly what `rings` harvested since
  // their last reset (pass every vCPU's ring; call from the one thread that
  // harvests them). Retries a reset cut short by a signal. Returns the count.
  absl::StatusOr<uint64_t> ResetDirtyRingsAndCheck(
      absl::Span<DirtyRing* const> rings) const;

  // --- Interrupt controllers, clock, x86 oddities ---
  // In-kernel PIC + IOAPIC + per-vCPU LAPIC. Must precede CreateVcpu.
  absl::Status CreateIrqchip();
  bool has_irqchip() const { return irqchip_; }
  absl::StatusOr<kvm_irqchip> GetIrqchip(uint32_t chip_id) const;
  absl::Status SetIrqchip(const kvm_irqchip& chip) const;
  absl::Status CreatePit2(uint32_t flags = 0) const;
  absl::StatusOr<kvm_pit_state2> GetPit2() const;
  absl::Status SetPit2(const kvm_pit_state2& state) const;
  // kvmclock; pass GetClock's result (flags included) back to SetClock.
  absl::StatusOr<kvm_clock_data> GetClock() const;
  absl::Status SetClock(const kvm_clock_data& clock) const;
  // Intel needs 3 pages (TSS) and 1 page (EPT identity map) of guest-physical
  // space outside any memslot for real-mode emulation; set both before
  // creating vCPUs.
  absl::Status SetTssAddr(uint64_t gpa) const;
  absl::Status SetIdentityMapAddr(uint64_t gpa) const;
  // Coalesced MMIO/PIO: writes to the zone are queued in a shared ring
  // instead of exiting (pio needs KVM_CAP_COALESCED_PIO).
  absl::Status RegisterCoalescedZone(uint64_t addr, uint32_t size, bool pio);
  absl::Status UnregisterCoalescedZone(uint64_t addr, uint32_t size, bool pio);

  // --- vCPUs ---
  // KVM_CREATE_VCPU, then maps its kvm_run (and dirty ring, if enabled).
  absl::StatusOr<VcpuFd> CreateVcpu(uint32_t id);
  int vcpus_created() const { return vcpus_created_; }

 private:
  VmFd(Fd fd, size_t vcpu_mmap_size)
      : fd_(std::move(fd)), vcpu_mmap_size_(vcpu_mmap_size) {}

  absl::Status EnableCap(Cap cap, uint64_t arg0, absl::string_view what);
  absl::StatusOr<const Memslot*> FindSlot(absl::string_view op,
                                          uint32_t slot) const;

  Fd fd_;
  size_t vcpu_mmap_size_;
  absl::flat_hash_map<uint32_t, Memslot> slots_;
  uint32_t dirty_ring_bytes_ = 0;
  bool manual_protect_ = false;
  bool irqchip_ = false;
  int vcpus_created_ = 0;
};

}  // namespace ferry::kmod

#endif  // FERRY_KMOD_VM_H_
