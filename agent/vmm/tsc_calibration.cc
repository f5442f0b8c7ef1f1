#include "agent/vmm/tsc_calibration.h"

#include <time.h>
#include <x86intrin.h>

#include <algorithm>
#include <array>

namespace ferry::vmm {
namespace {

int64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

uint64_t OneWindow(int64_t window_ns) {
  const int64_t t0 = MonotonicNs();
  const uint64_t c0 = __rdtsc();
  int64_t t1;
  do {
    t1 = MonotonicNs();
  } while (t1 - t0 < window_ns);
  const uint64_t c1 = __rdtsc();
  return static_cast<uint64_t>(static_cast<double>(c1 - c0) * 1e9 /
                               static_cast<double>(t1 - t0));
}

}  // namespace

uint64_t MeasureTscHz(absl::Duration window) {
  const int64_t ns = std::max<int64_t>(absl::ToInt64Nanoseconds(window), 1000);
  std::array<uint64_t, 3> samples;
  for (uint64_t& s : samples) s = OneWindow(ns);
  std::sort(samples.begin(), samples.end());
  return std::max<uint64_t>(samples[1], 1);
}

uint64_t CalibratedTscHz() {
  static const uint64_t kHz = MeasureTscHz(absl::Milliseconds(20));
  return kHz;
}

}  // namespace ferry::vmm
