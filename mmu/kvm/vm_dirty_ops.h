// VmDirtyOps: the handful of VM-level KVM calls the dirty trackers make,
// behind an interface so the trackers' logic (chunking, ring mapping, the
// RING_FULL path, Start/Stop ordering) runs against a model of the kernel
// (fake_kvm_dirty_log.h) on machines without /dev/kvm, and against a real
// VmFd (KvmVmDirtyOps) everywhere else. The trackers add policy; this layer
// adds none: each method is one kmod::VmFd call.
#ifndef FERRY_MMU_KVM_VM_DIRTY_OPS_H_
#define FERRY_MMU_KVM_VM_DIRTY_OPS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kmod/dirty_ring.h"
#include "kmod/vm.h"

namespace ferry::mmu::kvm {

class VmDirtyOps {
 public:
  virtual ~VmDirtyOps() = default;

  // KVM_SET_USER_MEMORY_REGION toggling KVM_MEM_LOG_DIRTY_PAGES. Enabling
  // write-protects the slot (or, with INITIALLY_SET, sets its bitmap).
  virtual absl::Status SetDirtyLogging(uint32_t slot, bool enabled) = 0;
  // KVM_GET_DIRTY_LOG into `words` (VmFd::BitmapWords(npages) words).
  virtual absl::Status GetDirtyLog(uint32_t slot,
                                   absl::Span<uint64_t> words) = 0;

  // KVM_CHECK_EXTENSION(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2): the supported
  // KVM_DIRTY_LOG_* bits, 0 if none.
  virtual absl::StatusOr<uint64_t> ManualProtectSupport() = 0;
  virtual bool manual_protect_enabled() const = 0;
  virtual absl::Status EnableManualProtect(bool initially_set) = 0;
  // KVM_CLEAR_DIRTY_LOG (VmFd::CheckClearRange's rules).
  virtual absl::Status ClearDirtyLog(uint32_t slot, uint64_t first_page,
                                     uint32_t num_pages,
                                     absl::Span<const uint64_t> mask) = 0;

  // 0 unless KVM_CAP_DIRTY_LOG_RING(_ACQ_REL) is on for the VM.
  virtual uint32_t dirty_ring_bytes() const = 0;
  // KVM_RESET_DIRTY_RINGS, checking the kernel reset exactly what `rings`
  // harvested since their last reset; marks them reset.
  virtual absl::StatusOr<uint64_t> ResetDirtyRingsAndCheck(
      absl::Span<kmod::DirtyRing* const> rings) = 0;
};

// Over a real VM. `vm` must outlive this object. SetDirtyLogging and
// EnableManualProtect change VmFd's bookkeeping (non-const VmFd calls): the
// VMM must not change memslots concurrently with Start/Stop.
class KvmVmDirtyOps : public VmDirtyOps {
 public:
  explicit KvmVmDirtyOps(kmod::VmFd* vm) : vm_(vm) {}

  absl::Status SetDirtyLogging(uint32_t slot, bool enabled) override {
    return vm_->SetDirtyLogging(slot, enabled);
  }
  absl::Status GetDirtyLog(uint32_t slot, absl::Span<uint64_t> words) override {
    return vm_->GetDirtyLog(slot, words);
  }
  absl::StatusOr<uint64_t> ManualProtectSupport() override;
  bool manual_protect_enabled() const override {
    return vm_->manual_dirty_log_protect();
  }
  absl::Status EnableManualProtect(bool initially_set) override {
    return vm_->EnableManualDirtyLogProtect(initially_set);
  }
  absl::Status ClearDirtyLog(uint32_t slot, uint64_t first_page,
                             uint32_t num_pages,
                             absl::Span<const uint64_t> mask) override {
    return vm_->ClearDirtyLog(slot, first_page, num_pages, mask);
  }
  uint32_t dirty_ring_bytes() const override { return vm_->dirty_ring_bytes(); }
  absl::StatusOr<uint64_t> ResetDirtyRingsAndCheck(
      absl::Span<kmod::DirtyRing* const> rings) override {
    return vm_->ResetDirtyRingsAndCheck(rings);
  }

 private:
  kmod::VmFd* vm_;
};

}  // namespace ferry::mmu::kvm

#endif  // FERRY_MMU_KVM_VM_DIRTY_OPS_H_
