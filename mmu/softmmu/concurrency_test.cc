// Concurrent soft vCPUs writing through the lock-free TLB fast path while a
// collector harvests: every page written after a Collect (after the
// Reprotect, in clear-log mode) must be reported by a later Collect.
#include <atomic>
#include <cstdio>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "mmu/dirty_set.h"
#include "mmu/softmmu/soft_dirty_tracker.h"
#include "mmu/softmmu/soft_vcpu.h"
#include "mmu/softmmu/test_util.h"

namespace ferry::mmu::softmmu {
namespace {

constexpr uint64_t kPages = 512;
constexpr int kWriters = 3;

void AtomicMax(std::atomic<uint64_t>& a, uint64_t v) {
  uint64_t cur = a.load(std::memory_order_relaxed);
  while (cur < v && !a.compare_exchange_weak(cur, v)) {
  }
}

void RunConcurrent(bool manual, bool shadow) {
  GuestRam ram({{0, 0, kPages + 64}});
  auto mmu = *ShadowMmu::Create(ram.slots());
  // Shadow writers use a long-mode identity map of the first kPages pages
  // with tables above them.
  uint64_t cr3 = 0;
  if (shadow) {
    GuestPageTables pt(
        PagingMode::kLongMode,
        [&](uint64_t gpa, uint64_t v, int) {
          ASSERT_TRUE(mmu->WriteGpa(gpa, &v, 8).ok());
        },
        [&](uint64_t gpa, int) {
          uint64_t v = 0;
          EXPECT_TRUE(mmu->ReadGpa(gpa, &v, 8).ok());
          return v;
        },
        kPages * 4096);
    for (uint64_t p = 0; p < kPages; ++p) {
      pt.Map(p * 4096, p * 4096,
             kGpteWrite | kGpteAccessed | kGpteDirty);
    }
    cr3 = pt.cr3();
  }
  const Memslot slot = ram.slots()[0];
  SoftDirtyTracker tracker(mmu.get(), manual);
  ASSERT_TRUE(tracker.Start({slot}).ok());

  std::atomic<uint64_t> epoch{0};  // Collects (+ Reprotects) completed
  std::atomic<bool> stop{false};
  std::vector<std::atomic<uint64_t>> max_epoch(kPages);
  std::vector<std::atomic<bool>> written(kPages);
  std::vector<std::thread> writers;
  std::atomic<uint64_t> writes{0};
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      SoftVcpu v(mmu.get());
      if (shadow) {
        ASSERT_TRUE(v.SetPaging(PagingMode::kLongMode, cr3).ok());
      }
      std::mt19937_64 rng(w);
      uint64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        // Hot pages mostly, so the TLB fast path dominates.
        const uint64_t page = rng() % (rng() % 4 == 0 ? kPages : 48);
        const uint64_t e = epoch.load(std::memory_order_acquire);
        const uint64_t val = (e << 8) | w;
        ASSERT_TRUE(v.Write(page * 4096 + (rng() % 512) * 8, &val, 8).ok());
        AtomicMax(max_epoch[page], e);
        written[page].store(true, std::memory_order_relaxed);
        ++n;
      }
      writes += n;
    });
  }
  std::vector<uint64_t> last_report(kPages, 0);
  DirtySet set = DirtySet::ForSlots({slot});
  uint64_t k = 0;
  auto collect = [&] {
    set.ClearAll();
    ASSERT_TRUE(tracker.Collect(&set).ok());
    ++k;
    (*set.Get(0))->ForEachSetBit([&](uint64_t p) {
      if (p < kPages) last_report[p] = k;
    });
    if (manual) {
      set.ForEachRun([&](const PageRun& r) {
        ASSERT_TRUE(tracker.Reprotect(r.slot, r.first_page, r.npages).ok());
      });
    }
    epoch.store(k, std::memory_order_release);
  };
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
  while (std::chrono::steady_clock::now() < deadline) {
    collect();
    if (k % 50 == 0) mmu->ZapGfnRange(k % kPages, k % kPages + 8);
  }
  stop = true;
  for (auto& t : writers) t.join();
  collect();  // the final harvest after the writers stopped
  for (uint64_t p = 0; p < kPages; ++p) {
    if (!written[p]) continue;
    ASSERT_GT(last_report[p], max_epoch[p].load())
        << "page " << p << " written after collect " << max_epoch[p]
        << " was never reported again";
  }
  ASSERT_TRUE(mmu->CheckInvariants().ok());
  const MmuStats s = mmu->stats();
  std::printf("collects=%llu writes=%llu racy=%llu fast_fixes=%llu\n",
              (unsigned long long)k, (unsigned long long)writes.load(),
              (unsigned long long)s.racy_writes,
              (unsigned long long)s.fast_fixes);
  EXPECT_GT(k, 10u);
}

TEST(ConcurrencyTest, DirectGetLog) { RunConcurrent(false, false); }
TEST(ConcurrencyTest, DirectClearLog) { RunConcurrent(true, false); }
TEST(ConcurrencyTest, ShadowGetLog) { RunConcurrent(false, true); }
TEST(ConcurrencyTest, ShadowClearLog) { RunConcurrent(true, true); }

}  // namespace
}  // namespace ferry::mmu::softmmu
