#include "mmu/kvm/fake_kvm_kernel.h"

#include "kmod/kvm_abi.h"
#include <sys/mman.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kmod/vm.h"

namespace ferry::mmu::kvm {
namespace {

class FakeOps : public VmDirtyOps {
 public:
  explicit FakeOps(std::shared_ptr<FakeKvmKernel> k) : k_(std::move(k)) {}
  absl::Status SetDirtyLogging(uint32_t slot, bool enabled) override {
    return k_->SetDirtyLogging(slot, enabled);
  }
  absl::Status GetDirtyLog(uint32_t slot, absl::Span<uint64_t> words) override {
    return k_->GetDirtyLog(slot, words);
  }
  absl::StatusOr<uint64_t> ManualProtectSupport() override {
    return k_->manual_protect_support();
  }
  bool manual_protect_enabled() const override {
    return k_->manual_protect_enabled();
  }
  absl::Status EnableManualProtect(bool initially_set) override {
    return k_->EnableManualProtect(initially_set);
  }
  absl::Status ClearDirtyLog(uint32_t slot, uint64_t first_page,
                             uint32_t num_pages,
                             absl::Span<const uint64_t> mask) override {
    return k_->ClearDirtyLog(slot, first_page, num_pages, mask);
  }
  uint32_t dirty_ring_bytes() const override { return k_->dirty_ring_bytes(); }
  absl::StatusOr<uint64_t> ResetDirtyRingsAndCheck(
      absl::Span<kmod::DirtyRing* const> rings) override {
    return k_->ResetDirtyRingsAndCheck(rings);
  }

 private:
  std::shared_ptr<FakeKvmKernel> k_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<FakeKvmKernel>> FakeKvmKernel::Create(
    const Options& options, absl::Span<const Memslot> slots) {
  std::shared_ptr<FakeKvmKernel> k(new FakeKvmKernel(options));
  absl::MutexLock l(&k->mu_);
  for (const Memslot& s : slots) {
    Slot slot;
    slot.memslot = s;
    slot.dirty = DirtyBitmap(s.npages());
    slot.writable = DirtyBitmap(s.npages());
    slot.writable.SetAll();  // no logging yet: everything writable
    k->slots_.push_back(std::move(slot));
  }
  if (options.ring_bytes != 0) {
    const uint32_t entries = options.ring_bytes / sizeof(kvm_dirty_gfn);
    if (entries <= kRingReservedEntries ||
        (options.ring_bytes & (options.ring_bytes - 1)) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("fake kernel: bad ring size ", options.ring_bytes));
    }
    // The FakeKernelRing technique of kmod/dirty_ring_test.cc: a memfd laid
    // out like a vCPU fd; DirtyRing maps it as it would a real one, and the
    // "kernel" writes through a second mapping.
    const size_t offset = KVM_DIRTY_LOG_PAGE_OFFSET * kmod::HostPageSize();
    for (int v = 0; v < options.num_vcpus; ++v) {
      Ring r;
      ASSIGN_OR_RETURN(r.fd, kmod::CreateMemfd(absl::StrCat("fake-vcpu-", v),
                                               offset + options.ring_bytes));
      ASSIGN_OR_RETURN(r.kernel_view,
                       kmod::Mmap::Create(r.fd.get(), options.ring_bytes,
                                          PROT_READ | PROT_WRITE, MAP_SHARED,
                                          offset, "fake kernel ring"));
      ASSIGN_OR_RETURN(kmod::DirtyRing ring,
                       kmod::DirtyRing::Create(r.fd, options.ring_bytes,
                                               absl::StrCat("vcpu ", v)));
      r.user = std::make_unique<kmod::DirtyRing>(std::move(ring));
      r.entries = entries;
      k->rings_.push_back(std::move(r));
    }
  }
  return k;
}

std::unique_ptr<VmDirtyOps> FakeKvmKernel::Ops(
    std::shared_ptr<FakeKvmKernel> kernel) {
  return std::make_unique<FakeOps>(std::move(kernel));
}

std::vector<kmod::DirtyRing*> FakeKvmKernel::rings() {
  absl::MutexLock l(&mu_);
  std::vector<kmod::DirtyRing*> out;
  for (Ring& r : rings_) out.push_back(r.user.get());
  return out;
}

kvm_dirty_gfn& FakeKvmKernel::Entry(Ring& r, uint32_t index) const {
  // SAFETY: kernel_view maps r.entries entries (a power of two).
  return static_cast<kvm_dirty_gfn*>(r.kernel_view.data())[index &
                                                           (r.entries - 1)];
}

FakeKvmKernel::Slot* FakeKvmKernel::FindSlot(uint32_t slot) {
  for (Slot& s : slots_) {
    if (s.memslot.slot == slot) return &s;
  }
  return nullptr;
}

absl::StatusOr<FakeKvmKernel::WriteResult> FakeKvmKernel::GuestWrite(
    int vcpu, uint64_t gpa) {
  absl::MutexLock l(&mu_);
  Slot* s = nullptr;
  for (Slot& c : slots_) {
    if (c.memslot.Contains(gpa)) s = &c;
  }
  if (s == nullptr) {
    return absl::NotFoundError(absl::StrCat("fake kernel: gpa 0x",
                                            absl::Hex(gpa), " in no slot"));
  }
  const uint64_t page = (gpa - s->memslot.gpa) >> kPageShift;
  if (!s->logging || s->writable.Test(page)) return WriteResult::kOk;
  // The write fault: record, then make the spte writable.
  s->writable.Set(page);
  if (rings_.empty()) {
    s->dirty.Set(page);
    return WriteResult::kOk;
  }
  if (vcpu < 0 || static_cast<size_t>(vcpu) >= rings_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("fake kernel: vcpu ", vcpu));
  }
  Ring& r = rings_[vcpu];
  if (r.dirty_index - r.reset_index >= r.entries) {
    return absl::InternalError(absl::StrCat(
        "fake kernel: vcpu ", vcpu, " pushed into a full dirty ring (the "
        "KVM_EXIT_DIRTY_RING_FULL exit was not handled by harvest + reset)"));
  }
  kvm_dirty_gfn& e = Entry(r, r.dirty_index++);
  e.slot = s->memslot.slot;
  e.offset = page;
  __atomic_store_n(&e.flags, uint32_t{KVM_DIRTY_GFN_F_DIRTY}, __ATOMIC_RELEASE);
  return r.dirty_index - r.reset_index >= r.entries - kRingReservedEntries
             ? WriteResult::kRingSoftFull
             : WriteResult::kOk;
}

bool FakeKvmKernel::RingSoftFull(int vcpu) const {
  absl::MutexLock l(&mu_);
  const Ring& r = rings_.at(vcpu);
  return r.dirty_index - r.reset_index >= r.entries - kRingReservedEntries;
}

absl::Status FakeKvmKernel::SetDirtyLogging(uint32_t slot, bool enabled) {
  absl::MutexLock l(&mu_);
  Slot* s = FindSlot(slot);
  if (s == nullptr) return absl::NotFoundError(absl::StrCat("fake kernel: slot ", slot));
  if (s->logging == enabled) return absl::OkStatus();
  s->logging = enabled;
  s->dirty.ClearAll();
  if (enabled && manual_ && initially_set_ && rings_.empty()) {
    s->dirty.SetAll();  // KVM_DIRTY_LOG_INITIALLY_SET: all dirty, none protected
    s->writable.SetAll();
  } else if (enabled) {
    s->writable.ClearAll();  // write-protect the whole slot
  } else {
    s->writable.SetAll();
  }
  return absl::OkStatus();
}

absl::Status FakeKvmKernel::GetDirtyLog(uint32_t slot,
                                        absl::Span<uint64_t> words) {
  absl::MutexLock l(&mu_);
  ++get_calls_;
  if (!fail_get_.ok() && fail_get_after_-- == 0) {
    return std::exchange(fail_get_, absl::OkStatus());
  }
  if (!rings_.empty()) return absl::FailedPreconditionError("fake kernel: ENXIO (ring on)");
  Slot* s = FindSlot(slot);
  if (s == nullptr || !s->logging) {
    return absl::NotFoundError(absl::StrCat("fake kernel: slot ", slot, " ENOENT"));
  }
  if (words.size() < s->dirty.num_words()) return absl::InvalidArgumentError("short bitmap");
  absl::Span<const uint64_t> src = s->dirty.words();
  std::copy(src.begin(), src.end(), words.begin());
  if (!manual_) {
    s->dirty.ForEachSetBit([&](uint64_t p) { s->writable.Clear(p); });
    s->dirty.ClearAll();
  }
  return absl::OkStatus();
}

bool FakeKvmKernel::manual_protect_enabled() const {
  absl::MutexLock l(&mu_);
  return manual_;
}

bool FakeKvmKernel::initially_set() const {
  absl::MutexLock l(&mu_);
  return initially_set_;
}

absl::Status FakeKvmKernel::EnableManualProtect(bool initially_set) {
  absl::MutexLock l(&mu_);
  const uint64_t want = 1 | (initially_set ? 2 : 0);
  if ((want & ~options_.manual_protect_bits) != 0) {
    return absl::FailedPreconditionError("fake kernel: unsupported manual protect bits");
  }
  manual_ = true;
  initially_set_ = initially_set;
  return absl::OkStatus();
}

absl::Status FakeKvmKernel::ClearDirtyLog(uint32_t slot, uint64_t first_page,
                                          uint32_t num_pages,
                                          absl::Span<const uint64_t> mask) {
  absl::MutexLock l(&mu_);
  if (!fail_clear_.ok()) return std::exchange(fail_clear_, absl::OkStatus());
  if (!rings_.empty()) return absl::FailedPreconditionError("fake kernel: ENXIO (ring on)");
  if (!manual_) return absl::InvalidArgumentError("fake kernel: EINVAL (no manual protect)");
  Slot* s = FindSlot(slot);
  if (s == nullptr || !s->logging) {
    return absl::NotFoundError(absl::StrCat("fake kernel: slot ", slot, " ENOENT"));
  }
  // The real ioctl also refuses first_page == npages (kvm_main.c).
  if (first_page >= s->memslot.npages()) {
    return absl::InvalidArgumentError("fake kernel: EINVAL first_page");
  }
  RETURN_IF_ERROR(kmod::VmFd::CheckClearRange(s->memslot.npages(), first_page,
                                              num_pages, mask.size()));
  ClearCall call{slot, first_page, num_pages, 0};
  for (uint64_t i = 0; i < num_pages; ++i) {
    if ((mask[i / 64] >> (i % 64) & 1) == 0) continue;
    ++call.mask_pages;
    const uint64_t p = first_page + i;
    if (s->dirty.Test(p)) {  // protect only what was dirty (mask ∩ dirty)
      s->dirty.Clear(p);
      s->writable.Clear(p);
    }
  }
  clear_calls_.push_back(call);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> FakeKvmKernel::ResetDirtyRingsAndCheck(
    absl::Span<kmod::DirtyRing* const> rings) {
  absl::MutexLock l(&mu_);
  if (rings_.empty()) return absl::InvalidArgumentError("fake kernel: EINVAL (no ring)");
  uint64_t harvested = 0;
  for (const kmod::DirtyRing* r : rings) harvested += r->harvested_since_reset();
  uint64_t reset = 0;
  for (Ring& r : rings_) {  // kvm_dirty_ring_reset(), per vCPU
    while (r.reset_index != r.dirty_index) {
      kvm_dirty_gfn& e = Entry(r, r.reset_index);
      if ((__atomic_load_n(&e.flags, __ATOMIC_ACQUIRE) & KVM_DIRTY_GFN_F_RESET) == 0) break;
      if (Slot* s = FindSlot(e.slot); s != nullptr && s->logging &&
                                      e.offset < s->memslot.npages()) {
        s->writable.Clear(e.offset);  // re-protect
      }
      __atomic_store_n(&e.flags, uint32_t{0}, __ATOMIC_RELEASE);
      ++r.reset_index;
      ++reset;
    }
  }
  for (kmod::DirtyRing* r : rings) r->MarkReset();
  if (reset != harvested) {
    return absl::InternalError(absl::StrCat("fake kernel: reset ", reset,
                                            " entries but ", harvested,
                                            " were harvested"));
  }
  return reset;
}

std::vector<FakeKvmKernel::ClearCall> FakeKvmKernel::clear_calls() const {
  absl::MutexLock l(&mu_);
  return clear_calls_;
}

int FakeKvmKernel::get_calls() const {
  absl::MutexLock l(&mu_);
  return get_calls_;
}

bool FakeKvmKernel::logging(uint32_t slot) const {
  absl::MutexLock l(&mu_);
  for (const Slot& s : slots_) {
    if (s.memslot.slot == slot) return s.logging;
  }
  return false;
}

bool FakeKvmKernel::write_protected(uint32_t slot, uint64_t page) const {
  absl::MutexLock l(&mu_);
  for (const Slot& s : slots_) {
    if (s.memslot.slot == slot) return !s.writable.Test(page);
  }
  return false;
}

void FakeKvmKernel::FailNextGet(absl::Status status, int after) {
  absl::MutexLock l(&mu_);
  fail_get_ = std::move(status);
  fail_get_after_ = after;
}

void FakeKvmKernel::FailNextClear(absl::Status status) {
  absl::MutexLock l(&mu_);
  fail_clear_ = std::move(status);
}

}  // namespace ferry::mmu::kvm
