// Dirty-rate estimation, three ways (the equivalents of QEMU's
// calc-dirty-rate modes, migration/dirtyrate.c):
//
//  DirtyRateMeter     exact, from the tracker's Collect counts over a window
//                     (QEMU's dirty-bitmap / dirty-ring modes). Per vCPU when
//                     the tracker knows who wrote. Time-aware EWMA for
//                     dashboards.
//  PageSampler        no tracker needed: hash a random sample of pages, hash
//                     them again after a window, scale the changed fraction
//                     (QEMU's page-sampling mode, 512 pages per GiB by
//                     default). Costs no write faults, so it can run before a
//                     migration is even planned.
//  WorkingSetEstimator distinct pages dirtied over a long window (union of
//                     harvested sets): how much memory a VM keeps touching.
//
// All three count DISTINCT pages changed per window, not writes: a page
// written a thousand times in a window counts once, which is exactly what
// pre-copy has to resend. Rates therefore depend on the window length (a
// longer window folds more rewrites together); compare like with like.
//
// Time comes from an injected MonotonicClock so tests are hermetic.
#ifndef FERRY_MMU_DIRTY_RATE_H_
#define FERRY_MMU_DIRTY_RATE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "mmu/dirty_set.h"
#include "mmu/dirty_tracker.h"
#include "mmu/memslot.h"

namespace ferry::mmu {

// Nanoseconds on a monotonic clock.
using MonotonicClock = std::function<int64_t()>;
MonotonicClock SystemMonotonicClock();  // CLOCK_MONOTONIC

// A fast 64-bit hash of one 4 KiB page (four independent multiply-rotate
// lanes over 8-byte words, then an avalanche; not cryptographic). Reads
// with relaxed atomic loads because vCPUs may be writing the page: a torn
// read just looks like a change, which it is.
uint64_t HashPage(const uint8_t* page);

// ---------------------------------------------------------------------------
struct DirtyRate {
  int64_t window_ns = 0;
  uint64_t pages = 0;             // distinct pages dirtied in the window
  double pages_per_sec = 0;
  double bytes_per_sec = 0;
  double ewma_pages_per_sec = 0;  // smoothed over several windows
  std::vector<double> per_vcpu_pages_per_sec;  // empty if unknown
};

class DirtyRateMeter {
 public:
  explicit DirtyRateMeter(MonotonicClock clock,
                          absl::Duration ewma_time_constant = absl::Seconds(10));

  // Opens a window now (call right after the tracker's Start or a Collect
  // whose pages you do not want counted). Keeps the EWMA.
  void Restart() ABSL_LOCKS_EXCLUDED(mu_);

  // Closes the window with what a Collect returned (the pages dirtied since
  // the previous Record/Restart) and opens the next. The EWMA weights each
  // window by its length: alpha = 1 - exp(-window / time constant).
  DirtyRate Record(const CollectStats& stats) ABSL_LOCKS_EXCLUDED(mu_);

  DirtyRate last() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const MonotonicClock clock_;
  const double tau_ns_;
  mutable absl::Mutex mu_;
  int64_t window_start_ns_ ABSL_GUARDED_BY(mu_);
  bool have_ewma_ ABSL_GUARDED_BY(mu_) = false;
  double ewma_ ABSL_GUARDED_BY(mu_) = 0;
  DirtyRate last_ ABSL_GUARDED_BY(mu_);
};

// ---------------------------------------------------------------------------
struct SamplingOptions {
  // QEMU's default sample density (DIRTYRATE_DEFAULT_SAMPLE_PAGES). The
  // standard error of the changed fraction f is sqrt(f (1-f) / samples):
  // 512/GiB on 4 GiB, f = 0.1 → ±6.6% relative.
  uint64_t pages_per_gib = 512;
  // 0 picks a random seed; the one used is in the result (log it, so a
  // surprising estimate can be replayed).
  uint64_t seed = 0;
};

struct SampledDirtyRate {
  uint64_t seed = 0;
  uint64_t sampled_pages = 0;
  uint64_t changed_pages = 0;
  uint64_t total_pages = 0;
  double changed_fraction = 0;
  int64_t window_ns = 0;
  double pages_per_sec = 0;  // changed_fraction * total_pages / window
  double bytes_per_sec = 0;
};

class PageSampler {
 public:
  // `slots` (their hvas) must stay mapped until the sampler is destroyed.
  static absl::StatusOr<std::unique_ptr<PageSampler>> Create(
      absl::Span<const Memslot> slots, SamplingOptions options,
      MonotonicClock clock);

  uint64_t seed() const { return seed_; }
  uint64_t sampled_pages() const { return samples_.size(); }

  // Hashes the sample and starts the window. May be called again to
  // restart (same sample pages).
  void Start();
  // Re-hashes and returns the estimate; FAILED_PRECONDITION before Start
  // or for a zero-length window.
  absl::StatusOr<SampledDirtyRate> Finish();

 private:
  struct Sample {
    const uint8_t* hva;
    uint64_t hash;
  };
  PageSampler(uint64_t seed, uint64_t total_pages, MonotonicClock clock)
      : seed_(seed), total_pages_(total_pages), clock_(std::move(clock)) {}

  const uint64_t seed_;
  const uint64_t total_pages_;
  const MonotonicClock clock_;
  std::vector<Sample> samples_;  // sorted by hva for locality
  int64_t start_ns_ = -1;
};

// ---------------------------------------------------------------------------
struct WorkingSet {
  uint64_t pages = 0;     // distinct pages dirtied since Reset
  uint64_t bytes = 0;
  double fraction = 0;    // of all guest pages
  int64_t window_ns = 0;
};

class WorkingSetEstimator {
 public:
  WorkingSetEstimator(absl::Span<const Memslot> slots, MonotonicClock clock);

  // Adds a harvested set (e.g. from DirtyLog's HarvestObserver).
  absl::Status Add(const DirtySet& harvested) ABSL_LOCKS_EXCLUDED(mu_);
  WorkingSet Estimate() const ABSL_LOCKS_EXCLUDED(mu_);
  void Reset() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const MonotonicClock clock_;
  uint64_t total_pages_ = 0;
  mutable absl::Mutex mu_;
  DirtySet seen_ ABSL_GUARDED_BY(mu_);
  uint64_t count_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t start_ns_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::mmu

#endif  // FERRY_MMU_DIRTY_RATE_H_
