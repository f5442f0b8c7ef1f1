// Dirty bitmap scan costs: how long harvesting-side loops take over a whole
// guest's bitmap, by guest size and dirty density.
//
//   bazel run -c opt //bench:dirty_bitmap [-- --quick]
//
// Prints one JSON object per line (times in ns, median and min of several
// repetitions): iterate set bits, iterate runs, popcount, merge into an
// empty bitmap, take-and-clear. Pages are dirtied uniformly at random (a
// new pattern per repetition), so at low density nearly every run is one
// page long and every non-zero word is a branch the CPU cannot predict:
// the worst case per dirty page. Real guests dirty in clusters.
#include <time.h>

#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>

#include "mmu/dirty_bitmap.h"

namespace {

using ferry::mmu::DirtyBitmap;

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

// Keeps results alive so the optimiser cannot drop the loops.
volatile uint64_t g_sink;

struct Timing {
  int64_t median_ns = 0;
  int64_t min_ns = 0;
  int reps = 0;
};

// `setup` runs before each repetition, outside the timed region.
Timing Measure(const std::function<void()>& setup,
               const std::function<uint64_t()>& body) {
  std::vector<int64_t> samples;
  int64_t total = 0;
  while (samples.size() < 5 || (total < 200000000 && samples.size() < 51)) {
    setup();
    const int64_t t0 = NowNs();
    g_sink = body();
    const int64_t dt = NowNs() - t0;
    samples.push_back(dt);
    total += dt;
  }
  std::sort(samples.begin(), samples.end());
  return Timing{samples[samples.size() / 2], samples.front(),
                static_cast<int>(samples.size())};
}

uint64_t SplitMix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

DirtyBitmap Fill(uint64_t npages, double density, uint64_t seed) {
  DirtyBitmap b(npages);
  if (density >= 1.0) {
    b.SetAll();
  } else if (density > 0) {
    const uint64_t threshold = static_cast<uint64_t>(density * 18446744073709551615.0);
    for (uint64_t p = 0; p < npages; ++p) {
      if (SplitMix(seed) < threshold) b.Set(p);
    }
  }
  return b;
}

void Print(const char* name, const Timing& t, bool last) {
  std::printf("\"%s_ns\":%" PRId64 ",\"%s_min_ns\":%" PRId64 "%s", name,
              t.median_ns, name, t.min_ns, last ? "" : ",");
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const std::vector<uint64_t> gibs = quick ? std::vector<uint64_t>{1}
                                           : std::vector<uint64_t>{1, 4, 16, 64};
  const double densities[] = {0.0, 0.001, 0.01, 0.1, 1.0};
  const uint64_t seed = 0xb17b17;
  for (uint64_t gib : gibs) {
    const uint64_t npages = gib << (30 - 12);
    for (double density : densities) {
      // A fresh random bitmap before every repetition (outside the timed
      // region): with the same bitmap every time, the branch predictor
      // learns a small bitmap's pattern and the figures look ~8x too good.
      uint64_t rep_seed = seed + gib * 1000;
      DirtyBitmap src = Fill(npages, density, rep_seed);
      const uint64_t set_pages = src.Count();
      uint64_t runs = 0;
      src.ForEachRun([&](uint64_t, uint64_t) { ++runs; });
      auto refill = [&] { src = Fill(npages, density, ++rep_seed); };

      const Timing bits = Measure(refill, [&] {
        uint64_t sum = 0;
        src.ForEachSetBit([&](uint64_t p) { sum += p; });
        return sum;
      });
      const Timing run_t = Measure(refill, [&] {
        uint64_t sum = 0;
        src.ForEachRun([&](uint64_t first, uint64_t n) { sum += first + n; });
        return sum;
      });
      const Timing pop = Measure(refill, [&] { return src.Count(); });
      DirtyBitmap dst(npages);
      const Timing merge = Measure([&] { refill(); dst.ClearAll(); },
                                   [&] { return dst.MergeFrom(src); });
      DirtyBitmap out(npages);
      const Timing take = Measure(refill, [&] { return src.TakeAndClear(&out); });
      std::printf("{\"bench\":\"dirty_bitmap\",\"guest_gib\":%" PRIu64
                  ",\"pages\":%" PRIu64 ",\"density\":%g,\"set_pages\":%" PRIu64
                  ",\"runs\":%" PRIu64 ",",
                  gib, npages, density, set_pages, runs);
      Print("iterate_bits", bits, false);
      Print("iterate_runs", run_t, false);
      Print("popcount", pop, false);
      Print("merge", merge, false);
      Print("take_and_clear", take, true);
      std::printf("}\n");
      std::fflush(stdout);
    }
  }
  return 0;
}
