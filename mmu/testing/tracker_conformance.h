// The one conformance suite every dirty-tracking mode runs (testonly), in
// the style of the KVM selftests' dirty_log_test.c: a writer stamps pages
// with the iteration number, stops, the host collects, and the rule is
//
//   a page reported dirty holds the current stamp;
//   a page not reported holds an older stamp  (a miss is the bug that
//                                              loses guest memory).
//
// Seeded randomness, the seed printed; a stop handshake before every
// collection (RunIteration returns only when the writer has stopped).
//
// Plugging a mode in (the software MMU, a new KVM mode, ...):
//   1. Implement DirtyTrackingTarget: own the tracker and the memory, and
//      make RunIteration write through the path the tracker observes (the
//      guest's stores; for the softmmu, its vCPU write path through the
//      shadow sptes), never behind its back.
//   2. In the mode's test file (the suite name must be unqualified, so
//      bring it in with `using ferry::mmu::testing::TrackerConformanceTest;`):
//        INSTANTIATE_TEST_SUITE_P(
//            SoftMmu, TrackerConformanceTest,
//            ::testing::Values(ConformanceParam{"softmmu", &MakeMyTarget}),
//            ConformanceParamName);
//      and depend on //mmu/testing:tracker_conformance (it links the TEST_Ps).
//   3. A factory that cannot run on this machine returns UNAVAILABLE with
//      the reason; the tests then GTEST_SKIP with it.
//   Reproduce a failure with FERRY_CONFORMANCE_SEED=<printed seed>.
// The Run*Scenario functions are the same checks as a "dry run" returning
// the violations instead of failing, so a test can prove the suite catches
// a broken tracker.
//
// Allowed exceptions (the only ones):
//   - Round 0: right after Start, one Collect (and Reprotect of what it
//     reported) is not checked against stamps. A kClearLog tracker with
//     KVM_DIRTY_LOG_INITIALLY_SET reports every page there; DirtyLog's
//     round 0 sends every page anyway. Modes without needs_reprotect()
//     must report nothing there (nothing was written since Start).
//   - The VMM's own writes (loader, device emulation) never fault through
//     KVM and are not the tracker's to see; DirtyLog::MarkDirty covers
//     them. Targets therefore must not write guest memory from the host.
//   - needs_reprotect() modes may report a page again until it is
//     Reprotect-ed (KVM keeps the bit until KVM_CLEAR_DIRTY_LOG): the suite
//     Reprotects what each Collect reported, as the sender would before
//     copying, before checking the next iteration.
#ifndef FERRY_MMU_TESTING_TRACKER_CONFORMANCE_H_
#define FERRY_MMU_TESTING_TRACKER_CONFORMANCE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "gtest/gtest.h"
#include "mmu/dirty_tracker.h"
#include "mmu/memslot.h"

namespace ferry::mmu::testing {

// A writer, some guest memory and the tracker that watches it.
class DirtyTrackingTarget {
 public:
  virtual ~DirtyTrackingTarget() = default;

  // The tracker under test, owned by the target and NOT started: the suite
  // calls Start(slots()) and Stop() itself.
  virtual DirtyTracker* tracker() = 0;
  // The tracked slots. Every page's first 8 bytes start below stamp 1
  // (e.g. zero).
  virtual absl::Span<const Memslot> slots() const = 0;
  // The writer stores `stamp` (little-endian u64) at the start of a set of
  // pages chosen deterministically from `seed` (same seed, same pages),
  // through the tracked path, then STOPS: returns only once every store is
  // complete and visible to the tracker and no writer is running. Stamps
  // passed in increase strictly. Any page of any slot may be chosen.
  virtual absl::Status RunIteration(uint64_t stamp, uint64_t seed) = 0;
  // The first 8 bytes of the page at `gpa` (page-aligned, in a slot), read
  // while the writer is stopped.
  virtual absl::StatusOr<uint64_t> ReadStamp(uint64_t gpa) = 0;
};

// A fresh target per test, or UNAVAILABLE (the test skips, printing the
// message) when this machine cannot run it, e.g. without /dev/kvm.
using TargetFactory =
    std::function<absl::StatusOr<std::unique_ptr<DirtyTrackingTarget>>()>;

struct ConformanceOptions {
  // Iterations of the stamp scenario; the others run fewer (a fraction).
  int iterations = 200;
  // 0: FERRY_CONFORMANCE_SEED from the environment, else a random seed.
  uint64_t seed = 0;
  // Violations recorded before a scenario gives up listing them.
  size_t max_violations = 20;
};

struct ConformanceReport {
  uint64_t seed = 0;
  int iterations = 0;          // iterations completed
  uint64_t pages_checked = 0;  // page checks made
  std::vector<std::string> violations;
  absl::Status error;          // a tracker or target call failed

  bool ok() const { return error.ok() && violations.empty(); }
  std::string ToString() const;
};

// The seed a run with `options` uses (options.seed, the environment, or a
// fresh random one).
uint64_t ResolveSeed(const ConformanceOptions& options);

// Dry-run API: each starts the target's tracker, runs, stops it.
//
// Stamp rule over `options.iterations` iterations; also: an extra Collect
// with no write in between reports nothing, CollectStats::pages equals the
// pages reported, per-vCPU counts sum to at most `pages`.
ConformanceReport RunStampScenario(DirtyTrackingTarget& target,
                                   const ConformanceOptions& options);
// Collect, (needs_reprotect: Collect again and rewrite before Reprotect —
// still reported), Reprotect, rewrite the same pages: exactly those are
// reported again.
ConformanceReport RunReprotectRewriteScenario(DirtyTrackingTarget& target,
                                              const ConformanceOptions& options);
// Pre-copy through DirtyLog with seeded send failures: collect, fail the
// send, give back, collect again — still pending; after every round each
// page whose source stamp differs from the "destination" copy is pending;
// at the end, after a final harvest and send, destination == source.
ConformanceReport RunGiveBackScenario(DirtyTrackingTarget& target,
                                      const ConformanceOptions& options);
// Collect after Stop is an error.
ConformanceReport RunStopScenario(DirtyTrackingTarget& target,
                                  const ConformanceOptions& options);

// --- gtest ---

struct ConformanceParam {
  std::string name;  // [A-Za-z0-9_] only: it becomes part of the test name
  TargetFactory factory;
  ConformanceOptions options = {};
};

std::string ConformanceParamName(
    const ::testing::TestParamInfo<ConformanceParam>& info);

// TEST_Ps StampRule, ReprotectThenRewrite, GiveBackThroughDirtyLog,
// CollectAfterStopFails; instantiate as shown at the top of this file.
class TrackerConformanceTest
    : public ::testing::TestWithParam<ConformanceParam> {};

// A DirtyTracker that forwards every call to one it does not own (so a
// target's tracker can be handed to DirtyLog, which wants ownership).
std::unique_ptr<DirtyTracker> Unowned(DirtyTracker* tracker);

}  // namespace ferry::mmu::testing

#endif  // FERRY_MMU_TESTING_TRACKER_CONFORMANCE_H_
