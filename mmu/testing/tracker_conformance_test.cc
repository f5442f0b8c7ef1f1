// The conformance suite against host-thread targets: it passes with a
// correct tracker (FakeDirtyTracker, both KVM semantics) and catches
// trackers that are broken on purpose.
#include "mmu/testing/tracker_conformance.h"

#include <memory>
#include <utility>

#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mmu/fake_dirty_tracker.h"
#include "mmu/testing/host_writer_target.h"

namespace ferry::mmu::testing {
namespace {

using ::testing::HasSubstr;

// A host target whose tracker is `tracker` (wrapping `fake`, which the
// writers mark).
absl::StatusOr<std::unique_ptr<DirtyTrackingTarget>> MakeTarget(
    FakeDirtyTracker::Semantics semantics, int writers,
    std::function<std::unique_ptr<DirtyTracker>(FakeDirtyTracker*)> wrap = {}) {
  HostWriterOptions options;
  options.writers = writers;
  auto make = [&](absl::Span<const Memslot>) -> absl::StatusOr<TrackedPath> {
    auto fake = std::make_unique<FakeDirtyTracker>(semantics, writers);
    FakeDirtyTracker* raw = fake.get();
    TrackedPath path;
    path.hook = [raw](int writer, uint64_t gpa) {
      return raw->DirtyGpa(gpa, 1, writer);
    };
    if (wrap) {
      path.tracker = wrap(raw);
      path.keep_alive = std::shared_ptr<FakeDirtyTracker>(std::move(fake));
    } else {
      path.tracker = std::move(fake);
    }
    return path;
  };
  ASSIGN_OR_RETURN(std::unique_ptr<HostWriterTarget> t,
                   HostWriterTarget::Create(options, make));
  return std::unique_ptr<DirtyTrackingTarget>(std::move(t));
}

INSTANTIATE_TEST_SUITE_P(
    FakeTracker, TrackerConformanceTest,
    ::testing::Values(
        ConformanceParam{"classic_one_writer",
                         [] {
                           return MakeTarget(
                               FakeDirtyTracker::Semantics::kClassic, 1);
                         }},
        ConformanceParam{"manual_protect_two_writers",
                         [] {
                           return MakeTarget(
                               FakeDirtyTracker::Semantics::kManualProtect, 2);
                         }}),
    ConformanceParamName);

// --- the suite can fail ---

// Forwards to a FakeDirtyTracker, then tampers with what Collect reports.
class TamperingTracker : public DirtyTracker {
 public:
  enum class Fault { kDropOnePage, kAddOnePage, kNoReprotect };
  TamperingTracker(FakeDirtyTracker* inner, Fault fault, int at_collect)
      : inner_(inner), fault_(fault), at_collect_(at_collect) {}

  DirtyTrackingMode mode() const override { return inner_->mode(); }
  absl::Status Start(absl::Span<const Memslot> slots) override {
    return inner_->Start(slots);
  }
  absl::StatusOr<CollectStats> Collect(DirtySet* out) override {
    DirtySet mine = *out;
    mine.ClearAll();
    ASSIGN_OR_RETURN(CollectStats stats, inner_->Collect(&mine));
    if (++collects_ >= at_collect_ && !done_) {
      DirtySet::Entry& e = mine.entries().back();
      if (fault_ == Fault::kDropOnePage && !e.bitmap.Empty()) {
        e.bitmap.Clear(e.bitmap.NextSetBit(0));  // the lost page, every time
        --stats.pages;
        if (!stats.per_vcpu_pages.empty()) --stats.per_vcpu_pages[0];
      } else if (fault_ == Fault::kAddOnePage &&
                 e.bitmap.NextClearBit(0) < e.bitmap.npages()) {
        e.bitmap.Set(e.bitmap.NextClearBit(0));
        ++stats.pages;
        done_ = true;  // once
      }
    }
    RETURN_IF_ERROR(out->MergeFrom(mine).status());
    return stats;
  }
  bool needs_reprotect() const override { return inner_->needs_reprotect(); }
  bool has_per_vcpu_counts() const override {
    return inner_->has_per_vcpu_counts();
  }
  absl::Status Reprotect(uint32_t slot, uint64_t first, uint64_t n) override {
    if (fault_ == Fault::kNoReprotect) return absl::OkStatus();
    return inner_->Reprotect(slot, first, n);
  }
  absl::Status Stop() override { return inner_->Stop(); }

 private:
  FakeDirtyTracker* inner_;
  const Fault fault_;
  const int at_collect_;
  int collects_ = 0;
  bool done_ = false;
};

std::unique_ptr<DirtyTrackingTarget> Broken(FakeDirtyTracker::Semantics s,
                                            TamperingTracker::Fault fault) {
  absl::StatusOr<std::unique_ptr<DirtyTrackingTarget>> t =
      MakeTarget(s, 1, [fault](FakeDirtyTracker* inner) {
        return std::make_unique<TamperingTracker>(inner, fault, 5);
      });
  EXPECT_TRUE(t.ok()) << t.status();
  return *std::move(t);
}

ConformanceOptions Fixed() {
  ConformanceOptions o;
  o.iterations = 40;
  o.seed = 12345;
  return o;
}

TEST(TrackerConformanceSelfTest, ADroppedPageIsAMiss) {
  auto target = Broken(FakeDirtyTracker::Semantics::kClassic,
                       TamperingTracker::Fault::kDropOnePage);
  ConformanceReport r = RunStampScenario(*target, Fixed());
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(r.error.ok()) << r.error;
  ASSERT_FALSE(r.violations.empty());
  for (const std::string& v : r.violations) {
    EXPECT_THAT(v, HasSubstr("MISSED")) << r.ToString();
  }
  EXPECT_THAT(r.ToString(), HasSubstr("FERRY_CONFORMANCE_SEED=12345"));
}

TEST(TrackerConformanceSelfTest, ADroppedPageIsLostInPreCopy) {
  auto target = Broken(FakeDirtyTracker::Semantics::kClassic,
                       TamperingTracker::Fault::kDropOnePage);
  ConformanceReport r = RunGiveBackScenario(*target, Fixed());
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(absl::StrJoin(r.violations, "\n"), HasSubstr("LOST"))
      << r.ToString();
}

TEST(TrackerConformanceSelfTest, AnExtraPageIsSpurious) {
  auto target = Broken(FakeDirtyTracker::Semantics::kClassic,
                       TamperingTracker::Fault::kAddOnePage);
  ConformanceReport r = RunStampScenario(*target, Fixed());
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(absl::StrJoin(r.violations, "\n"), HasSubstr("spurious"))
      << r.ToString();
}

TEST(TrackerConformanceSelfTest, AReprotectThatDoesNothingIsCaught) {
  auto target = Broken(FakeDirtyTracker::Semantics::kManualProtect,
                       TamperingTracker::Fault::kNoReprotect);
  ConformanceReport r = RunReprotectRewriteScenario(*target, Fixed());
  EXPECT_FALSE(r.ok()) << r.ToString();
}

TEST(TrackerConformanceSelfTest, SameSeedIsSamePages) {
  HostWriterOptions options;
  std::vector<Memslot> slots = {{0, 0, 300 * kPageSize}, {3, 1 << 22, 1000 * kPageSize}};
  EXPECT_EQ(HostWriterTarget::PagesFor(7, slots, 256),
            HostWriterTarget::PagesFor(7, slots, 256));
  size_t total = 0;
  for (uint64_t seed = 1; seed < 50; ++seed) {
    total += HostWriterTarget::PagesFor(seed, slots, 256).size();
  }
  EXPECT_GT(total, 0u);
}

TEST(TrackerConformanceSelfTest, SeedComesFromOptionsOrIsFresh) {
  ConformanceOptions o;
  o.seed = 99;
  EXPECT_EQ(ResolveSeed(o), 99u);
  o.seed = 0;
  EXPECT_NE(ResolveSeed(o), 0u);
}

}  // namespace
}  // namespace ferry::mmu::testing
