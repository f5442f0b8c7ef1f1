// FakeKvmKernel (testonly): a model of KVM's dirty-logging state machine,
// so the KVM trackers' own logic runs end to end without /dev/kvm. It
// models what the trackers rely on, after virt/kvm/kvm_main.c,
// virt/kvm/dirty_ring.c and api.rst:
//
//   per slot: logging flag, the dirty bitmap, and per page whether the spte
//   is writable (a write to a write-protected page "faults": KVM records
//   it — bitmap bit or ring entry — and makes the page writable; a write to
//   a writable page records nothing);
//   enabling logging write-protects every page, or with manual protect +
//   INITIALLY_SET sets every bit and protects nothing;
//   GET_DIRTY_LOG copies the bitmap, and without manual protect clears it
//   and re-protects those pages; fails while the ring is on;
//   CLEAR_DIRTY_LOG (manual protect only, VmFd::CheckClearRange's rules)
//   clears and re-protects mask ∩ dirty;
//   rings: real kmod::DirtyRing objects over memfd pages the fake writes as
//   kvm_dirty_ring_push() does (slot/offset, then release flags = DIRTY);
//   RESET_DIRTY_RINGS walks each ring from its reset index over RESET
//   entries, re-protecting their pages; soft-full at size - 64 entries (the
//   vCPU must exit with KVM_EXIT_DIRTY_RING_FULL), and a push into a full
//   ring is reported as the bug it would be.
//
// Thread-safety: every method may be called from any thread (one mutex);
// ring memory is shared with DirtyRing harvesters through atomics only.
#ifndef FERRY_MMU_KVM_FAKE_KVM_KERNEL_H_
#define FERRY_MMU_KVM_FAKE_KVM_KERNEL_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "kmod/dirty_ring.h"
#include "kmod/fd.h"
#include "mmu/dirty_bitmap.h"
#include "mmu/kvm/vm_dirty_ops.h"
#include "mmu/memslot.h"

namespace ferry::mmu::kvm {

class FakeKvmKernel {
 public:
  struct Options {
    // What KVM_CHECK_EXTENSION(MANUAL_DIRTY_LOG_PROTECT2) reports.
    uint64_t manual_protect_bits = 3;  // ENABLE | INITIALLY_SET
    // > 0: the ring is on (as if enabled before the vCPUs), this many bytes
    // per vCPU ring.
    uint32_t ring_bytes = 0;
    int num_vcpus = 1;
  };
  static constexpr uint32_t kRingReservedEntries = 64;  // KVM_DIRTY_RING_RSVD_ENTRIES

  struct ClearCall {
    uint32_t slot = 0;
    uint64_t first_page = 0;
    uint32_t num_pages = 0;
    uint64_t mask_pages = 0;  // bits set in the mask
  };

  static absl::StatusOr<std::shared_ptr<FakeKvmKernel>> Create(
      const Options& options, absl::Span<const Memslot> slots);

  // A VmDirtyOps onto `kernel` (which it keeps alive).
  static std::unique_ptr<VmDirtyOps> Ops(std::shared_ptr<FakeKvmKernel> kernel);

  // vCPU i's ring, as VcpuFd::dirty_ring() would hand it out.
  std::vector<kmod::DirtyRing*> rings();

  enum class WriteResult { kOk, kRingSoftFull };
  // The guest on `vcpu` writes the page at `gpa`. kRingSoftFull: the vCPU
  // must now exit with KVM_EXIT_DIRTY_RING_FULL and not write again until
  // RingSoftFull(vcpu) is false. Writing into a hard-full ring is an error.
  absl::StatusOr<WriteResult> GuestWrite(int vcpu, uint64_t gpa);
  bool RingSoftFull(int vcpu) const;

  // Observers.
  std::vector<ClearCall> clear_calls() const;
  int get_calls() const;
  bool logging(uint32_t slot) const;
  bool initially_set() const;
  // Whether the page's spte is write-protected (only meaningful while
  // logging is on).
  bool write_protected(uint32_t slot, uint64_t page) const;

  // Fault injection: a GET (after `after` more successful ones) / the next
  // CLEAR fails with `status`.
  void FailNextGet(absl::Status status, int after = 0);
  void FailNextClear(absl::Status status);

  // VmDirtyOps, by way of Ops().
  absl::Status SetDirtyLogging(uint32_t slot, bool enabled);
  absl::Status GetDirtyLog(uint32_t slot, absl::Span<uint64_t> words);
  uint64_t manual_protect_support() const { return options_.manual_protect_bits; }
  bool manual_protect_enabled() const;
  absl::Status EnableManualProtect(bool initially_set);
  absl::Status ClearDirtyLog(uint32_t slot, uint64_t first_page,
                             uint32_t num_pages, absl::Span<const uint64_t> mask);
  uint32_t dirty_ring_bytes() const { return options_.ring_bytes; }
  absl::StatusOr<uint64_t> ResetDirtyRingsAndCheck(
      absl::Span<kmod::DirtyRing* const> rings);

 private:
  struct Slot {
    Memslot memslot;
    bool logging = false;
    DirtyBitmap dirty;     // KVM's bitmap
    DirtyBitmap writable;  // spte writable (not write-protected)
  };
  struct Ring {
    kmod::Fd fd;
    kmod::Mmap kernel_view;
    std::unique_ptr<kmod::DirtyRing> user;  // what the VMM maps
    uint32_t entries = 0;
    uint32_t dirty_index = 0;
    uint32_t reset_index = 0;
  };

  explicit FakeKvmKernel(const Options& options) : options_(options) {}
  Slot* FindSlot(uint32_t slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  kvm_dirty_gfn& Entry(Ring& r, uint32_t index) const;

  const Options options_;
  mutable absl::Mutex mu_;
  std::vector<Slot> slots_ ABSL_GUARDED_BY(mu_);
  std::vector<Ring> rings_ ABSL_GUARDED_BY(mu_);
  bool manual_ ABSL_GUARDED_BY(mu_) = false;
  bool initially_set_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<ClearCall> clear_calls_ ABSL_GUARDED_BY(mu_);
  int get_calls_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status fail_get_ ABSL_GUARDED_BY(mu_);
  int fail_get_after_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status fail_clear_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::mmu::kvm

#endif  // FERRY_MMU_KVM_FAKE_KVM_KERNEL_H_
