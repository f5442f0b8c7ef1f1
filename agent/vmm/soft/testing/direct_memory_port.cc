#include "agent/vmm/soft/testing/direct_memory_port.h"

#include <chrono>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace ferry::vmm::testing {

class DirectMemoryPort::Tracker : public mmu::DirtyTracker {
 public:
  explicit Tracker(DirectMemoryPort* port) : port_(port) {}
  ~Tracker() override {
    port_->tracking_.store(false);
    port_->has_tracker_.store(false);
  }

  mmu::DirtyTrackingMode mode() const override {
    return mmu::DirtyTrackingMode::kFake;
  }

  absl::Status Start(absl::Span<const mmu::Memslot> slots) override {
    if (slots.size() != port_->slots_.size()) {
      return absl::InvalidArgumentError(
          "DirectMemoryPort tracks all of guest memory; pass memory.slots()");
    }
    port_->live_.ClearAll();
    port_->tracking_.store(true);
    return absl::OkStatus();
  }

  absl::StatusOr<mmu::CollectStats> Collect(mmu::DirtySet* out) override {
    if (!port_->tracking_.load()) {
      return absl::FailedPreconditionError("Collect before Start or after Stop");
    }
    if (!out->SameLayout(port_->live_)) {
      return absl::InvalidArgumentError("Collect: DirtySet of another layout");
    }
    const auto t0 = std::chrono::steady_clock::now();
    mmu::CollectStats stats;
    auto src = port_->live_.entries();
    auto dst = out->entries();
    for (size_t i = 0; i < src.size(); ++i) {
      mmu::DirtyBitmap taken(src[i].bitmap.npages());
      stats.pages += src[i].bitmap.TakeAndClear(&taken);
      dst[i].bitmap.MergeFrom(taken);
    }
    stats.duration_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::steady_clock::now() - t0)
                            .count();
    return stats;
  }

  absl::Status Reprotect(uint32_t, uint64_t, uint64_t) override {
    return absl::OkStatus();
  }

  absl::Status Stop() override {
    port_->tracking_.store(false);
    return absl::OkStatus();
  }

 private:
  DirectMemoryPort* const port_;
};

DirectMemoryPort::DirectMemoryPort(mmu::GuestMemory& memory)
    : slots_(memory.slots().begin(), memory.slots().end()),
      live_(mmu::DirtySet::ForSlots(memory.slots())) {}

size_t DirectMemoryPort::SlotIndex(uint64_t gpa) const {
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].Contains(gpa)) return i;
  }
  __builtin_trap();  // the VMM validated the params page: a bug if reached
}

uint64_t* DirectMemoryPort::Word(uint64_t gpa, size_t* slot_index) const {
  if (gpa % 8 != 0) __builtin_trap();
  *slot_index = SlotIndex(gpa);
  const mmu::Memslot& s = slots_[*slot_index];
  // SAFETY: gpa is 8-aligned and inside slot s (checked above), whose
  // [hva, hva + size) mapping lives as long as the GuestMemory, which
  // outlives this port.
  return reinterpret_cast<uint64_t*>(s.hva + (gpa - s.gpa));
}

uint64_t DirectMemoryPort::Load64(uint32_t, uint64_t gpa) {
  size_t slot;
  return __atomic_load_n(Word(gpa, &slot), __ATOMIC_RELAXED);
}

void DirectMemoryPort::Store64(uint32_t, uint64_t gpa, uint64_t value) {
  size_t slot;
  __atomic_store_n(Word(gpa, &slot), value, __ATOMIC_RELAXED);
  // Mark after the store, like a write fault that is logged once the spte
  // is writable: a Collect that sees the bit copies the new value or later.
  if (tracking_.load(std::memory_order_acquire)) {
    live_.entries()[slot].bitmap.Set(mmu::GpaToGfn(gpa - slots_[slot].gpa));
  }
}

absl::StatusOr<std::unique_ptr<mmu::DirtyTracker>>
DirectMemoryPort::CreateDirtyTracker(mmu::DirtyTrackingMode mode) {
  if (mode != mmu::DirtyTrackingMode::kUnspecified &&
      mode != mmu::DirtyTrackingMode::kFake) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DirectMemoryPort only offers kFake tracking, not ",
        mmu::DirtyTrackingModeName(mode)));
  }
  if (has_tracker_.exchange(true)) {
    return absl::FailedPreconditionError(
        "DirectMemoryPort already has a live tracker");
  }
  return std::unique_ptr<mmu::DirtyTracker>(new Tracker(this));
}

SoftMemoryPortFactory DirectMemoryPortFactory() {
  return [](mmu::GuestMemory& memory, uint32_t)
             -> absl::StatusOr<std::unique_ptr<SoftMemoryPort>> {
    return std::unique_ptr<SoftMemoryPort>(new DirectMemoryPort(memory));
  };
}

}  // namespace ferry::vmm::testing
