#include "agent/migration/source/throttle.h"

#include <algorithm>
#include <cstddef>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/guest/abi.h"

namespace ferry::migration {
namespace {

constexpr uint64_t kTargetGpa =
    FERRY_GUEST_PARAMS_GPA + offsetof(ferry_guest_params, target_dirty_pages_per_sec);
constexpr uint64_t kSeqGpa =
    FERRY_GUEST_PARAMS_GPA + offsetof(ferry_guest_params, config_seq);

uint64_t* Word(vmm::Vm* vm, uint64_t gpa) {
  absl::StatusOr<uint8_t*> hva = vm->memory().GpaToHva(gpa, 8);
  // SAFETY: the params page is inside guest memory of every valid VM
  // (ResolveGuestConfig guarantees the fixed layout); 8-aligned field.
  return hva.ok() ? reinterpret_cast<uint64_t*>(*hva) : nullptr;
}

}  // namespace

ParamsPageThrottle::ParamsPageThrottle(vmm::Vm* vm, mmu::DirtyLog* log)
    : vm_(vm), log_(log) {
  if (uint64_t* t = Word(vm_, kTargetGpa)) {
    original_ = __atomic_load_n(t, __ATOMIC_RELAXED);
  }
  start_pages_written_ = vm_->Stats().guest.pages_written;
  start_ = absl::Now();
}

absl::Status ParamsPageThrottle::Write(uint64_t target) {
  uint64_t* t = Word(vm_, kTargetGpa);
  uint64_t* seq = Word(vm_, kSeqGpa);
  if (t == nullptr || seq == nullptr) {
    return absl::InternalError("params page is not in guest memory");
  }
  __atomic_store_n(t, target, __ATOMIC_RELAXED);
  __atomic_store_n(seq, __atomic_load_n(seq, __ATOMIC_RELAXED) + 1,
                   __ATOMIC_RELEASE);
  if (log_ != nullptr) {
    return log_->MarkDirty(FERRY_GUEST_PARAMS_GPA, FERRY_GUEST_PAGE_SIZE);
  }
  return absl::OkStatus();
}

absl::Status ParamsPageThrottle::Set(uint32_t percent) {
  percent = std::min<uint32_t>(percent, 99);
  if (base_ == 0) {
    base_ = original_;
    if (base_ == 0) {  // flat out: throttle relative to what it did so far
      const double secs = absl::ToDoubleSeconds(absl::Now() - start_);
      const uint64_t written =
          vm_->Stats().guest.pages_written - start_pages_written_;
      base_ = secs > 0 ? static_cast<uint64_t>(written / secs) : 0;
      if (base_ == 0) base_ = 1000000;
    }
  }
  changed_ = true;
  return Write(std::max<uint64_t>(1, base_ * (100 - percent) / 100));
}

absl::Status ParamsPageThrottle::Reset() {
  if (!changed_) return absl::OkStatus();
  changed_ = false;
  return Write(original_);
}

}  // namespace ferry::migration
