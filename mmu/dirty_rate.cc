#include "mmu/dirty_rate.h"

#include <time.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace ferry::mmu {
namespace {

constexpr double kNsPerSec = 1e9;
constexpr uint64_t kGiB = uint64_t{1} << 30;

// Constants from the xxHash family (large odd primes with good bit spread).
constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kP3 = 0x165667B19E3779F9ull;

inline uint64_t Rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline uint64_t Round(uint64_t acc, uint64_t w) {
  return Rotl(acc + w * kP2, 31) * kP1;
}
inline uint64_t Avalanche(uint64_t h) {
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

// splitmix64: tiny, seedable, and identical on every platform (unlike the
// std:: distributions), so a printed seed replays the same sample.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) by multiply-high (Lemire); bias ≤ n / 2^64.
  uint64_t Below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * n) >> 64);
  }

 private:
  uint64_t state_;
};

// k distinct values from [0, n), uniformly (Floyd's algorithm), sorted.
std::vector<uint64_t> SampleDistinct(SplitMix64& rng, uint64_t n, uint64_t k) {
  k = std::min(k, n);
  absl::flat_hash_set<uint64_t> chosen;
  chosen.reserve(k);
  for (uint64_t j = n - k; j < n; ++j) {
    const uint64_t t = rng.Below(j + 1);
    if (!chosen.insert(t).second) chosen.insert(j);
  }
  std::vector<uint64_t> out(chosen.begin(), chosen.end());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

MonotonicClock SystemMonotonicClock() {
  return [] {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
  };
}

uint64_t HashPage(const uint8_t* page) {
  // SAFETY: `page` points at kPageSize readable, 8-byte aligned bytes (a
  // guest page inside a mapped memslot). Guest vCPUs may write concurrently,
  // hence relaxed atomic loads rather than plain ones.
  const uint64_t* w = reinterpret_cast<const uint64_t*>(page);
  uint64_t a = kP1 + kP2, b = kP2, c = 0, d = 0 - kP1;
  for (size_t i = 0; i < kPageSize / 8; i += 4) {
    a = Round(a, __atomic_load_n(w + i, __ATOMIC_RELAXED));
    b = Round(b, __atomic_load_n(w + i + 1, __ATOMIC_RELAXED));
    c = Round(c, __atomic_load_n(w + i + 2, __ATOMIC_RELAXED));
    d = Round(d, __atomic_load_n(w + i + 3, __ATOMIC_RELAXED));
  }
  return Avalanche(Rotl(a, 1) + Rotl(b, 7) + Rotl(c, 12) + Rotl(d, 18) + kPageSize);
}

// --- DirtyRateMeter ---------------------------------------------------------

DirtyRateMeter::DirtyRateMeter(MonotonicClock clock,
                               absl::Duration ewma_time_constant)
    : clock_(std::move(clock)),
      tau_ns_(std::max(1.0, absl::ToDoubleNanoseconds(ewma_time_constant))),
      window_start_ns_(clock_()) {}

void DirtyRateMeter::Restart() {
  absl::MutexLock l(&mu_);
  window_start_ns_ = clock_();
}

DirtyRate DirtyRateMeter::Record(const CollectStats& stats) {
  const int64_t now = clock_();
  absl::MutexLock l(&mu_);
  DirtyRate r;
  r.window_ns = now - window_start_ns_;
  window_start_ns_ = now;
  r.pages = stats.pages;
  if (r.window_ns > 0) {
    const double secs = r.window_ns / kNsPerSec;
    r.pages_per_sec = stats.pages / secs;
    r.bytes_per_sec = r.pages_per_sec * kPageSize;
    for (uint64_t v : stats.per_vcpu_pages) {
      r.per_vcpu_pages_per_sec.push_back(v / secs);
    }
    if (!have_ewma_) {
      ewma_ = r.pages_per_sec;
      have_ewma_ = true;
    } else {
      const double alpha = 1.0 - std::exp(-r.window_ns / tau_ns_);
      ewma_ += alpha * (r.pages_per_sec - ewma_);
    }
  }
  r.ewma_pages_per_sec = ewma_;
  last_ = r;
  return r;
}

DirtyRate DirtyRateMeter::last() const {
  absl::MutexLock l(&mu_);
  return last_;
}

// --- PageSampler ------------------------------------------------------------

absl::StatusOr<std::unique_ptr<PageSampler>> PageSampler::Create(
    absl::Span<const Memslot> slots, SamplingOptions options,
    MonotonicClock clock) {
  if (slots.empty()) return absl::InvalidArgumentError("no memslots to sample");
  if (options.pages_per_gib == 0) {
    return absl::InvalidArgumentError("pages_per_gib must be > 0");
  }
  uint64_t seed = options.seed;
  while (seed == 0) {
    std::random_device rd;
    seed = (uint64_t{rd()} << 32) ^ rd();
  }
  uint64_t total = 0;
  for (const Memslot& s : slots) {
    if (s.hva == nullptr || s.npages() == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("slot ", s.slot, " has no host mapping or no pages"));
    }
    total += s.npages();
  }
  std::unique_ptr<PageSampler> sampler(new PageSampler(seed, total, std::move(clock)));
  SplitMix64 rng(seed);
  for (const Memslot& s : slots) {
    // Proportional to the slot's size, at least one page per slot.
    const uint64_t want = std::max<uint64_t>(
        1, static_cast<uint64_t>(std::llround(
               static_cast<double>(s.size) * options.pages_per_gib / kGiB)));
    for (uint64_t page : SampleDistinct(rng, s.npages(), want)) {
      sampler->samples_.push_back(Sample{s.hva + (page << kPageShift), 0});
    }
  }
  return sampler;
}

void PageSampler::Start() {
  for (Sample& s : samples_) s.hash = HashPage(s.hva);
  start_ns_ = clock_();
}

absl::StatusOr<SampledDirtyRate> PageSampler::Finish() {
  if (start_ns_ < 0) return absl::FailedPreconditionError("Finish before Start");
  SampledDirtyRate r;
  for (const Sample& s : samples_) r.changed_pages += HashPage(s.hva) != s.hash;
  r.window_ns = clock_() - start_ns_;
  if (r.window_ns <= 0) {
    return absl::FailedPreconditionError("sampling window has zero length");
  }
  r.seed = seed_;
  r.sampled_pages = samples_.size();
  r.total_pages = total_pages_;
  r.changed_fraction = static_cast<double>(r.changed_pages) / r.sampled_pages;
  r.pages_per_sec = r.changed_fraction * total_pages_ / (r.window_ns / kNsPerSec);
  r.bytes_per_sec = r.pages_per_sec * kPageSize;
  return r;
}

// --- WorkingSetEstimator ----------------------------------------------------

WorkingSetEstimator::WorkingSetEstimator(absl::Span<const Memslot> slots,
                                         MonotonicClock clock)
    : clock_(std::move(clock)),
      seen_(DirtySet::ForSlots(slots)),
      start_ns_(clock_()) {
  for (const Memslot& s : slots) total_pages_ += s.npages();
}

absl::Status WorkingSetEstimator::Add(const DirtySet& harvested) {
  absl::MutexLock l(&mu_);
  absl::StatusOr<uint64_t> added = seen_.MergeFrom(harvested);
  if (!added.ok()) return added.status();
  count_ += *added;
  return absl::OkStatus();
}

WorkingSet WorkingSetEstimator::Estimate() const {
  const int64_t now = clock_();
  absl::MutexLock l(&mu_);
  WorkingSet ws;
  ws.pages = count_;
  ws.bytes = count_ << kPageShift;
  ws.fraction = total_pages_ == 0 ? 0 : static_cast<double>(count_) / total_pages_;
  ws.window_ns = now - start_ns_;
  return ws;
}

void WorkingSetEstimator::Reset() {
  const int64_t now = clock_();
  absl::MutexLock l(&mu_);
  seen_.ClearAll();
  count_ = 0;
  start_ns_ = now;
}

}  // namespace ferry::mmu
