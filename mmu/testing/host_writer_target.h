// HostWriterTarget (testonly): a DirtyTrackingTarget whose "vCPUs" are host
// threads storing stamps into GuestMemory. Each store first goes through a
// WriteHook — the tracked path: FakeDirtyTracker::Dirty, or a model of
// KVM's write fault (mmu/kvm/fake_kvm_kernel.h) — so the conformance suite
// runs on machines without /dev/kvm, and proves itself against trackers
// that are broken on purpose.
#ifndef FERRY_MMU_TESTING_HOST_WRITER_TARGET_H_
#define FERRY_MMU_TESTING_HOST_WRITER_TARGET_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "mmu/dirty_tracker.h"
#include "mmu/guest_memory.h"
#include "mmu/memslot.h"
#include "mmu/testing/tracker_conformance.h"

namespace ferry::mmu::testing {

struct HostWriterOptions {
  // Uneven sizes (tails that are not whole bitmap words), a gap, ids that
  // are not 0..n-1.
  std::vector<MemslotSpec> slots = {
      {0, 0, 300 * kPageSize},
      {3, 4ull << 20, 1000 * kPageSize},
  };
  // Stores per iteration: a seeded count in [0, max_writes], a mix of
  // scattered pages and runs (up to 200 pages, so runs straddle words).
  uint64_t max_writes = 256;
  // Writer threads; iteration pages are dealt round-robin among them.
  int writers = 1;
};

// Called on writer thread `writer` right before it stores at `gpa`, like a
// write fault before the store retires. An error fails RunIteration.
using WriteHook = std::function<absl::Status(int writer, uint64_t gpa)>;

struct TrackedPath {
  std::unique_ptr<DirtyTracker> tracker;
  WriteHook hook;
  std::shared_ptr<void> keep_alive;  // e.g. a fake kernel the hook uses
};

class HostWriterTarget : public DirtyTrackingTarget {
 public:
  // `make` builds the tracker and hook for the memory's slots.
  static absl::StatusOr<std::unique_ptr<HostWriterTarget>> Create(
      const HostWriterOptions& options,
      const std::function<absl::StatusOr<TrackedPath>(
          absl::Span<const Memslot>)>& make);

  // The gpas an iteration with `seed` writes, in order (repeats allowed).
  static std::vector<uint64_t> PagesFor(uint64_t seed,
                                        absl::Span<const Memslot> slots,
                                        uint64_t max_writes);

  DirtyTracker* tracker() override { return path_.tracker.get(); }
  absl::Span<const Memslot> slots() const override { return memory_->slots(); }
  absl::Status RunIteration(uint64_t stamp, uint64_t seed) override;
  absl::StatusOr<uint64_t> ReadStamp(uint64_t gpa) override;

 private:
  HostWriterTarget(const HostWriterOptions& options,
                   std::unique_ptr<GuestMemory> memory)
      : options_(options), memory_(std::move(memory)) {}

  const HostWriterOptions options_;
  std::unique_ptr<GuestMemory> memory_;
  TrackedPath path_;  // destroyed before memory_
};

}  // namespace ferry::mmu::testing

#endif  // FERRY_MMU_TESTING_HOST_WRITER_TARGET_H_
