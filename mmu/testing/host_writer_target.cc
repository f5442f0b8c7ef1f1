#include "mmu/testing/host_writer_target.h"

#include <random>
#include <thread>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"

namespace ferry::mmu::testing {

absl::StatusOr<std::unique_ptr<HostWriterTarget>> HostWriterTarget::Create(
    const HostWriterOptions& options,
    const std::function<absl::StatusOr<TrackedPath>(absl::Span<const Memslot>)>&
        make) {
  if (options.writers < 1) {
    return absl::InvalidArgumentError("HostWriterTarget: writers must be >= 1");
  }
  GuestMemoryLayout layout;
  layout.slots = options.slots;
  layout.name = "conformance-host-writer";
  ASSIGN_OR_RETURN(std::unique_ptr<GuestMemory> memory,
                   GuestMemory::Create(layout));
  std::unique_ptr<HostWriterTarget> target(
      new HostWriterTarget(options, std::move(memory)));
  ASSIGN_OR_RETURN(target->path_, make(target->memory_->slots()));
  if (target->path_.tracker == nullptr || !target->path_.hook) {
    return absl::InvalidArgumentError(
        "HostWriterTarget: make() must return a tracker and a hook");
  }
  return target;
}

std::vector<uint64_t> HostWriterTarget::PagesFor(
    uint64_t seed, absl::Span<const Memslot> slots, uint64_t max_writes) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> gpas;
  const uint64_t n = rng() % (max_writes + 1);
  while (gpas.size() < n) {
    const Memslot& s = slots[rng() % slots.size()];
    const uint64_t first = rng() % s.npages();
    // Half scattered pages, half runs (which may straddle bitmap words and
    // reach the slot's last page).
    const uint64_t len =
        rng() % 2 == 0 ? 1 : 1 + rng() % std::min<uint64_t>(200, n - gpas.size());
    for (uint64_t p = first; p < first + len && p < s.npages() && gpas.size() < n;
         ++p) {
      gpas.push_back(s.gpa + (p << kPageShift));
    }
  }
  return gpas;
}

absl::Status HostWriterTarget::RunIteration(uint64_t stamp, uint64_t seed) {
  const std::vector<uint64_t> gpas =
      PagesFor(seed, memory_->slots(), options_.max_writes);
  absl::Mutex mu;
  absl::Status first_error;
  auto writer = [&](int w) {
    for (size_t i = w; i < gpas.size(); i += options_.writers) {
      absl::Status s = path_.hook(w, gpas[i]);
      absl::StatusOr<uint8_t*> hva = memory_->GpaToHva(gpas[i], 8);
      if (s.ok() && !hva.ok()) s = hva.status();
      if (!s.ok()) {
        absl::MutexLock l(&mu);
        if (first_error.ok()) first_error = s;
        return;
      }
      // SAFETY: hva maps 8 bytes of a live slot; writers may store to the
      // same page concurrently (same value), hence the atomic store.
      __atomic_store_n(reinterpret_cast<uint64_t*>(*hva), stamp,
                       __ATOMIC_RELAXED);
    }
  };
  std::vector<std::thread> threads;
  for (int w = 0; w < options_.writers; ++w) threads.emplace_back(writer, w);
  // The stop handshake: every writer has finished and been joined (join
  // synchronises-with the thread's completion, so every store is visible).
  for (std::thread& t : threads) t.join();
  return first_error;
}

absl::StatusOr<uint64_t> HostWriterTarget::ReadStamp(uint64_t gpa) {
  ASSIGN_OR_RETURN(uint8_t * hva, memory_->GpaToHva(gpa, 8));
  // SAFETY: writers are stopped (joined); hva maps 8 bytes of a slot.
  return __atomic_load_n(reinterpret_cast<const uint64_t*>(hva),
                         __ATOMIC_RELAXED);
}

}  // namespace ferry::mmu::testing
