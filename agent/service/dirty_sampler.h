// VmDirtySampler: a VM's dirty rate and working set without dirty logging,
// from mmu::PageSampler (QEMU's calc-dirty-rate page-sampling mode). It
// costs the guest nothing — no write protection, no faults — so the agent
// runs it for every VM all the time; a migration's tracker gives exact
// figures when one is running (VmRegistry::AttachMigration).
//
// Two samplers over the same kind of random page sample:
//   window sampler   restarted every Tick(): distinct pages changed per
//                    window -> pages/s, bytes/s. Kept in a short history so
//                    a caller can ask for a longer averaging window.
//   horizon sampler  restarted every `horizon_windows` Ticks: distinct pages
//                    changed over the whole horizon = the working set
//                    (VmStats.working_set_bytes: what pre-copy keeps
//                    resending). Until the first horizon completes, the
//                    partial horizon is reported (an underestimate).
//
// Not thread-safe: the owner serializes calls (VmRegistry's sample_mu).
#ifndef FERRY_AGENT_SERVICE_DIRTY_SAMPLER_H_
#define FERRY_AGENT_SERVICE_DIRTY_SAMPLER_H_

#include <cstdint>
#include <deque>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "mmu/dirty_rate.h"
#include "mmu/memslot.h"

namespace ferry::service {

struct DirtySamplerOptions {
  // QEMU's density (512 pages/GiB) is too sparse for small VMs (a 64 MiB VM
  // would get 32 pages); at least `min_sampled_pages` are sampled (capped at
  // the VM's size). Hashing 4 KiB pages at ~GB/s, 4096 pages cost ~5 ms.
  uint64_t pages_per_gib = 512;
  uint64_t min_sampled_pages = 4096;
  // Windows per working-set horizon (VmStats: "the last ~10 windows").
  int horizon_windows = 10;
  // Windows kept for averaging over longer windows.
  size_t history_windows = 120;
  uint64_t seed = 0;  // 0 = random; reported in DirtyEstimate.seed
};

struct DirtyEstimate {
  bool valid = false;          // false until the first window closed
  int64_t window_ns = 0;       // the span the rates were averaged over
  absl::Time sample_time;      // when the newest window closed
  double pages_per_sec = 0;
  double bytes_per_sec = 0;
  uint64_t working_set_bytes = 0;
  uint64_t sampled_pages = 0;
  uint64_t seed = 0;
};

class VmDirtySampler {
 public:
  // `slots` must stay mapped until the sampler is destroyed.
  static absl::StatusOr<std::unique_ptr<VmDirtySampler>> Create(
      absl::Span<const mmu::Memslot> slots, DirtySamplerOptions options,
      mmu::MonotonicClock clock);

  // Closes the current window (re-hashes the sample), records it and opens
  // the next. FAILED_PRECONDITION for a zero-length window (nothing kept).
  absl::StatusOr<mmu::SampledDirtyRate> Tick();

  // Rates averaged over the newest windows that together cover `window`
  // (at least one; 0 = the newest alone) and the working set.
  DirtyEstimate Estimate(absl::Duration window) const;

 private:
  struct Window {
    int64_t window_ns;
    double pages;  // estimated distinct pages changed in the window
    absl::Time end;
  };
  VmDirtySampler(DirtySamplerOptions options,
                 std::unique_ptr<mmu::PageSampler> window,
                 std::unique_ptr<mmu::PageSampler> horizon)
      : options_(options),
        window_(std::move(window)),
        horizon_(std::move(horizon)) {}

  const DirtySamplerOptions options_;
  std::unique_ptr<mmu::PageSampler> window_;
  std::unique_ptr<mmu::PageSampler> horizon_;
  std::deque<Window> history_;  // newest at the back
  int horizon_ticks_ = 0;
  bool horizon_complete_ = false;
  uint64_t working_set_pages_ = 0;
};

}  // namespace ferry::service

#endif  // FERRY_AGENT_SERVICE_DIRTY_SAMPLER_H_
