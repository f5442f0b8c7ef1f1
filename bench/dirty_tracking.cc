// Dirty-tracking costs per mode, through the one DirtyTracker interface:
// how long Collect and re-protection take, and how fast the guest can dirty
// write-protected pages while logging is on (the write-protect fault cost;
// KVM-FACTS.md: ~5.6 µs per fault on kvm_pvm, ⇒ ≤ ~176K pages/s per vCPU).
//
//   bazel run -c opt //bench:dirty_tracking [-- --quick]   # --quick: 1 GiB
//
// One JSON object per line. Guest sizes 1, 4, 16 GiB × 0%, 1%, 10%, 100% of
// pages dirty, per mode the machine supports:
//
//  softmmu (driver "direct")  A ShadowMmu over the guest RAM and a
//      SoftDirtyTracker; the writer is one SoftVcpu in direct mode on this
//      thread, writing 8 bytes to each chosen page (ascending gfn). Both
//      protect flavours: "classic" (Collect = get + re-protect, like
//      KVM_GET_DIRTY_LOG; its re-protect is inside collect_ns) and "manual"
//      (Collect leaves the pages writable, ReprotectRuns re-arms them, like
//      KVM_CLEAR_DIRTY_LOG; reprotect_ns is that call).
//  bitmap / clear-log / ring (driver "vm")  need /dev/kvm: a Vm on the KVM
//      backend whose guest runs the SEQUENTIAL workload over a working set
//      of density × RAM (unthrottled, one vCPU), so one pass dirties each
//      chosen page exactly once. Without /dev/kvm each prints one line with
//      "skipped":"<reason>". The same driver runs on the soft backend at
//      1 GiB ("mode":"softmmu","driver":"vm"), so its code path is
//      exercised on machines without KVM.
//
// Guest RAM for the direct driver is a memfd mapped MAP_SHARED|MAP_NORESERVE
// and only the chosen pages are ever touched. Guests over 1 GiB map the same
// 1 GiB memfd range repeatedly (gfn g and g + 256Ki share a host page): the
// MMU, its rmaps and bitmaps are per gfn and see a real 4/16 GiB guest, but
// 100% of 16 GiB costs 1 GiB of host RAM instead of 16 on a shared machine.
//
// Fields: guest_gib, pages (guest), density, dirty_pages (per round),
// start_ns (tracker Start: enable logging), collect_ns / reprotect_ns
// (median over rounds, min alongside), collected (pages Collect reported,
// must equal dirty_pages), wp_fault_writes_per_s (writes to write-protected
// pages, i.e. faults, per second of one writer), wp_fault_ns (per write),
// rewrite_ns (per write to the same pages once writable again; in the
// software MMU both go through the slow path, because a page not written for
// a while has left the 64-entry software TLB, so the difference is the
// dirty-log fault's own cost), wp_faults_per_round (MmuStats::fast_fixes:
// proof that each timed write took the dirty-log fault). The VM driver
// reports the guest's whole write rate with logging on and off instead;
// their difference (wp_fault_extra_ns) is noisy on the soft backend, where
// the workload's own overhead dominates.
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/guest/abi.h"
#include "agent/vmm/kvm/kvm_backend.h"
#include "agent/vmm/soft/soft_backend.h"
#include "agent/vmm/soft/softmmu_port.h"
#include "agent/vmm/vm.h"
#include "mmu/dirty_set.h"
#include "mmu/dirty_tracker.h"
#include "mmu/memslot.h"
#include "mmu/softmmu/shadow_mmu.h"
#include "mmu/softmmu/soft_dirty_tracker.h"
#include "mmu/softmmu/soft_vcpu.h"
#include "proto/vm.pb.h"

namespace {

using ferry::mmu::CollectStats;
using ferry::mmu::DirtySet;
using ferry::mmu::DirtyTracker;
using ferry::mmu::DirtyTrackingMode;
using ferry::mmu::Memslot;
using ferry::mmu::PageRun;
using ferry::mmu::softmmu::ShadowMmu;
using ferry::mmu::softmmu::SoftDirtyTracker;
using ferry::mmu::softmmu::SoftVcpu;

constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kSlotBytes = 4 * kGiB;   // as mmu::DefaultLayout
constexpr uint64_t kAliasBytes = 1 * kGiB;  // host backing per direct guest
constexpr uint64_t kSeed = 0x5eed0d1e7;

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

[[noreturn]] void Die(absl::string_view what, const absl::Status& s) {
  std::fprintf(stderr, "dirty_tracking: %s: %s\n", std::string(what).c_str(),
               s.ToString().c_str());
  std::exit(1);
}
void Check(const absl::Status& s, absl::string_view what) {
  if (!s.ok()) Die(what, s);
}

std::string JsonEscape(absl::string_view in) {
  std::string out;
  for (char c : in) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += c;
    }
  }
  return out;
}

template <typename T>
T Median(std::vector<T> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? T{} : v[v.size() / 2];
}
template <typename T>
T Min(const std::vector<T>& v) {
  return v.empty() ? T{} : *std::min_element(v.begin(), v.end());
}

// ---------------------------------------------------------------------------
// Direct driver: ShadowMmu + SoftVcpu on this thread.

// Guest RAM of `bytes` at one host range: a PROT_NONE reservation with the
// same kAliasBytes of a memfd mapped at every kAliasBytes step.
class AliasedRam {
 public:
  explicit AliasedRam(uint64_t bytes) : bytes_(bytes) {
    const uint64_t backing = std::min(bytes, kAliasBytes);
    fd_ = memfd_create("ferry-bench-ram", MFD_CLOEXEC);
    if (fd_ < 0 || ftruncate(fd_, static_cast<off_t>(backing)) != 0) {
      Die("memfd", absl::ErrnoToStatus(errno, "memfd_create/ftruncate"));
    }
    void* r = mmap(nullptr, bytes, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r == MAP_FAILED) Die("mmap", absl::ErrnoToStatus(errno, "reserve"));
    base_ = static_cast<uint8_t*>(r);
    for (uint64_t off = 0; off < bytes; off += backing) {
      // SAFETY: MAP_FIXED over our own reservation; nothing else lives there.
      void* p = mmap(base_ + off, std::min(backing, bytes - off),
                     PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_NORESERVE,
                     fd_, 0);
      if (p == MAP_FAILED) Die("mmap", absl::ErrnoToStatus(errno, "alias"));
    }
  }
  ~AliasedRam() {
    munmap(base_, bytes_);
    close(fd_);
  }
  AliasedRam(const AliasedRam&) = delete;
  AliasedRam& operator=(const AliasedRam&) = delete;

  std::vector<Memslot> Slots() const {
    std::vector<Memslot> slots;
    for (uint64_t gpa = 0, id = 0; gpa < bytes_; gpa += kSlotBytes, ++id) {
      Memslot s;
      s.slot = static_cast<uint32_t>(id);
      s.gpa = gpa;
      s.size = std::min(kSlotBytes, bytes_ - gpa);
      s.hva = base_ + gpa;
      s.memfd_offset = gpa % kAliasBytes;
      slots.push_back(s);
    }
    return slots;
  }

 private:
  uint64_t bytes_;
  int fd_ = -1;
  uint8_t* base_ = nullptr;
};

// Exactly round(density * n) distinct gfns in [0, n), ascending (Knuth's
// selection sampling, Algorithm S), from a fixed seed.
std::vector<uint64_t> ChoosePages(uint64_t n, double density, uint64_t seed) {
  uint64_t want = static_cast<uint64_t>(density * static_cast<double>(n) + 0.5);
  std::vector<uint64_t> out;
  out.reserve(want);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (uint64_t i = 0; i < n && want > 0; ++i) {
    if (static_cast<double>(n - i) * u(rng) < static_cast<double>(want)) {
      out.push_back(i);
      --want;
    }
  }
  return out;
}

// One write of 8 bytes to each page; returns wall ns.
int64_t WritePages(SoftVcpu& v, const std::vector<uint64_t>& gfns,
                   uint64_t value) {
  const int64_t t0 = NowNs();
  for (uint64_t gfn : gfns) {
    if (!v.Write(gfn * kPage, &value, sizeof(value)).ok()) {
      Die("write", absl::InternalError(absl::StrCat("gfn ", gfn)));
    }
  }
  return NowNs() - t0;
}

void RunDirectCase(uint64_t gib, double density, bool manual, int rounds) {
  AliasedRam ram(gib * kGiB);
  const std::vector<Memslot> slots = ram.Slots();
  const uint64_t npages = gib * kGiB / kPage;
  const uint64_t seed = kSeed ^ (gib << 8) ^ static_cast<uint64_t>(density * 1000);
  const std::vector<uint64_t> gfns = ChoosePages(npages, density, seed);

  absl::StatusOr<std::unique_ptr<ShadowMmu>> mmu = ShadowMmu::Create(slots);
  Check(mmu.status(), "ShadowMmu::Create");
  SoftVcpu vcpu(mmu->get());
  // Fault the chosen pages in (host page + direct spte) before logging, so
  // the timed writes below pay exactly the write-protect fault.
  WritePages(vcpu, gfns, 1);

  SoftDirtyTracker tracker(mmu->get(), manual);
  const int64_t s0 = NowNs();
  Check(tracker.Start(slots), "Start");
  const int64_t start_ns = NowNs() - s0;

  DirtySet set = DirtySet::ForSlots(slots);
  std::vector<int64_t> wp_ns, rewrite_ns, collect_ns, reprotect_ns;
  uint64_t collected = 0;
  std::vector<PageRun> runs;
  const uint64_t fixes0 = (*mmu)->stats().fast_fixes;
  for (int r = 0; r < rounds; ++r) {
    wp_ns.push_back(WritePages(vcpu, gfns, 2 + r));
    rewrite_ns.push_back(WritePages(vcpu, gfns, 100 + r));
    set.ClearAll();
    const int64_t c0 = NowNs();
    absl::StatusOr<CollectStats> stats = tracker.Collect(&set);
    collect_ns.push_back(NowNs() - c0);
    Check(stats.status(), "Collect");
    collected = stats->pages;
    if (collected != gfns.size()) {
      Die("Collect", absl::InternalError(absl::StrCat(
                         "reported ", collected, " pages, wrote ", gfns.size())));
    }
    if (manual) {
      runs.clear();
      set.ForEachRun([&](const PageRun& run) { runs.push_back(run); });
      const int64_t p0 = NowNs();
      Check(tracker.ReprotectRuns(runs), "ReprotectRuns");
      reprotect_ns.push_back(NowNs() - p0);
    }
  }
  // Proof the timed writes faulted: one dirty-log fault per page per round.
  const uint64_t faults = (*mmu)->stats().fast_fixes - fixes0;
  Check(tracker.Stop(), "Stop");

  const double n = static_cast<double>(std::max<size_t>(gfns.size(), 1));
  const double wp_per_write = gfns.empty() ? 0 : Median(wp_ns) / n;
  std::printf(
      "{\"bench\":\"dirty_tracking\",\"mode\":\"softmmu\",\"driver\":\"direct\","
      "\"protect\":\"%s\",\"guest_gib\":%llu,\"pages\":%llu,\"density\":%g,"
      "\"dirty_pages\":%zu,\"runs\":%zu,\"rounds\":%d,\"seed\":%llu,"
      "\"host_backing_bytes\":%llu,\"start_ns\":%lld,"
      "\"collect_ns\":%lld,\"collect_min_ns\":%lld,"
      "\"reprotect_ns\":%lld,\"reprotect_min_ns\":%lld,"
      "\"reprotect_in_collect\":%s,\"collected\":%llu,"
      "\"wp_fault_writes_per_s\":%.0f,\"wp_fault_ns\":%.1f,"
      "\"rewrite_ns\":%.1f,\"wp_faults_per_round\":%llu}\n",
      manual ? "manual" : "classic", (unsigned long long)gib,
      (unsigned long long)npages, density, gfns.size(),
      manual ? runs.size() : size_t{0}, rounds, (unsigned long long)seed,
      (unsigned long long)std::min(gib * kGiB, kAliasBytes),
      (long long)start_ns, (long long)Median(collect_ns),
      (long long)Min(collect_ns), (long long)Median(reprotect_ns),
      (long long)Min(reprotect_ns), manual ? "false" : "true",
      (unsigned long long)collected,
      gfns.empty() ? 0.0 : 1e9 / wp_per_write, wp_per_write,
      gfns.empty() ? 0.0 : Median(rewrite_ns) / n,
      (unsigned long long)(faults / rounds));
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------
// VM driver: any Backend, the guest workload dirties the pages.

using ferry::vmm::Backend;
using ferry::vmm::Vm;

uint64_t PagesWritten(const Vm& vm) { return vm.Stats().guest.pages_written; }

// Waits until the guest wrote `n` more pages than `from`; false on timeout.
bool WaitWritten(const Vm& vm, uint64_t from, uint64_t n,
                 absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (PagesWritten(vm) - from < n) {
    if (absl::Now() > deadline || vm.phase() == ferry::v1::VM_PHASE_FAILED) {
      return false;
    }
    absl::SleepFor(absl::Microseconds(500));
  }
  return true;
}

absl::Status RunVmCase(Backend& backend, absl::string_view mode_name,
                       DirtyTrackingMode mode, uint64_t gib, double density) {
  const uint64_t mem = gib * kGiB;
  const uint64_t npages = mem / kPage;
  // The working set starts at 16 MiB (abi.h); at 100% it is everything from
  // there, less an out-of-line stamp table when it exceeds 4 GiB.
  const uint64_t max_ws = [&] {
    uint64_t ws = (mem - (16u << 20)) / kPage;
    while (ferry_guest_min_mem_size(ws) > mem) --ws;
    return ws;
  }();
  const uint64_t ws_pages = std::min<uint64_t>(
      max_ws, static_cast<uint64_t>(density * static_cast<double>(npages) + 0.5));

  ferry::v1::VmSpec spec;
  spec.set_name("bench-dirty-tracking");
  spec.set_memory_bytes(mem);
  spec.set_vcpu_count(1);
  auto* wl = spec.mutable_workload();
  wl->set_kind(ws_pages == 0 ? ferry::v1::WORKLOAD_KIND_IDLE
                             : ferry::v1::WORKLOAD_KIND_SEQUENTIAL);
  wl->set_working_set_bytes(std::max<uint64_t>(ws_pages, 1) * kPage);
  wl->set_dirty_rate_bytes_per_s(0);  // unthrottled
  wl->set_seed(kSeed);
  absl::StatusOr<std::unique_ptr<Vm>> vm = Vm::Create(spec, backend);
  if (!vm.ok()) return vm.status();
  const absl::Duration timeout = absl::Seconds(60) * static_cast<double>(gib);

  // Pass 1 populates (first touch); pass 2 is the logging-off baseline.
  double off_rate = 0;
  if (ws_pages != 0) {
    if (!WaitWritten(**vm, 0, ws_pages, timeout)) {
      return absl::DeadlineExceededError("populate pass");
    }
    const uint64_t w0 = PagesWritten(**vm);
    const int64_t t0 = NowNs();
    if (!WaitWritten(**vm, w0, ws_pages, timeout)) {
      return absl::DeadlineExceededError("baseline pass");
    }
    off_rate = (PagesWritten(**vm) - w0) * 1e9 / (NowNs() - t0);
  }

  absl::StatusOr<std::unique_ptr<DirtyTracker>> tracker =
      (*vm)->CreateDirtyTracker(mode);
  if (!tracker.ok()) return tracker.status();
  const std::vector<Memslot> slots((*vm)->memory().slots().begin(),
                                   (*vm)->memory().slots().end());
  const int64_t s0 = NowNs();
  absl::Status st = (*tracker)->Start(slots);
  const int64_t start_ns = NowNs() - s0;
  if (!st.ok()) return st;

  // One logging-on pass: every working-set page takes one write fault.
  double on_rate = 0;
  const uint64_t w0 = PagesWritten(**vm);
  const int64_t t0 = NowNs();
  if (ws_pages != 0) {
    if (!WaitWritten(**vm, w0, ws_pages, timeout)) {
      return absl::DeadlineExceededError("logging pass");
    }
    on_rate = (PagesWritten(**vm) - w0) * 1e9 / (NowNs() - t0);
  } else {
    absl::SleepFor(absl::Milliseconds(100));
  }
  if (absl::Status p = (*vm)->Pause(); !p.ok()) return p;

  DirtySet set = DirtySet::ForSlots(slots);
  const int64_t c0 = NowNs();
  absl::StatusOr<CollectStats> stats = (*tracker)->Collect(&set);
  const int64_t collect_ns = NowNs() - c0;
  if (!stats.ok()) return stats.status();
  int64_t reprotect_ns = 0;
  size_t nruns = 0;
  const bool needs_reprotect = (*tracker)->needs_reprotect();
  if (needs_reprotect) {
    std::vector<PageRun> runs;
    set.ForEachRun([&](const PageRun& run) { runs.push_back(run); });
    nruns = runs.size();
    const int64_t p0 = NowNs();
    if (absl::Status r = (*tracker)->ReprotectRuns(runs); !r.ok()) return r;
    reprotect_ns = NowNs() - p0;
  }
  if (absl::Status s = (*tracker)->Stop(); !s.ok()) return s;
  tracker->reset();  // before the Vm (vm.h)

  // Fault cost: the extra time per write with logging on.
  const double fault_ns =
      on_rate > 0 && off_rate > 0 ? 1e9 / on_rate - 1e9 / off_rate : 0;
  std::printf(
      "{\"bench\":\"dirty_tracking\",\"mode\":\"%s\",\"driver\":\"vm\","
      "\"backend\":\"%s\",\"guest_gib\":%llu,\"pages\":%llu,\"density\":%g,"
      "\"ws_pages\":%llu,\"collected\":%llu,\"runs\":%zu,\"seed\":%llu,"
      "\"start_ns\":%lld,\"collect_ns\":%lld,\"reprotect_ns\":%lld,"
      "\"reprotect_in_collect\":%s,\"wp_fault_writes_per_s\":%.0f,"
      "\"logging_off_writes_per_s\":%.0f,\"wp_fault_extra_ns\":%.1f}\n",
      std::string(mode_name).c_str(), std::string(backend.name()).c_str(),
      (unsigned long long)gib, (unsigned long long)npages, density,
      (unsigned long long)ws_pages, (unsigned long long)stats->pages, nruns,
      (unsigned long long)(*vm)->spec().workload().seed(), (long long)start_ns,
      (long long)collect_ns, (long long)reprotect_ns,
      needs_reprotect ? "false" : "true",
      on_rate, off_rate, fault_ns);
  std::fflush(stdout);
  return absl::OkStatus();
}

void PrintSkipped(absl::string_view mode, const absl::Status& why) {
  std::printf(
      "{\"bench\":\"dirty_tracking\",\"mode\":\"%s\",\"skipped\":\"%s\"}\n",
      std::string(mode).c_str(), JsonEscape(why.ToString()).c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
      return 2;
    }
  }
  const std::vector<uint64_t> sizes =
      quick ? std::vector<uint64_t>{1} : std::vector<uint64_t>{1, 4, 16};
  const double densities[] = {0.0, 0.01, 0.10, 1.0};

  for (uint64_t gib : sizes) {
    for (double d : densities) {
      for (bool manual : {false, true}) RunDirectCase(gib, d, manual, 3);
    }
  }

  // The VM driver on the soft backend (1 GiB): same code as the KVM modes.
  ferry::vmm::SoftBackend soft(ferry::vmm::SoftMmuPortFactory());
  for (double d : densities) {
    absl::Status s =
        RunVmCase(soft, "softmmu", DirtyTrackingMode::kSoftMmu, 1, d);
    if (!s.ok()) PrintSkipped("softmmu", s);
  }

  struct KvmMode {
    const char* name;
    DirtyTrackingMode mode;
  };
  const KvmMode kvm_modes[] = {{"bitmap", DirtyTrackingMode::kBitmap},
                               {"clear-log", DirtyTrackingMode::kClearLog},
                               {"ring", DirtyTrackingMode::kRing}};
  ferry::vmm::KvmBackend kvm;
  const absl::Status probe = kvm.Probe();
  for (const KvmMode& m : kvm_modes) {
    if (!probe.ok()) {
      PrintSkipped(m.name, probe);
      continue;
    }
    // A mode this kernel/VM lacks (e.g. no dirty ring) says why once.
    absl::Status s = absl::OkStatus();
    for (uint64_t gib : sizes) {
      for (double d : densities) {
        if (s.ok()) s = RunVmCase(kvm, m.name, m.mode, gib, d);
      }
    }
    if (!s.ok()) PrintSkipped(m.name, s);
  }
  return 0;
}
