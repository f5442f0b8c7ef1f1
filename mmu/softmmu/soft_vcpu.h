// SoftVcpu: one software vCPU of a ShadowMmu. Owned and used by one host
// thread; any number of SoftVcpus of one ShadowMmu may run concurrently.
//
// Guest accesses go through a per-vCPU software TLB (direct-mapped, keyed by
// gva page) holding the hva of the page, its permissions and the mmu
// generation at fill time. A hit with the current generation is the
// lock-free fast path (a few ns; see shadow_mmu.h for why a write through it
// can never escape dirty logging). A miss takes the mmu lock: walk the
// shadow tables ("hardware" TLB refill), else fault (walk the guest tables,
// build sptes), else report the guest's page fault.
//
// Accesses may cross pages: they are split and performed page by page; the
// first failing page stops the access (earlier pages stay written).
#ifndef FERRY_MMU_SOFTMMU_SOFT_VCPU_H_
#define FERRY_MMU_SOFTMMU_SOFT_VCPU_H_

#include <atomic>
#include <cstdint>
#include <cstring>

#include "absl/base/optimization.h"
#include "absl/status/status.h"
#include "mmu/softmmu/guest_walker.h"
#include "mmu/softmmu/shadow_mmu.h"

namespace ferry::mmu::softmmu {

// A full memory barrier (x86: a locked RMW on the stack, as Linux's
// smp_mb(); elsewhere a seq_cst fence).
inline void FullFence() {
#if defined(__x86_64__)
  asm volatile("lock; addl $0,-4(%%rsp)" ::: "memory", "cc");
#else
  std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

class SoftVcpu {
 public:
  static constexpr int kTlbEntries = 64;

  // Starts in kDirect mode (paging off).
  explicit SoftVcpu(ShadowMmu* mmu);
  ~SoftVcpu();
  SoftVcpu(const SoftVcpu&) = delete;
  SoftVcpu& operator=(const SoftVcpu&) = delete;

  // Sets the paging mode and cr3 (ignored for kDirect) and loads the root:
  // a mov to cr3 / cr0 / cr4 (flushes this vCPU's TLB).
  absl::Status SetPaging(PagingMode mode, uint64_t cr3);
  absl::Status SetCr3(uint64_t cr3) { return SetPaging(mode_, cr3); }
  PagingMode mode() const { return mode_; }
  uint64_t cr3() const { return cr3_; }
  // CPL 3 accesses must pass the U checks.
  void set_user_mode(bool user) { user_ = user; }

  AccessResult Write(uint64_t gva, const void* src, size_t len) {
    if (ABSL_PREDICT_TRUE(FastWrite(gva, src, len))) return AccessResult{};
    return SlowPath(gva, const_cast<void*>(src), len, /*write=*/true);
  }
  AccessResult Read(uint64_t gva, void* dst, size_t len) {
    if (ABSL_PREDICT_TRUE(FastRead(gva, dst, len))) return AccessResult{};
    return SlowPath(gva, dst, len, /*write=*/false);
  }

  void FlushTlb();
  // Full faults (including dirty-log write faults) taken by this vCPU.
  uint64_t faults() const { return faults_; }

 private:
  friend class ShadowMmu;
  struct TlbEntry {
    uint64_t tag = 0;  // gva page number + 1; 0 = empty
    uint64_t gen = 0;
    uint8_t* hva = nullptr;  // page base
    uint64_t gfn = 0;
    uint32_t slot_index = 0;
    uint32_t perm = 0;  // kAccWrite | kAccUser the spte allows
  };

  uint64_t Mask(uint64_t gva) const {
    return mode_ == PagingMode::kLegacy32 ? (gva & 0xFFFFFFFFull) : gva;
  }
  bool FastWrite(uint64_t gva, const void* src, size_t len) {
    gva = Mask(gva);
    const uint64_t vpn = gva >> 12;
    const TlbEntry& e = tlb_[vpn % kTlbEntries];
    const uint64_t g = mmu_->gen_.load(std::memory_order_acquire);
    const uint32_t need = kAccWrite | (user_ ? kAccUser : 0);
    const uint32_t off = static_cast<uint32_t>(gva & 4095);
    if (e.tag != vpn + 1 || e.gen != g || (e.perm & need) != need ||
        off + len > 4096) {
      return false;
    }
    std::memcpy(e.hva + off, src, len);
    FullFence();
    if (ABSL_PREDICT_FALSE(mmu_->gen_.load(std::memory_order_relaxed) != g)) {
      mmu_->AfterRacyWrite(e.slot_index, e.gfn, off,
                           static_cast<uint32_t>(len));
    }
    return true;
  }
  bool FastRead(uint64_t gva, void* dst, size_t len) {
    gva = Mask(gva);
    const uint64_t vpn = gva >> 12;
    const TlbEntry& e = tlb_[vpn % kTlbEntries];
    const uint64_t g = mmu_->gen_.load(std::memory_order_acquire);
    const uint32_t need = user_ ? kAccUser : 0;
    const uint32_t off = static_cast<uint32_t>(gva & 4095);
    if (e.tag != vpn + 1 || e.gen != g || (e.perm & need) != need ||
        off + len > 4096) {
      return false;
    }
    std::memcpy(dst, e.hva + off, len);
    return true;
  }
  AccessResult SlowPath(uint64_t gva, void* buf, size_t len, bool write);
  void Fill(uint64_t gva, uint8_t* hva_page, uint64_t gfn, int slot_index,
            uint32_t perm, uint64_t gen);

  ShadowMmu* const mmu_;
  PagingMode mode_ = PagingMode::kDirect;
  uint64_t cr3_ = 0;
  bool user_ = false;
  ShadowPage* root_ = nullptr;  // holds a root_count reference
  uint64_t faults_ = 0;
  TlbEntry tlb_[kTlbEntries];
};

}  // namespace ferry::mmu::softmmu

#endif  // FERRY_MMU_SOFTMMU_SOFT_VCPU_H_
