// Software MMU costs (mmu/softmmu): TLB fast-path writes, fault paths,
// dirty-log enable with and without the slot_bitmap filter on a 16 GiB
// slot, collect, memory per mapped 4 KiB, and faults saved by updating
// sptes on guest pte writes.
//
//   bazel run -c opt //bench:softmmu [-- --quick]
//
// Prints one JSON object per line. Guest RAM is MAP_NORESERVE anonymous
// memory; faults are taken with reads (the zero page), so a 16 GiB slot
// costs only the pages actually written.
#include <sys/mman.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "mmu/dirty_bitmap.h"
#include "mmu/memslot.h"
#include "mmu/softmmu/shadow_mmu.h"
#include "mmu/softmmu/soft_vcpu.h"

namespace {

using ferry::mmu::DirtyBitmap;
using ferry::mmu::Memslot;
using namespace ferry::mmu::softmmu;  // NOLINT: bench brevity

constexpr uint64_t kGiB = uint64_t{1} << 30;
bool g_quick = false;

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

// populate: pre-fault host pages (dense slots), so the figures measure the
// MMU rather than host page faults; otherwise sparse MAP_NORESERVE.
Memslot MapSlot(uint32_t id, uint64_t gpa, uint64_t size,
                bool populate = false) {
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS |
                     (populate ? MAP_POPULATE : MAP_NORESERVE),
                 -1, 0);
  if (p == MAP_FAILED) {
    std::perror("mmap");
    std::exit(1);
  }
  Memslot m;
  m.slot = id;
  m.gpa = gpa;
  m.size = size;
  m.hva = static_cast<uint8_t*>(p);
  return m;
}

void Must(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "failed: %s\n", what);
    std::exit(1);
  }
}

// Identity-maps [0, npages) pages in long mode with tables from `pool`.
uint64_t BuildIdentityMap(ShadowMmu* mmu, uint64_t npages, uint64_t pool) {
  uint64_t next = pool;
  auto alloc = [&] { return (next += 4096) - 4096; };
  const uint64_t cr3 = alloc();
  auto rd = [&](uint64_t gpa) {
    uint64_t v = 0;
    Must(mmu->ReadGpa(gpa, &v, 8).ok(), "read gpte");
    return v;
  };
  auto wr = [&](uint64_t gpa, uint64_t v) {
    Must(mmu->WriteGpa(gpa, &v, 8).ok(), "write gpte");
  };
  const uint64_t flags = kGptePresent | kGpteWrite | kGpteAccessed;
  for (uint64_t p = 0; p < npages; ++p) {
    const uint64_t gva = p << 12;
    uint64_t table = cr3;
    for (int l = 4; l > 1; --l) {
      const uint64_t at = table + GpteIndex(4, gva, l) * 8;
      uint64_t e = rd(at);
      if (!(e & kGptePresent)) wr(at, e = alloc() | flags);
      table = e & 0x000FFFFFFFFFF000ull;
    }
    wr(table + GpteIndex(4, gva, 1) * 8, gva | flags | kGpteDirty);
  }
  return cr3;
}

void FastPathWrites(bool shadow, int threads) {
  Memslot s = MapSlot(0, 0, 64 << 20);
  auto mmu = *ShadowMmu::Create({s});
  const uint64_t cr3 = shadow ? BuildIdentityMap(mmu.get(), 64, 16 << 20) : 0;
  const uint64_t n = g_quick ? 20000000 : 200000000;
  std::atomic<int64_t> total_ns{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      SoftVcpu v(mmu.get());
      if (shadow) Must(v.SetPaging(PagingMode::kLongMode, cr3).ok(), "cr3");
      const uint64_t base = uint64_t(t) * 4096;  // one hot page per thread
      uint64_t val = 1;
      Must(v.Write(base, &val, 8).ok(), "warm");
      const int64_t t0 = NowNs();
      for (uint64_t i = 0; i < n; ++i) {
        val = i;
        v.Write(base + ((i & 511) << 3), &val, 8);
      }
      total_ns += NowNs() - t0;
    });
  }
  for (auto& t : ts) t.join();
  const double per_thread_ns = double(total_ns) / threads / n;
  std::printf(
      "{\"bench\":\"fast_path_write\",\"mode\":\"%s\",\"threads\":%d,"
      "\"writes_per_thread\":%llu,\"ns_per_write\":%.2f,"
      "\"mwrites_per_s_per_thread\":%.1f}\n",
      shadow ? "shadow_long" : "direct", threads, (unsigned long long)n,
      per_thread_ns, 1e3 / per_thread_ns);
  munmap(s.hva, s.size);
}

void FaultPath(bool shadow) {
  const uint64_t pages = g_quick ? 16384 : 65536;
  Memslot s = MapSlot(0, 0, 1 * kGiB, /*populate=*/true);
  auto mmu = *ShadowMmu::Create({s});
  const uint64_t cr3 =
      shadow ? BuildIdentityMap(mmu.get(), pages, 512 << 20) : 0;
  SoftVcpu v(mmu.get());
  if (shadow) Must(v.SetPaging(PagingMode::kLongMode, cr3).ok(), "cr3");
  uint64_t x;
  const int64_t t0 = NowNs();
  for (uint64_t p = 0; p < pages; ++p) v.Read(p << 12, &x, 8);
  const int64_t dt = NowNs() - t0;
  const MmuMemory m = mmu->memory();
  std::printf(
      "{\"bench\":\"fault_path\",\"mode\":\"%s\",\"faults\":%llu,"
      "\"ns_per_fault\":%.0f,\"shadow_pages\":%llu,"
      "\"shadow_page_bytes_per_4k\":%.1f,\"rmap_desc_bytes_per_4k\":%.2f,"
      "\"rmap_head_bytes_per_slot_page\":%d}\n",
      shadow ? "shadow_long" : "direct", (unsigned long long)v.faults(),
      double(dt) / pages,
      (unsigned long long)(m.direct_pages + m.indirect_pages),
      double(m.shadow_page_bytes) / pages,
      double(m.pte_list_desc_bytes) / pages, int(sizeof(void*)));
  munmap(s.hva, s.size);
}

// Slot 0: 2 GiB, every page mapped (dense); slot 1: 16 GiB sparse
// (MAP_NORESERVE), every 4096th page mapped. Enabling logging on slot 1
// with the slot_bitmap filter visits only the shadow pages mapping slot 1.
// One sample per setting (re-arming W would need a refault of everything).
void EnableLogging(bool filter) {
  const uint64_t s0_size = g_quick ? kGiB / 2 : 2 * kGiB;
  Memslot s0 = MapSlot(0, 0, s0_size, /*populate=*/true);
  Memslot s1 = MapSlot(1, 4 * kGiB, 16 * kGiB);
  MmuOptions o;
  o.slot_bitmap_filter = filter;
  auto mmu = *ShadowMmu::Create({s0, s1}, o);
  SoftVcpu v(mmu.get());
  uint64_t x;
  const uint64_t s1_stride = 4096;
  for (uint64_t p = 0; p < s0.npages(); ++p) v.Read(p << 12, &x, 8);
  for (uint64_t p = 0; p < s1.npages(); p += s1_stride) {
    v.Read(s1.gpa + (p << 12), &x, 8);
  }
  const size_t sps = mmu->num_shadow_pages();
  int64_t t0 = NowNs();
  Must(mmu->EnableDirtyLogging(1).ok(), "enable");
  const int64_t enable_ns = NowNs() - t0;
  // The same protection by walking the slot's gfn range with TdpIter.
  t0 = NowNs();
  const uint64_t wp = mmu->TdpWriteProtectGfnRange(
      s1.base_gfn(), s1.base_gfn() + s1.npages());
  const int64_t tdp_ns = NowNs() - t0;
  std::printf(
      "{\"bench\":\"enable_logging\",\"slot_gib\":16,"
      "\"slot_mapped_pages\":%llu,\"other_slot_mapped_pages\":%llu,"
      "\"shadow_pages\":%zu,\"slot_bitmap_filter\":%s,\"enable_ns\":%lld,"
      "\"tdp_iter_wrprot_ns\":%lld,\"tdp_iter_wrprot_sptes\":%llu}\n",
      (unsigned long long)(s1.npages() / s1_stride),
      (unsigned long long)s0.npages(), sps, filter ? "true" : "false",
      (long long)enable_ns, (long long)tdp_ns, (unsigned long long)wp);
  if (filter) {
    // Collect on the dense slot: dirty 16K pages, harvest + re-protect.
    Must(mmu->EnableDirtyLogging(0).ok(), "enable");
    const uint64_t dirty = 16384;
    const int64_t tw = NowNs();
    for (uint64_t i = 0; i < dirty; ++i) v.Write((i * 7) << 12, &i, 8);
    const int64_t write_fault_ns = NowNs() - tw;
    DirtyBitmap bm;
    const int64_t t2 = NowNs();
    const uint64_t n = *mmu->GetDirtyLog(0, &bm);
    const int64_t collect_ns = NowNs() - t2;
    const int64_t t3 = NowNs();
    const uint64_t n2 = *mmu->GetDirtyLog(0, &bm);
    const int64_t empty_ns = NowNs() - t3;
    std::printf(
        "{\"bench\":\"collect\",\"slot_gib\":%llu,\"dirty_pages\":%llu,"
        "\"collect_ns\":%lld,\"ns_per_dirty_page\":%.1f,"
        "\"empty_collect_ns\":%lld,\"empty_pages\":%llu,"
        "\"dirty_log_write_fault_ns\":%.0f}\n",
        (unsigned long long)(s0_size / kGiB), (unsigned long long)n,
        (long long)collect_ns, double(collect_ns) / std::max<uint64_t>(n, 1),
        (long long)empty_ns, (unsigned long long)n2,
        double(write_fault_ns) / dirty);
  }
  munmap(s0.hva, s0.size);
  munmap(s1.hva, s1.size);
}

// Demand paging in a shadowed guest: the guest writes a new pte (trapped),
// then touches the page. Updating the spte from the gpte saves the refault.
void FaultsSaved() {
  const uint64_t pages = 4096;
  uint64_t faults[2];
  int64_t ns[2];
  for (int zap = 0; zap < 2; ++zap) {
    Memslot s = MapSlot(0, 0, 256 << 20, /*populate=*/true);
    MmuOptions o;
    o.zap_on_gpte_write = zap != 0;
    auto mmu = *ShadowMmu::Create({s}, o);
    // Tables exist for the whole range, all ptes not present except one per
    // PT, so every PT is shadowed before the guest starts mapping.
    const uint64_t cr3 = BuildIdentityMap(mmu.get(), pages, 128 << 20);
    SoftVcpu v(mmu.get());
    Must(v.SetPaging(PagingMode::kLongMode, cr3).ok(), "cr3");
    std::vector<uint64_t> pte_gpa(pages);
    for (uint64_t p = 0; p < pages; ++p) {
      // Walk for the pte address, then clear it (host-side, pre-shadow).
      uint64_t table = cr3;
      for (int l = 4; l > 1; --l) {
        uint64_t e;
        Must(mmu->ReadGpa(table + GpteIndex(4, p << 12, l) * 8, &e, 8).ok(),
             "walk");
        table = e & 0x000FFFFFFFFFF000ull;
      }
      pte_gpa[p] = table + GpteIndex(4, p << 12, 1) * 8;
    }
    uint64_t x;
    for (uint64_t p = 0; p < pages; p += 512) v.Read(p << 12, &x, 8);
    for (uint64_t p = 0; p < pages; ++p) {
      if (p % 512 == 0) continue;
      const uint64_t zero = 0;
      Must(mmu->WriteGpa(pte_gpa[p], &zero, 8).ok(), "unmap");
    }
    const uint64_t f0 = v.faults();
    const int64_t t0 = NowNs();
    for (uint64_t p = 0; p < pages; ++p) {
      if (p % 512 == 0) continue;
      const uint64_t pte = (p << 12) | kGptePresent | kGpteWrite |
                           kGpteAccessed | kGpteDirty;
      // The guest's pte write (trapped and emulated: the PT is shadowed).
      Must(mmu->WriteGpa(pte_gpa[p], &pte, 8).ok(), "pte write");
      v.Write(p << 12, &p, 8);       // then the access
    }
    ns[zap] = NowNs() - t0;
    faults[zap] = v.faults() - f0;
    munmap(s.hva, s.size);
  }
  std::printf(
      "{\"bench\":\"gpte_write\",\"new_mappings\":%llu,"
      "\"faults_update\":%llu,\"faults_zap\":%llu,\"faults_saved\":%llu,"
      "\"ns_update\":%lld,\"ns_zap\":%lld}\n",
      (unsigned long long)(pages - pages / 512), (unsigned long long)faults[0],
      (unsigned long long)faults[1],
      (unsigned long long)(faults[1] - faults[0]), (long long)ns[0],
      (long long)ns[1]);
}

void PageSizes() {
  std::printf(
      "{\"bench\":\"shadow_page_bytes\",\"direct\":%zu,\"indirect\":%zu,"
      "\"pte_list_desc\":%zu}\n",
      ShadowPage::BytesFor(true), ShadowPage::BytesFor(false),
      sizeof(PteListDesc));
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) g_quick = true;
  }
  PageSizes();
  FastPathWrites(false, 1);
  FastPathWrites(true, 1);
  FastPathWrites(true, 2);
  FaultPath(false);
  FaultPath(true);
  EnableLogging(true);
  EnableLogging(false);
  FaultsSaved();
  return 0;
}
