#include "mmu/testing/tracker_conformance.h"

#include <cstdlib>
#include <functional>
#include <iostream>
#include <random>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "mmu/dirty_log.h"
#include "mmu/dirty_set.h"

namespace ferry::mmu::testing {
namespace {

absl::Status Context(const absl::Status& s, absl::string_view where) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(where, ": ", s.message()));
}

class ForwardingTracker : public DirtyTracker {
 public:
  explicit ForwardingTracker(DirtyTracker* t) : t_(t) {}
  DirtyTrackingMode mode() const override { return t_->mode(); }
  absl::Status Start(absl::Span<const Memslot> slots) override {
    return t_->Start(slots);
  }
  absl::StatusOr<CollectStats> Collect(DirtySet* out) override {
    return t_->Collect(out);
  }
  bool needs_reprotect() const override { return t_->needs_reprotect(); }
  absl::Status Reprotect(uint32_t slot, uint64_t first_page,
                         uint64_t npages) override {
    return t_->Reprotect(slot, first_page, npages);
  }
  absl::Status ReprotectRuns(absl::Span<const PageRun> runs) override {
    return t_->ReprotectRuns(runs);
  }
  bool has_per_vcpu_counts() const override { return t_->has_per_vcpu_counts(); }
  absl::Status Stop() override { return t_->Stop(); }

 private:
  DirtyTracker* t_;
};

// Shared state of one scenario run.
class Run {
 public:
  Run(DirtyTrackingTarget& target, const ConformanceOptions& options)
      : target_(target), options_(options) {
    report_.seed = ResolveSeed(options);
    rng_.seed(report_.seed);
  }

  DirtyTrackingTarget& target() { return target_; }
  DirtyTracker* tracker() { return target_.tracker(); }
  ConformanceReport& report() { return report_; }
  uint64_t Random() { return rng_(); }
  bool full() const {
    return report_.violations.size() >= options_.max_violations;
  }
  void Violation(std::string what) {
    if (!full()) report_.violations.push_back(std::move(what));
  }

  // The stamp rule for what one Collect reported (`out`, which was empty
  // before it). With check_misses false only "reported ⇒ current stamp" is
  // checked (see RunReprotectRewriteScenario).
  absl::Status CheckStamps(const DirtySet& out, uint64_t stamp,
                           absl::string_view where, bool check_misses = true) {
    for (const DirtySet::Entry& e : out.entries()) {
      for (uint64_t page = 0; page < e.bitmap.npages() && !full(); ++page) {
        const uint64_t gpa = e.gpa + (page << kPageShift);
        ASSIGN_OR_RETURN(uint64_t v, target_.ReadStamp(gpa));
        ++report_.pages_checked;
        const bool dirty = e.bitmap.Test(page);
        const std::string at = absl::StrFormat(
            "%s (stamp %u): slot %u page %u (gpa 0x%x)", where, stamp, e.slot,
            page, gpa);
        if (v > stamp) {
          Violation(absl::StrCat(at, " holds stamp ", v,
                                 " from the future: the target is broken"));
        } else if (dirty && v != stamp) {
          Violation(absl::StrCat(at, " reported dirty but holds older stamp ",
                                 v, " (spurious)"));
        } else if (!dirty && v == stamp && check_misses) {
          Violation(absl::StrCat(
              at, " MISSED: written in this iteration but not reported"));
        }
      }
    }
    return absl::OkStatus();
  }

  // What the sender does before copying the pages a Collect reported.
  absl::Status ReprotectReported(const DirtySet& out) {
    if (!tracker()->needs_reprotect()) return absl::OkStatus();
    std::vector<PageRun> runs;
    out.ForEachRun([&](const PageRun& r) { runs.push_back(r); });
    if (runs.empty()) return absl::OkStatus();
    return tracker()->ReprotectRuns(runs);
  }

  // Round 0 (an allowed exception, see the header): one unchecked Collect
  // right after Start, except that modes without re-protect report nothing.
  absl::Status DrainRoundZero(DirtySet* out) {
    out->ClearAll();
    ASSIGN_OR_RETURN(CollectStats stats, tracker()->Collect(out));
    (void)stats;
    if (!tracker()->needs_reprotect() && !out->Empty()) {
      Violation(absl::StrCat("round 0: reported ", out->Count(),
                             " pages though nothing was written since Start"));
    }
    return Context(ReprotectReported(*out), "round 0: Reprotect");
  }

  absl::Status CheckStats(const DirtySet& out, const CollectStats& stats,
                          absl::string_view where) {
    const uint64_t count = out.Count();
    if (stats.pages != count) {
      Violation(absl::StrCat(where, ": CollectStats::pages ", stats.pages,
                             " but ", count, " pages reported"));
    }
    if (tracker()->has_per_vcpu_counts()) {
      uint64_t sum = 0;
      for (uint64_t n : stats.per_vcpu_pages) sum += n;
      if (sum > stats.pages) {
        Violation(absl::StrCat(where, ": per-vCPU pages sum to ", sum,
                               " > pages ", stats.pages));
      }
    } else if (!stats.per_vcpu_pages.empty()) {
      Violation(absl::StrCat(where, ": per_vcpu_pages filled but "
                                    "has_per_vcpu_counts() is false"));
    }
    return absl::OkStatus();
  }

  // Collect into `out` (cleared first).
  absl::StatusOr<CollectStats> Collect(DirtySet* out, absl::string_view where) {
    out->ClearAll();
    absl::StatusOr<CollectStats> stats = tracker()->Collect(out);
    if (!stats.ok()) return Context(stats.status(), absl::StrCat(where, ": Collect"));
    return stats;
  }

  absl::Status Write(uint64_t stamp, uint64_t seed, absl::string_view where) {
    return Context(target_.RunIteration(stamp, seed),
                   absl::StrCat(where, ": RunIteration seed ", seed));
  }

 private:
  DirtyTrackingTarget& target_;
  const ConformanceOptions options_;
  ConformanceReport report_;
  std::mt19937_64 rng_;
};

// Starts the tracker, runs `body`, always stops it.
absl::Status WithStartedTracker(Run& run,
                                const std::function<absl::Status()>& body) {
  RETURN_IF_ERROR(
      Context(run.tracker()->Start(run.target().slots()), "Start"));
  absl::Status s = body();
  absl::Status stop = Context(run.tracker()->Stop(), "Stop");
  return s.ok() ? stop : s;
}

}  // namespace

std::string ConformanceReport::ToString() const {
  std::string s = absl::StrCat(
      "seed ", seed, " (repeat with FERRY_CONFORMANCE_SEED=", seed, "), ",
      iterations, " iterations, ", pages_checked, " page checks");
  if (!error.ok()) absl::StrAppend(&s, "\nerror: ", error.ToString());
  if (!violations.empty()) {
    absl::StrAppend(&s, "\n", violations.size(), " violation(s):\n  ",
                    absl::StrJoin(violations, "\n  "));
  }
  return s;
}

uint64_t ResolveSeed(const ConformanceOptions& options) {
  if (options.seed != 0) return options.seed;
  if (const char* env = std::getenv("FERRY_CONFORMANCE_SEED")) {
    uint64_t seed = 0;
    if (absl::SimpleAtoi(env, &seed) && seed != 0) return seed;
  }
  std::random_device rd;
  return (uint64_t{rd()} << 32 | rd()) | 1;
}

ConformanceReport RunStampScenario(DirtyTrackingTarget& target,
                                   const ConformanceOptions& options) {
  Run run(target, options);
  DirtySet out = DirtySet::ForSlots(target.slots());
  run.report().error = WithStartedTracker(run, [&]() -> absl::Status {
    RETURN_IF_ERROR(run.DrainRoundZero(&out));
    for (int i = 1; i <= options.iterations && !run.full(); ++i) {
      const uint64_t stamp = i;
      const std::string where = absl::StrCat("iteration ", i);
      RETURN_IF_ERROR(run.Write(stamp, run.Random(), where));
      ASSIGN_OR_RETURN(CollectStats stats, run.Collect(&out, where));
      RETURN_IF_ERROR(run.CheckStamps(out, stamp, where));
      RETURN_IF_ERROR(run.CheckStats(out, stats, where));
      RETURN_IF_ERROR(Context(run.ReprotectReported(out), where));
      if (run.Random() % 8 == 0) {
        // Consumed means consumed: with no write since, nothing comes back.
        RETURN_IF_ERROR(run.Collect(&out, where).status());
        if (!out.Empty()) {
          run.Violation(absl::StrCat(where, ": a second Collect with no write "
                                            "in between reported ",
                                     out.Count(), " pages"));
        }
      }
      run.report().iterations = i;
    }
    return absl::OkStatus();
  });
  return std::move(run.report());
}

ConformanceReport RunReprotectRewriteScenario(DirtyTrackingTarget& target,
                                              const ConformanceOptions& options) {
  Run run(target, options);
  DirtySet out = DirtySet::ForSlots(target.slots());
  const int rounds = std::max(5, options.iterations / 10);
  run.report().error = WithStartedTracker(run, [&]() -> absl::Status {
    RETURN_IF_ERROR(run.DrainRoundZero(&out));
    uint64_t stamp = 0;
    for (int k = 1; k <= rounds && !run.full(); ++k) {
      const uint64_t seed = run.Random();  // same seed = same pages W
      std::string where = absl::StrCat("round ", k, " first write");
      RETURN_IF_ERROR(run.Write(++stamp, seed, where));
      RETURN_IF_ERROR(run.Collect(&out, where).status());
      RETURN_IF_ERROR(run.CheckStamps(out, stamp, where));

      // Rewrite W after the Collect but before the Reprotect. Modes that
      // re-protect in Collect must report it. A needs_reprotect mode is
      // only promised to report writes after the Reprotect (the sender
      // copies after it, so this write is in the copy): misses allowed.
      where = absl::StrCat("round ", k, " rewrite before Reprotect");
      RETURN_IF_ERROR(run.Write(++stamp, seed, where));
      RETURN_IF_ERROR(run.Collect(&out, where).status());
      RETURN_IF_ERROR(run.CheckStamps(out, stamp, where,
                                      !run.tracker()->needs_reprotect()));
      // Reprotect everything written this round (W), as the sender would.
      {
        DirtySet w = DirtySet::ForSlots(target.slots());
        for (DirtySet::Entry& e : w.entries()) {
          for (uint64_t p = 0; p < e.bitmap.npages(); ++p) {
            ASSIGN_OR_RETURN(uint64_t v,
                             target.ReadStamp(e.gpa + (p << kPageShift)));
            if (v == stamp) e.bitmap.Set(p);
          }
        }
        RETURN_IF_ERROR(Context(run.ReprotectReported(w), where));
      }

      where = absl::StrCat("round ", k, " rewrite after Reprotect");
      RETURN_IF_ERROR(run.Write(++stamp, seed, where));
      RETURN_IF_ERROR(run.Collect(&out, where).status());
      RETURN_IF_ERROR(run.CheckStamps(out, stamp, where));
      RETURN_IF_ERROR(Context(run.ReprotectReported(out), where));

      where = absl::StrCat("round ", k, " no write");
      RETURN_IF_ERROR(run.Collect(&out, where).status());
      if (!out.Empty()) {
        run.Violation(absl::StrCat(where, ": reported ", out.Count(),
                                   " pages after Collect + Reprotect"));
      }
      run.report().iterations = k;
    }
    return absl::OkStatus();
  });
  return std::move(run.report());
}

ConformanceReport RunGiveBackScenario(DirtyTrackingTarget& target,
                                      const ConformanceOptions& options) {
  Run run(target, options);
  const int rounds = std::max(10, options.iterations / 4);
  const std::vector<Memslot> slots(target.slots().begin(), target.slots().end());
  // The "destination": the stamp each page had when last copied.
  constexpr uint64_t kNever = ~uint64_t{0};
  std::vector<std::vector<uint64_t>> dest;
  for (const Memslot& s : slots) dest.emplace_back(s.npages(), kNever);
  auto slot_index = [&](uint32_t id) {
    for (size_t i = 0; i < slots.size(); ++i) {
      if (slots[i].slot == id) return i;
    }
    return slots.size();
  };

  absl::StatusOr<std::unique_ptr<DirtyLog>> log_or =
      DirtyLog::Create(Unowned(target.tracker()), slots);
  if (!log_or.ok()) {
    run.report().error = log_or.status();
    return std::move(run.report());
  }
  DirtyLog& log = **log_or;

  // One send pass: batches until pending is empty. With may_fail, one
  // seeded batch per pass fails: it is given back, the log collected again
  // (the pages must still be pending), and the pass either goes on or ends
  // there, leaving pages pending into the next round.
  auto send = [&](bool may_fail, absl::string_view where) -> absl::Status {
    int fail_at = may_fail ? static_cast<int>(run.Random() % 8) : -1;
    const bool stop_after_failure = run.Random() % 2 == 0;
    for (int batch = 0;; ++batch) {
      ASSIGN_OR_RETURN(std::vector<PageRun> runs,
                       log.TakeBatch(1 + run.Random() % 512));
      if (runs.empty()) return absl::OkStatus();
      if (batch == fail_at) {
        RETURN_IF_ERROR(Context(log.GiveBack(runs), where));
        RETURN_IF_ERROR(Context(log.Harvest().status(), where));
        DirtySet pending = log.PendingSnapshot();
        for (const PageRun& r : runs) {
          const DirtyBitmap& b = **pending.Get(r.slot);
          for (uint64_t p = r.first_page; p < r.first_page + r.npages; ++p) {
            if (!b.Test(p)) {
              run.Violation(absl::StrCat(where, ": slot ", r.slot, " page ", p,
                                         " given back after a failed send "
                                         "but not pending after Harvest"));
            }
          }
        }
        if (stop_after_failure) return absl::OkStatus();
        continue;
      }
      // The copy happens after TakeBatch returned (re-protected).
      for (const PageRun& r : runs) {
        const size_t i = slot_index(r.slot);
        for (uint64_t p = r.first_page; p < r.first_page + r.npages; ++p) {
          ASSIGN_OR_RETURN(dest[i][p],
                           target.ReadStamp(r.gpa + ((p - r.first_page)
                                                     << kPageShift)));
        }
      }
    }
  };
  // Every page whose source differs from the destination must be pending.
  auto check = [&](absl::string_view where, bool final) -> absl::Status {
    DirtySet pending = log.PendingSnapshot();
    for (size_t i = 0; i < slots.size() && !run.full(); ++i) {
      const DirtyBitmap& b = **pending.Get(slots[i].slot);
      for (uint64_t p = 0; p < slots[i].npages(); ++p) {
        ASSIGN_OR_RETURN(uint64_t v,
                         target.ReadStamp(slots[i].gpa + (p << kPageShift)));
        ++run.report().pages_checked;
        if (v == dest[i][p]) continue;
        if (final) {
          run.Violation(absl::StrCat(
              where, ": slot ", slots[i].slot, " page ", p, " source stamp ",
              v, " but the destination got ",
              dest[i][p] == kNever ? std::string("nothing")
                                   : absl::StrCat(dest[i][p])));
        } else if (!b.Test(p)) {
          run.Violation(absl::StrCat(
              where, ": slot ", slots[i].slot, " page ", p, " (stamp ", v,
              ") changed since its last copy but is not pending: LOST"));
        }
      }
    }
    return absl::OkStatus();
  };

  run.report().error = [&]() -> absl::Status {
    RETURN_IF_ERROR(Context(log.Start(/*all_pending=*/true), "Start"));
    absl::Status body = [&]() -> absl::Status {
      for (int k = 1; k <= rounds && !run.full(); ++k) {
        const std::string where = absl::StrCat("round ", k);
        RETURN_IF_ERROR(run.Write(k, run.Random(), where));
        RETURN_IF_ERROR(Context(log.Harvest().status(), where));
        RETURN_IF_ERROR(send(/*may_fail=*/true, where));
        RETURN_IF_ERROR(check(where, /*final=*/false));
        run.report().iterations = k;
      }
      // Switchover: the writer is stopped; final harvest, send it all.
      RETURN_IF_ERROR(Context(log.Harvest().status(), "final harvest"));
      RETURN_IF_ERROR(send(/*may_fail=*/false, "final send"));
      return check("final", /*final=*/true);
    }();
    absl::Status stop = Context(log.Stop(), "Stop");
    return body.ok() ? stop : body;
  }();
  return std::move(run.report());
}

ConformanceReport RunStopScenario(DirtyTrackingTarget& target,
                                  const ConformanceOptions& options) {
  Run run(target, options);
  DirtySet out = DirtySet::ForSlots(target.slots());
  run.report().error = [&]() -> absl::Status {
    RETURN_IF_ERROR(Context(run.tracker()->Start(target.slots()), "Start"));
    RETURN_IF_ERROR(run.Write(1, run.Random(), "before Stop"));
    RETURN_IF_ERROR(run.Collect(&out, "before Stop").status());
    RETURN_IF_ERROR(Context(run.tracker()->Stop(), "Stop"));
    absl::StatusOr<CollectStats> after = run.tracker()->Collect(&out);
    if (after.ok()) run.Violation("Collect after Stop succeeded");
    run.report().iterations = 1;
    return absl::OkStatus();
  }();
  return std::move(run.report());
}

std::unique_ptr<DirtyTracker> Unowned(DirtyTracker* tracker) {
  return std::make_unique<ForwardingTracker>(tracker);
}

std::string ConformanceParamName(
    const ::testing::TestParamInfo<ConformanceParam>& info) {
  return info.param.name;
}

// --- the TEST_Ps ---

namespace {

using Scenario = ConformanceReport (*)(DirtyTrackingTarget&,
                                       const ConformanceOptions&);

void RunScenario(const ConformanceParam& param, Scenario scenario) {
  absl::StatusOr<std::unique_ptr<DirtyTrackingTarget>> target =
      param.factory();
  if (target.status().code() == absl::StatusCode::kUnavailable) {
    GTEST_SKIP() << param.name << ": " << target.status().message();
  }
  ASSERT_TRUE(target.ok()) << target.status();
  ConformanceOptions options = param.options;
  options.seed = ResolveSeed(options);
  SCOPED_TRACE(absl::StrCat("seed ", options.seed,
                            " (repeat with FERRY_CONFORMANCE_SEED=",
                            options.seed, ")"));
  ::testing::Test::RecordProperty("seed", absl::StrCat(options.seed));
  std::cerr << "[ conformance ] " << param.name << " seed " << options.seed
            << "\n";
  ConformanceReport report = scenario(**target, options);
  EXPECT_TRUE(report.ok()) << report.ToString();
}

}  // namespace

GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(TrackerConformanceTest);

TEST_P(TrackerConformanceTest, StampRule) {
  RunScenario(GetParam(), &RunStampScenario);
}

TEST_P(TrackerConformanceTest, ReprotectThenRewrite) {
  RunScenario(GetParam(), &RunReprotectRewriteScenario);
}

TEST_P(TrackerConformanceTest, GiveBackThroughDirtyLog) {
  RunScenario(GetParam(), &RunGiveBackScenario);
}

TEST_P(TrackerConformanceTest, CollectAfterStopFails) {
  RunScenario(GetParam(), &RunStopScenario);
}

}  // namespace ferry::mmu::testing
