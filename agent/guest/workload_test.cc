// Host tests of the shared workload core (workload.c built with
// hooks_host.h). Guest memory is a calloc'd buffer laid out per abi.h; time is
// a fake clock that jumps to each deadline, so pacing tests are exact and
// independent of machine load.
#include "agent/guest/workload.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"

namespace {

constexpr uint64_t kPage = FERRY_GUEST_PAGE_SIZE;
constexpr uint64_t kTscHz = 1000000000;  // 1 tick = 1 ns keeps numbers legible

// A guest-physical address space from gpa 0, zero-filled like a fresh memfd.
class GuestMemory {
 public:
  explicit GuestMemory(uint64_t ws_pages)
      : size_(FERRY_GUEST_WS_GPA + ws_pages * kPage),
        mem_(static_cast<uint8_t*>(calloc(size_, 1)), &free) {}

  uint8_t* base() { return mem_.get(); }
  uint64_t size() const { return size_; }
  // SAFETY: callers pass gpas from the abi.h layout, all < size_; the buffer
  // comes from calloc, so it is 16-byte aligned and u64 accesses are aligned.
  uint64_t Load(uint64_t gpa) {
    uint64_t v;
    memcpy(&v, mem_.get() + gpa, 8);
    return v;
  }
  void Store(uint64_t gpa, uint64_t v) { memcpy(mem_.get() + gpa, &v, 8); }
  ferry_guest_params* params() {
    return reinterpret_cast<ferry_guest_params*>(mem_.get() + FERRY_GUEST_PARAMS_GPA);
  }
  ferry_guest_status* status(uint64_t vcpu) {
    return reinterpret_cast<ferry_guest_status*>(mem_.get() +
                                                 FERRY_GUEST_STATUS_GPA_OF(vcpu));
  }
  uint64_t PageGpa(uint64_t page) { return params()->ws_gpa + page * kPage; }
  uint64_t Table(uint64_t page) { return Load(params()->stamp_table_gpa + 8 * page); }
  void CopyFrom(GuestMemory& other) { memcpy(base(), other.base(), size_); }

 private:
  uint64_t size_;
  std::unique_ptr<uint8_t, decltype(&free)> mem_;
};

// The ABI's defaults (10% hot set taking 90% of writes), a 1 GHz clock and a
// fixed seed; tests override what they exercise.
void FillParams(GuestMemory& m, uint64_t kind, uint64_t ws_pages, uint64_t nr_vcpus) {
  ASSERT_EQ(m.size(), ferry_guest_min_mem_size(ws_pages));
  ferry_guest_params* p = m.params();
  ferry_guest_params_init(p, m.size(), nr_vcpus, kind, ws_pages);
  p->tsc_hz = kTscHz;
  p->seed = 42;
}

// One guest driven through the ops path: fake clock, recorded page writes.
class FakeGuest {
 public:
  FakeGuest(uint64_t kind, uint64_t ws_pages, uint64_t nr_vcpus) : mem(ws_pages) {
    FillParams(mem, kind, ws_pages, nr_vcpus);
    ops_.load64 = [](void* o, uint64_t gpa) { return Self(o)->mem.Load(gpa); };
    ops_.store64 = [](void* o, uint64_t gpa, uint64_t v) { Self(o)->OnStore(gpa, v); };
    ops_.now = [](void* o) { return Self(o)->now; };
    ops_.wait_until = [](void* o, uint64_t d) {
      if (Self(o)->now < d) Self(o)->now = d;
    };
    ops_.event = [](void* o, uint64_t vcpu, uint64_t code, uint64_t arg) {
      Self(o)->events.emplace_back(vcpu, code, arg);
    };
    ctx_ = {nullptr, 0, &ops_, this};
  }

  wl_ctx* ctx() { return &ctx_; }
  uint64_t Init(uint64_t vcpu) { return wl_vcpu_init(&ctx_, vcpu); }
  void InitAll() {
    for (uint64_t v = 0; v < mem.params()->nr_vcpus; v++) ASSERT_EQ(Init(v), 0u);
  }
  void Steps(uint64_t vcpu, int n) {
    for (int i = 0; i < n; i++) wl_vcpu_step(&ctx_, vcpu);
  }
  // Runs one vCPU for `ticks` of its own timeline starting at t=start.
  uint64_t PagesIn(uint64_t vcpu, uint64_t start, uint64_t ticks) {
    now = start;
    uint64_t before = mem.status(vcpu)->pages_written;
    while (now < start + ticks) wl_vcpu_step(&ctx_, vcpu);
    return mem.status(vcpu)->pages_written - before;
  }
  wl_check_result CheckAll() {
    wl_check_result r;
    EXPECT_EQ(wl_check_all(&ctx_, &r), 0u);
    return r;
  }

  GuestMemory mem;
  uint64_t now = 0;
  uint64_t store_cost = 0;              // ticks each store takes
  std::vector<uint64_t> head_writes;    // ws page index of each head stamp
  std::vector<std::tuple<uint64_t, uint64_t, uint64_t>> events;
  std::function<void(uint64_t gpa)> before_store;  // test hook

 private:
  static FakeGuest* Self(void* o) { return static_cast<FakeGuest*>(o); }
  void OnStore(uint64_t gpa, uint64_t v) {
    if (before_store) before_store(gpa);
    now += store_cost;
    uint64_t ws = mem.params()->ws_gpa, end = ws + mem.params()->ws_pages * kPage;
    if (gpa >= ws && gpa < end && (gpa - ws) % kPage == 0)
      head_writes.push_back((gpa - ws) / kPage);
    mem.Store(gpa, v);
  }
  wl_host_ops ops_{};
  wl_ctx ctx_{};
};

bool PageIsZero(GuestMemory& m, uint64_t gpa, uint64_t len) {
  for (uint64_t i = 0; i < len; i++)
    if (m.base()[gpa + i] != 0) return false;
  return true;
}

// ---- init ------------------------------------------------------------------

TEST(WorkloadInit, PublishesStatusSlicesAndStartedEvent) {
  FakeGuest g(FERRY_WL_UNIFORM, 1000, 3);
  g.InitAll();
  uint64_t expect_first = 0;
  for (uint64_t v = 0; v < 3; v++) {
    ferry_guest_status* s = g.mem.status(v);
    EXPECT_EQ(s->magic, FERRY_GUEST_STATUS_MAGIC);
    EXPECT_EQ(s->state, FERRY_VCPU_STATE_RUNNING);
    EXPECT_EQ(s->vcpu_index, v);
    EXPECT_EQ(s->kind, FERRY_WL_UNIFORM);
    EXPECT_EQ(s->first_bad_page, FERRY_GUEST_NO_PAGE);
    EXPECT_EQ(s->slice_first_page, expect_first) << "slices must tile the working set";
    expect_first += s->slice_pages;
    EXPECT_EQ(g.events[v], std::make_tuple(v, uint64_t{FERRY_GUEST_EVENT_STARTED}, v));
  }
  EXPECT_EQ(expect_first, 1000u);
}

struct BadParamsCase {
  const char* name;
  std::function<void(ferry_guest_params*)> mutate;
  uint64_t fatal;
};

TEST(WorkloadInit, RejectsBadParamsWithFatalCodeAndEvent) {
  const std::vector<BadParamsCase> cases = {
      {"magic", [](ferry_guest_params* p) { p->magic = 0; }, FERRY_GUEST_FATAL_BAD_MAGIC},
      {"version", [](ferry_guest_params* p) { p->version = 99; }, FERRY_GUEST_FATAL_BAD_VERSION},
      {"vcpu", [](ferry_guest_params* p) { p->nr_vcpus = 0; }, FERRY_GUEST_FATAL_BAD_VCPU},
      {"kind", [](ferry_guest_params* p) { p->kind = 0; }, FERRY_GUEST_FATAL_BAD_KIND},
      {"mixed-kind",
       [](ferry_guest_params* p) {
         p->kind = FERRY_WL_MIXED;
         p->vcpu_kind[0] = FERRY_WL_MIXED;
       },
       FERRY_GUEST_FATAL_BAD_KIND},
      {"ws-past-mem", [](ferry_guest_params* p) { p->ws_pages += 1; }, FERRY_GUEST_FATAL_BAD_LAYOUT},
      {"ws-low", [](ferry_guest_params* p) { p->ws_gpa = 0x100000; }, FERRY_GUEST_FATAL_BAD_LAYOUT},
      {"overlap",
       [](ferry_guest_params* p) { p->stamp_table_gpa = p->ws_gpa; },
       FERRY_GUEST_FATAL_BAD_LAYOUT},
      {"unaligned", [](ferry_guest_params* p) { p->ws_gpa += 8; }, FERRY_GUEST_FATAL_BAD_LAYOUT},
      {"permille",
       [](ferry_guest_params* p) { p->hot_probability_permille = 1001; },
       FERRY_GUEST_FATAL_BAD_PERMILLE},
      {"no-tsc",
       [](ferry_guest_params* p) {
         p->target_dirty_pages_per_sec = 100;
         p->tsc_hz = 0;
       },
       FERRY_GUEST_FATAL_NO_TSC_HZ},
  };
  for (const BadParamsCase& c : cases) {
    SCOPED_TRACE(c.name);
    FakeGuest g(FERRY_WL_UNIFORM, 64, 1);
    c.mutate(g.mem.params());
    EXPECT_EQ(g.Init(0), c.fatal);
    EXPECT_EQ(g.mem.status(0)->magic, FERRY_GUEST_STATUS_MAGIC);
    EXPECT_EQ(g.mem.status(0)->state, FERRY_VCPU_STATE_FATAL);
    EXPECT_EQ(g.mem.status(0)->fatal_code, c.fatal);
    ASSERT_EQ(g.events.size(), 1u);
    EXPECT_EQ(g.events[0], std::make_tuple(uint64_t{0}, uint64_t{FERRY_GUEST_EVENT_FATAL}, c.fatal));
    g.Steps(0, 3);  // a failed vCPU must not run
    EXPECT_EQ(g.mem.status(0)->iterations, 0u);
    EXPECT_TRUE(g.head_writes.empty());
  }
}

// ---- workloads ---------------------------------------------------------------

class EachWritingKind : public ::testing::TestWithParam<uint64_t> {};

TEST_P(EachWritingKind, AdvancesCountersAndStaysConsistent) {
  FakeGuest g(GetParam(), 512, 3);
  g.mem.params()->verify_interval_batches = 2;
  g.InitAll();
  for (uint64_t v = 0; v < 3; v++) g.Steps(v, 10);
  for (uint64_t v = 0; v < 3; v++) {
    ferry_guest_status* s = g.mem.status(v);
    EXPECT_EQ(s->iterations, 10u);
    EXPECT_EQ(s->pages_written, 10u * 64) << "unthrottled batches are 64 pages";
    EXPECT_EQ(s->selfcheck_errors, 0u);
    EXPECT_GT(s->pages_verified, 0u);
    EXPECT_EQ(s->cur_page, FERRY_GUEST_NO_PAGE);
    EXPECT_EQ(s->last_stamp & FERRY_STAMP_MARK, FERRY_STAMP_MARK);
    EXPECT_EQ(ferry_stamp_vcpu(s->last_stamp), v);
    EXPECT_EQ(ferry_stamp_seq(s->last_stamp), 640u);
  }
  wl_check_result r = g.CheckAll();
  EXPECT_EQ(r.mismatches, 0u);
  EXPECT_EQ(r.pages_checked, 512u);
}

INSTANTIATE_TEST_SUITE_P(Kinds, EachWritingKind,
                         ::testing::Values(FERRY_WL_UNIFORM, FERRY_WL_HOTCOLD,
                                           FERRY_WL_SEQUENTIAL, FERRY_WL_MIXED));

TEST(Workload, IdleTouchesNothingButKeepsHeartbeat) {
  FakeGuest g(FERRY_WL_IDLE, 256, 2);
  g.InitAll();
  g.Steps(0, 20);
  EXPECT_EQ(g.mem.status(0)->iterations, 20u);
  EXPECT_EQ(g.mem.status(0)->pages_written, 0u);
  EXPECT_EQ(g.mem.status(0)->slice_pages, 0u);
  EXPECT_EQ(g.now, 20 * kTscHz / 1000) << "idle waits 1 ms per step";
  EXPECT_EQ(g.mem.status(0)->heartbeat_tsc, g.now);
  EXPECT_TRUE(g.head_writes.empty());
  EXPECT_TRUE(PageIsZero(g.mem, FERRY_GUEST_STAMP_TABLE_GPA,
                         g.mem.size() - FERRY_GUEST_STAMP_TABLE_GPA));
}

TEST(Workload, HotColdSendsHotProbabilityToHotFraction) {
  FakeGuest g(FERRY_WL_HOTCOLD, 1000, 1);  // hot set = first 100 pages
  g.InitAll();
  g.Steps(0, 400);
  uint64_t hot = 0, cold_pages_hit = 0;
  std::vector<bool> seen(1000);
  for (uint64_t p : g.head_writes) {
    ASSERT_LT(p, 1000u);
    if (p < 100) hot++;
    if (p >= 100 && !seen[p]) cold_pages_hit++;
    seen[p] = true;
  }
  double share = static_cast<double>(hot) / g.head_writes.size();
  EXPECT_NEAR(share, 0.9, 0.01) << "seed " << g.mem.params()->seed;
  EXPECT_GT(cold_pages_hit, 800u) << "cold writes should spread over the cold set";
}

TEST(Workload, HotColdEdgeFractions) {
  FakeGuest all_hot(FERRY_WL_HOTCOLD, 100, 1);
  all_hot.mem.params()->hot_probability_permille = 1000;
  all_hot.InitAll();
  all_hot.Steps(0, 10);
  for (uint64_t p : all_hot.head_writes) EXPECT_LT(p, 10u);

  FakeGuest no_hot(FERRY_WL_HOTCOLD, 100, 1);
  no_hot.mem.params()->hot_fraction_permille = 0;  // degenerates to uniform
  no_hot.InitAll();
  no_hot.Steps(0, 10);
  EXPECT_EQ(no_hot.mem.status(0)->pages_written, 640u);
}

TEST(Workload, SequentialStreamsThroughItsSliceAndWraps) {
  FakeGuest g(FERRY_WL_SEQUENTIAL, 100, 2);  // vCPU 1 owns [50, 100)
  g.InitAll();
  g.Steps(1, 3);
  ASSERT_EQ(g.head_writes.size(), 3u * 64);
  for (size_t i = 0; i < g.head_writes.size(); i++)
    EXPECT_EQ(g.head_writes[i], 50 + i % 50) << "write " << i;
}

TEST(Workload, MixedSplitsWorkingSetAndRateAmongWriters) {
  FakeGuest g(FERRY_WL_MIXED, 1000, 3);
  ferry_guest_params* p = g.mem.params();
  p->vcpu_kind[0] = FERRY_WL_IDLE;
  p->vcpu_kind[1] = FERRY_WL_UNIFORM;
  p->vcpu_kind[2] = FERRY_WL_SEQUENTIAL;
  p->target_dirty_pages_per_sec = 10001;
  g.InitAll();
  EXPECT_EQ(g.mem.status(0)->slice_pages, 0u);
  EXPECT_EQ(g.mem.status(1)->slice_first_page, 0u);
  EXPECT_EQ(g.mem.status(1)->slice_pages, 500u);
  EXPECT_EQ(g.mem.status(2)->slice_first_page, 500u);
  EXPECT_EQ(g.mem.status(2)->kind, FERRY_WL_SEQUENTIAL);
  // 1 s each: the writers' shares are 5001 and 5000 pages/s.
  EXPECT_NEAR(g.PagesIn(1, 0, kTscHz), 5001, 50);
  EXPECT_NEAR(g.PagesIn(2, 0, kTscHz), 5000, 50);
  EXPECT_EQ(g.PagesIn(0, 0, kTscHz / 10), 0u);
}

// ---- pacing ------------------------------------------------------------------

class PacingRate : public ::testing::TestWithParam<uint64_t> {};

// Each vCPU runs 0.3 s of its own fake timeline; stores cost 10 ns so the
// writes themselves take time, as on a real vCPU.
TEST_P(PacingRate, HitsTargetWithinTenPercent) {
  const uint64_t rate = GetParam();
  FakeGuest g(FERRY_WL_UNIFORM, 4096, 2);
  g.store_cost = 10;
  g.mem.params()->target_dirty_pages_per_sec = rate;
  g.InitAll();
  const uint64_t window = kTscHz * 3 / 10;
  uint64_t total = 0;
  for (uint64_t v = 0; v < 2; v++) {
    uint64_t pages = g.PagesIn(v, 0, window);
    EXPECT_NEAR(pages, rate / 2 * 0.3, rate / 2 * 0.3 * 0.1) << "vcpu " << v;
    total += pages;
  }
  EXPECT_NEAR(total, rate * 0.3, rate * 0.3 * 0.1);
}

INSTANTIATE_TEST_SUITE_P(Rates, PacingRate,
                         ::testing::Values(200, 5000, 50000, 1000000));

TEST(Pacing, UnthrottledRunsAtMemorySpeed) {
  FakeGuest g(FERRY_WL_UNIFORM, 4096, 1);
  g.store_cost = 10;
  g.InitAll();
  // 4 stores per page at 10 ns plus per-batch bookkeeping: well over 1M/s.
  EXPECT_GT(g.PagesIn(0, 0, kTscHz / 100), 10000u);
}

TEST(Pacing, NoCatchUpBurstAfterThePauseOfAMigration) {
  FakeGuest g(FERRY_WL_UNIFORM, 4096, 1);
  g.mem.params()->target_dirty_pages_per_sec = 10000;  // batch = 10 pages
  g.InitAll();
  g.PagesIn(0, 0, kTscHz / 10);
  // Paused for 1 s (switchover), then 10 ms of running: 100 pages due, plus
  // at most the 4-batch burst allowance and two batches of boundary rounding
  // (instead of the 10000 pages a bucket without a cap would release).
  uint64_t after_pause = g.PagesIn(0, g.now + kTscHz, kTscHz / 100);
  EXPECT_GE(after_pause, 100u);
  EXPECT_LE(after_pause, 100u + 4 * 10 + 2 * 10);
}

TEST(Pacing, ClockGoingBackwardsDoesNotStallTheGuest) {
  FakeGuest g(FERRY_WL_UNIFORM, 4096, 1);
  g.mem.params()->target_dirty_pages_per_sec = 10000;
  g.InitAll();
  g.PagesIn(0, 5 * kTscHz, kTscHz / 10);
  // Restored on a host whose guest TSC reads 4 s lower: keep the rate.
  EXPECT_NEAR(g.PagesIn(0, kTscHz, kTscHz / 10), 1000, 100);
}

TEST(Pacing, RateChangeAppliesAfterConfigSeqBump) {
  FakeGuest g(FERRY_WL_SEQUENTIAL, 4096, 1);
  g.mem.params()->target_dirty_pages_per_sec = 10000;
  g.InitAll();
  EXPECT_NEAR(g.PagesIn(0, 0, kTscHz / 5), 2000, 200);
  g.mem.params()->target_dirty_pages_per_sec = 40000;
  EXPECT_NEAR(g.PagesIn(0, g.now, kTscHz / 5), 2000, 200) << "not before the bump";
  g.mem.params()->config_seq++;
  EXPECT_NEAR(g.PagesIn(0, g.now, kTscHz / 5), 8000, 800);
}

// ---- stamps and self-check -----------------------------------------------------

TEST(SelfCheck, CatchesAFlippedByte) {
  FakeGuest g(FERRY_WL_SEQUENTIAL, 128, 1);
  g.mem.params()->verify_interval_batches = 1;  // whole slice after each batch
  g.InitAll();
  g.Steps(0, 2);  // every page written once, verified clean
  ASSERT_EQ(g.mem.status(0)->selfcheck_errors, 0u);
  g.mem.base()[g.mem.PageGpa(100) + 3] ^= 0x40;
  g.Steps(0, 1);  // rewrites pages 0..63 only, then verifies all 128
  ferry_guest_status* s = g.mem.status(0);
  EXPECT_EQ(s->selfcheck_errors, 1u);
  EXPECT_EQ(s->first_bad_page, 100u);
  EXPECT_EQ(s->first_bad_expected, g.mem.Table(100));
  EXPECT_EQ(s->first_bad_actual_head, s->first_bad_expected ^ (uint64_t{0x40} << 24));
  EXPECT_EQ(s->first_bad_actual_tail, s->first_bad_expected);
}

TEST(SelfCheck, CatchesATornPage) {
  FakeGuest g(FERRY_WL_SEQUENTIAL, 128, 1);
  g.InitAll();
  g.Steps(0, 2);
  uint64_t old_tail = g.mem.Load(g.mem.PageGpa(9) + FERRY_STAMP_TAIL_OFFSET);
  g.Steps(0, 2);  // rewrite everything
  // A copy that raced the guest: new head, old tail.
  g.mem.Store(g.mem.PageGpa(9) + FERRY_STAMP_TAIL_OFFSET, old_tail);
  EXPECT_EQ(wl_vcpu_verify_slice(g.ctx(), 0), 1u);
  EXPECT_EQ(g.mem.status(0)->first_bad_page, 9u);
  EXPECT_EQ(g.mem.status(0)->first_bad_actual_tail, old_tail);
}

TEST(SelfCheck, CatchesALostWrite) {
  FakeGuest g(FERRY_WL_SEQUENTIAL, 128, 1);
  g.InitAll();
  g.Steps(0, 2);
  std::vector<uint8_t> old_page(g.mem.base() + g.mem.PageGpa(10),
                                g.mem.base() + g.mem.PageGpa(10) + kPage);
  g.Steps(0, 2);
  // Migration lost the second write: the destination holds the old copy.
  memcpy(g.mem.base() + g.mem.PageGpa(10), old_page.data(), kPage);
  EXPECT_EQ(wl_vcpu_verify_slice(g.ctx(), 0), 1u);
  ferry_guest_status* s = g.mem.status(0);
  EXPECT_EQ(s->selfcheck_errors, 1u);
  EXPECT_EQ(s->verify_passes, 1u);
  EXPECT_EQ(s->first_bad_page, 10u);
  EXPECT_LT(ferry_stamp_seq(s->first_bad_actual_head), ferry_stamp_seq(s->first_bad_expected));
  wl_check_result r = g.CheckAll();
  EXPECT_EQ(r.mismatches, 1u);
  EXPECT_EQ(r.first_bad_page, 10u);
}

TEST(SelfCheck, PeriodicVerificationSweepsTheSliceInChunks) {
  FakeGuest g(FERRY_WL_UNIFORM, 256, 1);
  g.mem.params()->verify_interval_batches = 2;
  g.mem.params()->verify_chunk_pages = 32;
  g.InitAll();
  g.Steps(0, 32);  // 16 verify steps x 32 pages = 2 passes over 256 pages
  EXPECT_EQ(g.mem.status(0)->pages_verified, 512u);
  EXPECT_EQ(g.mem.status(0)->verify_passes, 2u);
  EXPECT_EQ(g.mem.status(0)->selfcheck_errors, 0u);
}

// A snapshot can land between the table store and the page stores (a paused
// vCPU, or a software-backend copy); the host check must exempt that page only.
TEST(SelfCheck, HostCheckExemptsOnlyThePageMidWrite) {
  FakeGuest g(FERRY_WL_SEQUENTIAL, 64, 1);
  g.InitAll();
  g.Steps(0, 1);  // pages 0..63 written once
  GuestMemory snapshot(64);
  const uint64_t table7 = FERRY_GUEST_STAMP_TABLE_GPA + 8 * 7;
  g.before_store = [&](uint64_t gpa) {
    if (gpa == g.mem.PageGpa(7)) snapshot.CopyFrom(g.mem);  // table done, page not
  };
  g.Steps(0, 1);
  ASSERT_NE(snapshot.Load(table7), 0u);
  wl_host_ops direct{};
  direct.now = [](void*) -> uint64_t { return 0; };
  wl_ctx ctx{snapshot.base(), snapshot.size(), &direct, nullptr};
  wl_check_result r;
  ASSERT_EQ(wl_check_all(&ctx, &r), 0u);
  EXPECT_EQ(r.mismatches, 0u);
  EXPECT_EQ(r.pages_checked, 63u);
  snapshot.status(0)->cur_page = FERRY_GUEST_NO_PAGE;
  ASSERT_EQ(wl_check_all(&ctx, &r), 0u);
  EXPECT_EQ(r.mismatches, 1u);
  EXPECT_EQ(r.first_bad_page, 7u);
}

TEST(Stamps, UntouchedMemoryStaysZero) {
  FakeGuest g(FERRY_WL_UNIFORM, 4096, 2);
  g.InitAll();
  g.Steps(0, 5);
  g.Steps(1, 5);
  GuestMemory& m = g.mem;
  uint64_t written = 0;
  for (uint64_t p = 0; p < 4096; p++) {
    uint64_t gpa = m.PageGpa(p), stamp = m.Table(p);
    if (stamp == 0) {
      ASSERT_TRUE(PageIsZero(m, gpa, kPage)) << "page " << p;
      continue;
    }
    written++;
    EXPECT_EQ(ferry_stamp_page(stamp), p);
    EXPECT_EQ(m.Load(gpa), stamp);
    EXPECT_EQ(m.Load(gpa + FERRY_STAMP_TAIL_OFFSET), stamp);
    ASSERT_TRUE(PageIsZero(m, gpa + 8, kPage - 16)) << "page " << p;
  }
  EXPECT_GT(written, 500u);
  EXPECT_LE(written, 640u);
  // Only the params page, the two status pages and the table are non-zero.
  EXPECT_TRUE(PageIsZero(m, 0, FERRY_GUEST_PARAMS_GPA));
  EXPECT_TRUE(PageIsZero(m, FERRY_GUEST_PARAMS_GPA + kPage,
                         FERRY_GUEST_STATUS_GPA - FERRY_GUEST_PARAMS_GPA - kPage));
  uint64_t status_end = FERRY_GUEST_STATUS_GPA_OF(2);
  EXPECT_TRUE(PageIsZero(m, status_end, FERRY_GUEST_STAMP_TABLE_GPA - status_end));
  uint64_t table_end = FERRY_GUEST_STAMP_TABLE_GPA + 8 * 4096;
  EXPECT_TRUE(PageIsZero(m, table_end, FERRY_GUEST_WS_GPA - table_end));
}

TEST(Stamps, RandomFillCoversThePageAndChangesOnRewrite) {
  FakeGuest g(FERRY_WL_UNIFORM, 64, 1);
  g.mem.params()->fill_words = FERRY_FILL_WORDS_MAX;
  g.InitAll();
  g.Steps(0, 20);
  GuestMemory& m = g.mem;
  uint64_t checked = 0;
  for (uint64_t p = 0; p < 64; p++) {
    const uint64_t gpa = m.PageGpa(p), stamp = m.Table(p);
    if (stamp == 0) continue;
    ++checked;
    EXPECT_EQ(m.Load(gpa), stamp);
    EXPECT_EQ(m.Load(gpa + FERRY_STAMP_TAIL_OFFSET), stamp);
    // Every filler word is written and distinct from its neighbour: no
    // run of zero or repeated words that a compressor could use.
    for (uint64_t off = 8; off < FERRY_STAMP_TAIL_OFFSET; off += 8) {
      ASSERT_NE(m.Load(gpa + off), 0u) << "page " << p << " +" << off;
      ASSERT_NE(m.Load(gpa + off), m.Load(gpa + off + 8)) << "page " << p;
    }
  }
  ASSERT_GT(checked, 10u);
  // A rewrite changes the filler too (it derives from the new stamp).
  const uint64_t page = ferry_stamp_page(g.mem.status(0)->last_stamp);
  const uint64_t before = m.Load(m.PageGpa(page) + 800);
  const uint64_t old_stamp = m.Table(page);
  for (int i = 0; i < 10000 && m.Table(page) == old_stamp; i++) g.Steps(0, 1);
  ASSERT_NE(m.Table(page), old_stamp) << "page " << page << " never rewritten";
  EXPECT_NE(m.Load(m.PageGpa(page) + 800), before);
  EXPECT_EQ(g.CheckAll().mismatches, 0u);
}

TEST(Rng, SeededAndDeterministic) {
  auto run = [](uint64_t seed) {
    auto g = std::make_unique<FakeGuest>(FERRY_WL_HOTCOLD, 1024, 2);
    g->mem.params()->seed = seed;
    g->InitAll();
    g->Steps(0, 4);
    g->Steps(1, 4);
    return g;
  };
  std::unique_ptr<FakeGuest> a = run(7), b = run(7), c = run(8);
  EXPECT_EQ(a->head_writes, b->head_writes) << "seed 7";
  EXPECT_EQ(0, memcmp(a->mem.base() + FERRY_GUEST_STAMP_TABLE_GPA,
                      b->mem.base() + FERRY_GUEST_STAMP_TABLE_GPA,
                      a->mem.size() - FERRY_GUEST_STAMP_TABLE_GPA));
  EXPECT_NE(a->head_writes, c->head_writes) << "seeds 7 and 8";
  // The two vCPUs draw from different streams.
  std::vector<uint64_t> v0(a->head_writes.begin(), a->head_writes.begin() + 64);
  std::vector<uint64_t> v1(a->head_writes.begin() + 256, a->head_writes.begin() + 320);
  for (uint64_t& p : v1) p -= 512;
  EXPECT_NE(v0, v1);
}

// All state lives in guest memory: copying memory between two steps (what a
// migration does) and continuing there gives exactly the uninterrupted run.
TEST(Resume, StepContinuesFromGuestMemoryAlone) {
  FakeGuest straight(FERRY_WL_MIXED, 512, 3), first(FERRY_WL_MIXED, 512, 3),
      second(FERRY_WL_MIXED, 512, 3);
  straight.InitAll();
  first.InitAll();
  for (uint64_t v = 0; v < 3; v++) {
    straight.Steps(v, 10);
    first.Steps(v, 5);
  }
  second.mem.CopyFrom(first.mem);
  for (uint64_t v = 0; v < 3; v++) second.Steps(v, 5);
  // Heartbeats differ (clock-dependent); everything from the table up must not.
  uint64_t from = FERRY_GUEST_STAMP_TABLE_GPA;
  EXPECT_EQ(0, memcmp(straight.mem.base() + from, second.mem.base() + from,
                      straight.mem.size() - from));
  for (uint64_t v = 0; v < 3; v++)
    EXPECT_EQ(straight.mem.status(v)->last_stamp, second.mem.status(v)->last_stamp);
}

// ---- host threads (the software backend's shape) ------------------------------

TEST(Threads, VcpusOnHostThreadsNeverConflict) {
  constexpr uint64_t kVcpus = 4, kSteps = 300;
  GuestMemory mem(1024);
  FillParams(mem, FERRY_WL_MIXED, 1024, kVcpus);
  mem.params()->verify_interval_batches = 4;
  mem.params()->verify_chunk_pages = 64;
  wl_host_ops ops{};  // direct memory access, real (monotonic) clock
  ops.now = [](void*) -> uint64_t {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  };
  wl_ctx ctx{mem.base(), mem.size(), &ops, nullptr};
  std::atomic<int> started{0};
  ops.event = [](void* o, uint64_t, uint64_t code, uint64_t) {
    if (code == FERRY_GUEST_EVENT_STARTED) static_cast<std::atomic<int>*>(o)->fetch_add(1);
  };
  ctx.opaque = &started;
  std::vector<std::thread> threads;
  for (uint64_t v = 0; v < kVcpus; v++) {
    threads.emplace_back([&ctx, v] {
      // Each thread gets its own ctx copy, like a vCPU thread would.
      wl_ctx mine = ctx;
      if (wl_vcpu_init(&mine, v) != 0) return;
      for (uint64_t i = 0; i < kSteps; i++) wl_vcpu_step(&mine, v);
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(started.load(), static_cast<int>(kVcpus));
  for (uint64_t v = 0; v < kVcpus; v++) {
    EXPECT_EQ(mem.status(v)->pages_written, kSteps * 64) << "vcpu " << v;
    EXPECT_EQ(mem.status(v)->selfcheck_errors, 0u) << "vcpu " << v;
    EXPECT_GE(mem.status(v)->verify_passes, 10u) << "vcpu " << v;
  }
  wl_check_result r;
  ASSERT_EQ(wl_check_all(&ctx, &r), 0u);
  EXPECT_EQ(r.mismatches, 0u);
  EXPECT_EQ(r.pages_checked, 1024u);
}

}  // namespace
