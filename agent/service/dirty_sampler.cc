#include "agent/service/dirty_sampler.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/time/clock.h"
#include "common/status_macros.h"

namespace ferry::service {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

mmu::SamplingOptions Density(absl::Span<const mmu::Memslot> slots,
                             const DirtySamplerOptions& options,
                             uint64_t seed) {
  uint64_t bytes = 0;
  for (const mmu::Memslot& s : slots) bytes += s.size;
  mmu::SamplingOptions out;
  out.seed = seed;
  const double wanted_per_gib =
      bytes == 0 ? 0 : options.min_sampled_pages * kGiB / bytes;
  out.pages_per_gib = std::max<uint64_t>(
      options.pages_per_gib,
      static_cast<uint64_t>(std::ceil(wanted_per_gib)));
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<VmDirtySampler>> VmDirtySampler::Create(
    absl::Span<const mmu::Memslot> slots, DirtySamplerOptions options,
    mmu::MonotonicClock clock) {
  if (options.horizon_windows < 1 || options.history_windows < 1) {
    return absl::InvalidArgumentError(
        "horizon_windows and history_windows must be >= 1");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<mmu::PageSampler> window,
                   mmu::PageSampler::Create(
                       slots, Density(slots, options, options.seed), clock));
  // The horizon sampler draws its own sample from a derived seed so the two
  // estimates' errors are independent; the logged seed replays both.
  ASSIGN_OR_RETURN(
      std::unique_ptr<mmu::PageSampler> horizon,
      mmu::PageSampler::Create(
          slots, Density(slots, options, window->seed() ^ 0x9e3779b97f4a7c15ull),
          clock));
  options.seed = window->seed();
  window->Start();
  horizon->Start();
  return std::unique_ptr<VmDirtySampler>(
      new VmDirtySampler(options, std::move(window), std::move(horizon)));
}

absl::StatusOr<mmu::SampledDirtyRate> VmDirtySampler::Tick() {
  ASSIGN_OR_RETURN(mmu::SampledDirtyRate rate, window_->Finish());
  window_->Start();
  history_.push_back(Window{rate.window_ns,
                            rate.changed_fraction * rate.total_pages,
                            absl::Now()});
  while (history_.size() > options_.history_windows) history_.pop_front();

  // A completed horizon's figure stands until the next one completes; before
  // the first, the partial horizon is the best there is.
  const bool closes = ++horizon_ticks_ >= options_.horizon_windows;
  absl::StatusOr<mmu::SampledDirtyRate> horizon = horizon_->Finish();
  if (horizon.ok() && (closes || !horizon_complete_)) {
    working_set_pages_ = static_cast<uint64_t>(
        std::llround(horizon->changed_fraction * horizon->total_pages));
  }
  if (closes) {
    horizon_complete_ = true;
    horizon_ticks_ = 0;
    horizon_->Start();
  }
  return rate;
}

DirtyEstimate VmDirtySampler::Estimate(absl::Duration window) const {
  DirtyEstimate e;
  e.seed = options_.seed;
  e.sampled_pages = window_->sampled_pages();
  e.working_set_bytes = working_set_pages_ * mmu::kPageSize;
  if (history_.empty()) return e;
  e.valid = true;
  e.sample_time = history_.back().end;
  const int64_t want_ns = absl::ToInt64Nanoseconds(window);
  double pages = 0;
  for (auto it = history_.rbegin(); it != history_.rend(); ++it) {
    pages += it->pages;
    e.window_ns += it->window_ns;
    if (e.window_ns >= want_ns) break;
  }
  e.pages_per_sec = e.window_ns > 0 ? pages * 1e9 / e.window_ns : 0;
  e.bytes_per_sec = e.pages_per_sec * mmu::kPageSize;
  return e;
}

}  // namespace ferry::service
