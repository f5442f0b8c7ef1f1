#include "mmu/softmmu/soft_vcpu.h"

#include <algorithm>

namespace ferry::mmu::softmmu {

SoftVcpu::SoftVcpu(ShadowMmu* mmu) : mmu_(mmu) {
  root_ = mmu_->AcquireRoot(PagingMode::kDirect, 0);
}

SoftVcpu::~SoftVcpu() { mmu_->ReleaseRoot(root_); }

absl::Status SoftVcpu::SetPaging(PagingMode mode, uint64_t cr3) {
  if (mode == PagingMode::kLegacy32 && cr3 > 0xFFFFFFFFull) {
    return absl::InvalidArgumentError("32-bit cr3 above 4 GiB");
  }
  if (mode == PagingMode::kLongMode && (cr3 >> 52) != 0) {
    return absl::InvalidArgumentError("cr3 beyond MAXPHYADDR");
  }
  ShadowPage* root = mmu_->AcquireRoot(mode, cr3);
  mmu_->ReleaseRoot(root_);
  root_ = root;
  mode_ = mode;
  cr3_ = mode == PagingMode::kDirect ? 0 : cr3;
  FlushTlb();
  return absl::OkStatus();
}

void SoftVcpu::FlushTlb() {
  for (TlbEntry& e : tlb_) e = TlbEntry{};
}

void SoftVcpu::Fill(uint64_t gva, uint8_t* hva_page, uint64_t gfn,
                    int slot_index, uint32_t perm, uint64_t gen) {
  const uint64_t vpn = gva >> 12;
  TlbEntry& e = tlb_[vpn % kTlbEntries];
  e.tag = vpn + 1;
  e.gen = gen;
  e.hva = hva_page;
  e.gfn = gfn;
  e.slot_index = static_cast<uint32_t>(slot_index);
  e.perm = perm;
}

AccessResult SoftVcpu::SlowPath(uint64_t gva, void* buf, size_t len,
                                bool write) {
  auto* p = static_cast<uint8_t*>(buf);
  while (len > 0) {
    gva = Mask(gva);
    const size_t n = std::min<size_t>(len, 4096 - (gva & 4095));
    const bool fast = write ? FastWrite(gva, p, n) : FastRead(gva, p, n);
    if (!fast) {
      AccessResult r = mmu_->SlowAccess(this, gva, p, n, write, user_);
      if (!r.ok()) return r;
    }
    gva += n;
    p += n;
    len -= n;
  }
  return AccessResult{};
}

}  // namespace ferry::mmu::softmmu
