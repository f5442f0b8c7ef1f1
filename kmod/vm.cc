#include "kmod/vm.h"

#include <cerrno>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "kmod/ioctl_call.h"

namespace ferry::kmod {
namespace {

using internal::Ioctl;
using internal::IoctlError;
using internal::IoctlValue;

constexpr uint64_t kPageSize = 4096;  // x86 KVM memslot granularity

std::string SlotName(uint32_t slot) {
  if (slot >> 16 == 0) return absl::StrCat("vm slot=", slot);
  return absl::StrCat("vm slot=", slot & 0xffff, " as=", slot >> 16);
}

}  // namespace

uint64_t Memslot::pages() const { return size / kPageSize; }

VmFd VmFd::FromFd(Fd fd, size_t vcpu_mmap_size) {
  return VmFd(std::move(fd), vcpu_mmap_size);
}

absl::StatusOr<int> VmFd::CheckExtension(Cap cap) const {
  int r = IoctlValue<kVmCheckExtension>(fd_, static_cast<unsigned long>(cap));
  if (r < 0) {
    return IoctlError(kVmCheckExtension, absl::StrCat("vm ", CapName(cap)), -r);
  }
  return r;
}

// --- Memslots ---

absl::Status VmFd::SetUserMemoryRegion(const Memslot& region) {
  kvm_userspace_memory_region arg{};
  arg.slot = region.slot;
  arg.flags = region.flags;
  arg.guest_phys_addr = region.gpa;
  arg.memory_size = region.size;
  arg.userspace_addr = region.hva;
  int r = Ioctl<kSetUserMemoryRegion>(fd_, &arg);
  if (r < 0) {
    std::string object = absl::StrFormat(
        "%s gpa=0x%x size=0x%x hva=0x%x flags=0x%x", SlotName(region.slot),
        region.gpa, region.size, region.hva, region.flags);
    absl::string_view hint;
    if (r == -EINVAL) {
      hint =
          "gpa, size and hva must be page-aligned, the slot id below "
          "KVM_CAP_NR_MEMSLOTS, flags known, and an existing slot may change "
          "only its flags or gpa";
    } else if (r == -EEXIST) {
      hint = "the range overlaps another slot";
    }
    return IoctlError(kSetUserMemoryRegion, object, -r, hint);
  }
  if (region.size == 0) {
    slots_.erase(region.slot);
  } else {
    slots_[region.slot] = region;
  }
  return absl::OkStatus();
}

absl::Status VmFd::SetUserMemoryRegion(uint32_t slot, uint64_t gpa,
                                       uint64_t size, void* hva,
                                       uint32_t flags) {
  return SetUserMemoryRegion(
      Memslot{slot, gpa, size, reinterpret_cast<uint64_t>(hva), flags});
}

absl::Status VmFd::DeleteMemoryRegion(uint32_t slot) {
  // KVM ignores everything but the slot number when size is 0.
  return SetUserMemoryRegion(Memslot{slot, 0, 0, 0, 0});
}

absl::Status VmFd::SetDirtyLogging(uint32_t slot, bool enabled) {
  ASSIGN_OR_RETURN(const Memslot* found, FindSlot("SetDirtyLogging", slot));
  Memslot region = *found;
  region.flags = enabled ? (region.flags | KVM_MEM_LOG_DIRTY_PAGES)
                         : (region.flags & ~KVM_MEM_LOG_DIRTY_PAGES);
  return SetUserMemoryRegion(region);
}

absl::StatusOr<Memslot> VmFd::GetMemslot(uint32_t slot) const {
  ASSIGN_OR_RETURN(const Memslot* found, FindSlot("GetMemslot", slot));
  return *found;
}

absl::StatusOr<const Memslot*> VmFd::FindSlot(absl::string_view op,
                                              uint32_t slot) const {
  auto it = slots_.find(slot);
  if (it == slots_.end()) {
    return absl::NotFoundError(absl::StrCat(
        op, " ", SlotName(slot),
        ": no such memslot (register it with SetUserMemoryRegion first)"));
  }
  return &it->second;
}

// --- Dirty bitmap ---

size_t VmFd::BitmapWords(uint64_t pages) { return (pages + 63) / 64; }

absl::Status VmFd::GetDirtyLog(uint32_t slot,
                               absl::Span<uint64_t> bitmap) const {
  if (dirty_ring_bytes_ != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "KVM_GET_DIRTY_LOG ", SlotName(slot),
        ": the dirty ring is enabled on this VM; harvest the vCPU rings"));
  }
  ASSIGN_OR_RETURN(const Memslot* found, FindSlot("KVM_GET_DIRTY_LOG", slot));
  // The kernel writes ALIGN(npages, 64) / 8 bytes: a short buffer would be
  // overrun, so this check is what keeps the ioctl memory-safe.
  if (bitmap.size() < BitmapWords(found->pages())) {
    return absl::InvalidArgumentError(
        absl::StrCat("KVM_GET_DIRTY_LOG ", SlotName(slot), ": bitmap has ",
                     bitmap.size(), " words, the slot's ", found->pages(),
                     " pages need ", BitmapWords(found->pages())));
  }
  kvm_dirty_log arg{};
  arg.slot = slot;
  // SAFETY: `bitmap` is caller-owned and at least as long as the kernel's
  // copy (checked above); the kernel writes it before the ioctl returns.
  arg.dirty_bitmap = bitmap.data();
  int r = Ioctl<kGetDirtyLog>(fd_, &arg);
  if (r < 0) {
    absl::string_view hint;
    if (r == -ENOENT) hint = "the slot does not have KVM_MEM_LOG_DIRTY_PAGES";
    if (r == -ENXIO) hint = "the dirty ring is enabled on this VM";
    return IoctlError(kGetDirtyLog, SlotName(slot), -r, hint);
  }
  return absl::OkStatus();
}

absl::Status VmFd::EnableManualDirtyLogProtect(bool initially_set) {
  ASSIGN_OR_RETURN(int supported, CheckExtension(Cap::kManualDirtyLogProtect2));
  uint64_t wanted = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE |
                    (initially_set ? KVM_DIRTY_LOG_INITIALLY_SET : 0);
  if ((wanted & ~static_cast<uint64_t>(supported)) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "KVM_ENABLE_CAP vm KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: kernel supports "
        "flags 0x%x, need 0x%x; use classic KVM_GET_DIRTY_LOG%s",
        supported, wanted,
        initially_set ? " or do without KVM_DIRTY_LOG_INITIALLY_SET" : ""));
  }
  RETURN_IF_ERROR(EnableCap(Cap::kManualDirtyLogProtect2, wanted,
                            "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2"));
  manual_protect_ = true;
  return absl::OkStatus();
}

absl::Status VmFd::CheckClearRange(uint64_t slot_pages, uint64_t first_page,
                                   uint64_t num_pages, size_t bitmap_words) {
  // Mirrors kvm_clear_dirty_log_protect()'s checks (virt/kvm/kvm_main.c),
  // plus the buffer length the kernel reads.
  if (first_page % 64 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("first_page ", first_page, " is not a multiple of 64"));
  }
  if (first_page > slot_pages || num_pages > slot_pages - first_page) {
    return absl::InvalidArgumentError(
        absl::StrCat("pages [", first_page, ", ", first_page + num_pages,
                     ") run past the slot's ", slot_pages, " pages"));
  }
  if (num_pages % 64 != 0 && first_page + num_pages != slot_pages) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_pages ", num_pages,
        " must be a multiple of 64 unless the range ends at the slot's end (",
        slot_pages, ")"));
  }
  if (bitmap_words < BitmapWords(num_pages)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bitmap has ", bitmap_words, " words, ", num_pages,
                     " pages need ", BitmapWords(num_pages)));
  }
  return absl::OkStatus();
}

absl::Status VmFd::ClearDirtyLog(uint32_t slot, uint64_t first_page,
                                 uint32_t num_pages,
                                 absl::Span<const uint64_t> bitmap) const {
  std::string object = absl::StrCat(SlotName(slot), " first_page=", first_page,
                                    " num_pages=", num_pages);
  ASSIGN_OR_RETURN(const Memslot* found, FindSlot("KVM_CLEAR_DIRTY_LOG", slot));
  absl::Status range =
      CheckClearRange(found->pages(), first_page, num_pages, bitmap.size());
  if (!range.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("KVM_CLEAR_DIRTY_LOG ", object, ": ", range.message()));
  }
  kvm_clear_dirty_log arg{};
  arg.slot = slot;
  arg.num_pages = num_pages;
  arg.first_page = first_page;
  // SAFETY: the kernel only reads the bitmap (copy_from_user), and it is at
  // least ALIGN(num_pages, 64) / 8 bytes long (checked above).
  arg.dirty_bitmap = const_cast<uint64_t*>(bitmap.data());
  int r = Ioctl<kClearDirtyLog>(fd_, &arg);
  if (r < 0) {
    absl::string_view hint;
    if (r == -ENOENT) hint = "the slot does not have KVM_MEM_LOG_DIRTY_PAGES";
    if (r == -ENXIO) hint = "the dirty ring is enabled on this VM";
    return IoctlError(kClearDirtyLog, object, -r, hint);
  }
  return absl::OkStatus();
}

// --- Dirty ring ---

absl::Status VmFd::ValidateDirtyRingBytes(uint64_t bytes, uint64_t max_bytes) {
  const uint64_t page = HostPageSize();
  if (bytes == 0 || (bytes & (bytes - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("dirty ring size ", bytes, " is not a power of two"));
  }
  if (bytes < page) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dirty ring size ", bytes, " is smaller than a page (", page, ")"));
  }
  if (bytes > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("dirty ring size ", bytes,
                     " exceeds the kernel's maximum ", max_bytes));
  }
  return absl::OkStatus();
}

absl::Status VmFd::EnableDirtyRing(uint32_t bytes) {
  const std::string what = absl::StrCat("dirty ring bytes=", bytes);
  if (vcpus_created_ > 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "KVM_ENABLE_CAP vm ", what, ": ", vcpus_created_,
        " vCPU(s) already exist; KVM only accepts the ring size before the "
        "first KVM_CREATE_VCPU"));
  }
  if (dirty_ring_bytes_ != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("KVM_ENABLE_CAP vm ", what, ": already enabled with ",
                     dirty_ring_bytes_, " bytes"));
  }
  // x86 offers both; ACQ_REL promises we use acquire/release on the entry
  // flags, which DirtyRing always does.
  Cap cap = Cap::kDirtyLogRingAcqRel;
  ASSIGN_OR_RETURN(int max_bytes, CheckExtension(cap));
  if (max_bytes <= 0) {
    cap = Cap::kDirtyLogRing;
    ASSIGN_OR_RETURN(max_bytes, CheckExtension(cap));
  }
  if (max_bytes <= 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("KVM_ENABLE_CAP vm ", what,
                     ": this kernel has no dirty ring; use the dirty bitmap"));
  }
  absl::Status valid = ValidateDirtyRingBytes(bytes, max_bytes);
  if (!valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KVM_ENABLE_CAP vm ", CapName(cap), ": ", valid.message()));
  }
  RETURN_IF_ERROR(EnableCap(cap, bytes, what));
  dirty_ring_bytes_ = bytes;
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> VmFd::ResetDirtyRings() const {
  int r = IoctlValue<kResetDirtyRings>(fd_);
  if (r < 0) {
    return IoctlError(kResetDirtyRings, "vm", -r,
                      r == -EINVAL ? "the dirty ring is not enabled" : "");
  }
  return static_cast<uint32_t>(r);
}

absl::StatusOr<uint64_t> VmFd::ResetDirtyRingsAndCheck(
    absl::Span<DirtyRing* const> rings) const {
  uint64_t harvested = 0;
  for (const DirtyRing* ring : rings) {
    harvested += ring->harvested_since_reset();
  }
  uint64_t reset = 0;
  // One call normally resets everything; the kernel stops early (returning a
  // partial count) when a signal is pending, so go on until all are done.
  while (reset < harvested) {
    ASSIGN_OR_RETURN(uint32_t n, ResetDirtyRings());
    if (n == 0) break;
    reset += n;
  }
  if (harvested == 0) {
    ASSIGN_OR_RETURN(reset, ResetDirtyRings());
  }
  for (DirtyRing* ring : rings) ring->MarkReset();
  if (reset != harvested) {
    return absl::InternalError(absl::StrCat(
        "KVM_RESET_DIRTY_RINGS vm: reset ", reset, " entries but ",
        rings.size(), " ring(s) harvested ", harvested,
        "; pass every vCPU's ring, and harvest and reset from one thread"));
  }
  return reset;
}

absl::Status VmFd::EnableCap(Cap cap, uint64_t arg0, absl::string_view what) {
  kvm_enable_cap arg{};
  arg.cap = static_cast<uint32_t>(cap);
  arg.args[0] = arg0;
  int r = Ioctl<kVmEnableCap>(fd_, &arg);
  if (r < 0) {
    return IoctlError(kVmEnableCap,
                      absl::StrCat("vm ", CapName(cap), " ", what), -r);
  }
  return absl::OkStatus();
}

// --- Interrupt controllers, clock, x86 oddities ---

absl::Status VmFd::CreateIrqchip() {
  if (vcpus_created_ > 0) {
    return absl::FailedPreconditionError(
        "KVM_CREATE_IRQCHIP vm: must precede the first KVM_CREATE_VCPU");
  }
  int r = IoctlValue<kCreateIrqchip>(fd_);
  if (r < 0) return IoctlError(kCreateIrqchip, "vm", -r);
  irqchip_ = true;
  return absl::OkStatus();
}

absl::StatusOr<kvm_irqchip> VmFd::GetIrqchip(uint32_t chip_id) const {
  kvm_irqchip chip{};
  chip.chip_id = chip_id;
  int r = Ioctl<kGetIrqchip>(fd_, &chip);
  if (r < 0) {
    return IoctlError(kGetIrqchip, absl::StrCat("vm chip=", chip_id), -r);
  }
  return chip;
}

absl::Status VmFd::SetIrqchip(const kvm_irqchip& chip) const {
  // KVM_SET_IRQCHIP is declared _IOR for historical reasons; the kernel only
  // reads it, but the type check wants a mutable copy.
  kvm_irqchip copy = chip;
  int r = Ioctl<kSetIrqchip>(fd_, &copy);
  if (r < 0) {
    return IoctlError(kSetIrqchip, absl::StrCat("vm chip=", chip.chip_id), -r);
  }
  return absl::OkStatus();
}

absl::Status VmFd::CreatePit2(uint32_t flags) const {
  kvm_pit_config config{};
  config.flags = flags;
  int r = Ioctl<kCreatePit2>(fd_, &config);
  if (r < 0) return IoctlError(kCreatePit2, "vm", -r);
  return absl::OkStatus();
}

absl::StatusOr<kvm_pit_state2> VmFd::GetPit2() const {
  kvm_pit_state2 state{};
  int r = Ioctl<kGetPit2>(fd_, &state);
  if (r < 0) return IoctlError(kGetPit2, "vm", -r);
  return state;
}

absl::Status VmFd::SetPit2(const kvm_pit_state2& state) const {
  int r = Ioctl<kSetPit2>(fd_, &state);
  if (r < 0) return IoctlError(kSetPit2, "vm", -r);
  return absl::OkStatus();
}

absl::StatusOr<kvm_clock_data> VmFd::GetClock() const {
  kvm_clock_data clock{};
  int r = Ioctl<kGetClock>(fd_, &clock);
  if (r < 0) return IoctlError(kGetClock, "vm", -r);
  return clock;
}

absl::Status VmFd::SetClock(const kvm_clock_data& clock) const {
  int r = Ioctl<kSetClock>(fd_, &clock);
  if (r < 0) {
    return IoctlError(kSetClock, absl::StrFormat("vm flags=0x%x", clock.flags),
                      -r);
  }
  return absl::OkStatus();
}

absl::Status VmFd::SetTssAddr(uint64_t gpa) const {
  int r = IoctlValue<kSetTssAddr>(fd_, gpa);
  if (r < 0) {
    return IoctlError(kSetTssAddr, absl::StrFormat("vm gpa=0x%x", gpa), -r);
  }
  return absl::OkStatus();
}

absl::Status VmFd::SetIdentityMapAddr(uint64_t gpa) const {
  int r = Ioctl<kSetIdentityMapAddr>(fd_, &gpa);
  if (r < 0) {
    return IoctlError(kSetIdentityMapAddr, absl::StrFormat("vm gpa=0x%x", gpa),
                      -r, r == -EEXIST ? "vCPUs already exist" : "");
  }
  return absl::OkStatus();
}

namespace {

// KVM_(UN)REGISTER_COALESCED_MMIO take the same zone; pio=1 needs
// KVM_CAP_COALESCED_PIO.
template <const IoctlSpec& kSpec>
absl::Status CoalescedZoneIoctl(const Fd& fd, uint64_t addr, uint32_t size,
                                bool pio) {
  kvm_coalesced_mmio_zone zone{};
  zone.addr = addr;
  zone.size = size;
  zone.pio = pio ? 1 : 0;
  int r = Ioctl<kSpec>(fd, &zone);
  if (r < 0) {
    return IoctlError(kSpec,
                      absl::StrFormat("vm %s addr=0x%x size=%u",
                                      pio ? "pio" : "mmio", addr, size),
                      -r);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status VmFd::RegisterCoalescedZone(uint64_t addr, uint32_t size,
                                         bool pio) {
  return CoalescedZoneIoctl<kRegisterCoalescedMmio>(fd_, addr, size, pio);
}

absl::Status VmFd::UnregisterCoalescedZone(uint64_t addr, uint32_t size,
                                           bool pio) {
  return CoalescedZoneIoctl<kUnregisterCoalescedMmio>(fd_, addr, size, pio);
}

// --- vCPUs ---

absl::StatusOr<VcpuFd> VmFd::CreateVcpu(uint32_t id) {
  VcpuConfig config;
  config.id = id;
  config.mmap_size = vcpu_mmap_size_;
  config.dirty_ring_bytes = dirty_ring_bytes_;
  config.has_irqchip = irqchip_;
  // KVM_GET_XSAVE2 needs a buffer of the size the VM reports (it grows with
  // AMX etc.); without XSAVE2 the legacy 4 KiB KVM_GET_XSAVE is used.
  ASSIGN_OR_RETURN(int xsave2, CheckExtension(Cap::kXsave2));
  config.xsave_bytes = xsave2 > 0 ? static_cast<uint32_t>(xsave2) : 0;

  int r = IoctlValue<kCreateVcpu>(fd_, id);
  if (r < 0) {
    absl::string_view hint;
    if (r == -EEXIST) hint = "a vCPU with this id exists";
    if (r == -EINVAL) hint = "id above KVM_CAP_MAX_VCPU_ID, or too many vCPUs";
    return IoctlError(kCreateVcpu, absl::StrCat("vm id=", id), -r, hint);
  }
  Fd fd(r);
  // The kernel counts the vCPU from here on, even if mapping it fails.
  ++vcpus_created_;
  return VcpuFd::FromFd(std::move(fd), config);
}

}  // namespace ferry::kmod
