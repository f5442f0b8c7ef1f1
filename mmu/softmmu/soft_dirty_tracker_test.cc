#include "mmu/softmmu/soft_dirty_tracker.h"

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "mmu/dirty_set.h"
#include "mmu/softmmu/soft_vcpu.h"
#include "mmu/softmmu/test_util.h"

namespace ferry::mmu::softmmu {
namespace {

class TrackerTest : public ::testing::TestWithParam<bool> {
 protected:
  TrackerTest() : ram_({{0, 0, 256}, {1, 0x100000, 256}}) {
    mmu_ = *ShadowMmu::Create(ram_.slots());
    vcpu_ = std::make_unique<SoftVcpu>(mmu_.get());
  }
  void Touch(uint64_t gpa) {
    uint64_t v = gpa;
    ASSERT_TRUE(vcpu_->Write(gpa, &v, 8).ok());
  }
  GuestRam ram_;
  std::unique_ptr<ShadowMmu> mmu_;
  std::unique_ptr<SoftVcpu> vcpu_;
};

TEST_P(TrackerTest, ReportsPagesWrittenAfterStart) {
  const bool manual = GetParam();
  SoftDirtyTracker t(mmu_.get(), manual);
  EXPECT_EQ(t.mode(), DirtyTrackingMode::kSoftMmu);
  EXPECT_EQ(t.needs_reprotect(), manual);
  Touch(0x5000);  // before Start: not reported
  ASSERT_TRUE(t.Start(ram_.slots()).ok());
  Touch(0x5000);
  Touch(0x100000 + 7 * 4096);
  DirtySet set = DirtySet::ForSlots(ram_.slots());
  auto stats = t.Collect(&set);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->pages, 2u);
  EXPECT_TRUE((*set.Get(0))->Test(5));
  EXPECT_TRUE((*set.Get(1))->Test(7));
  ASSERT_TRUE(t.Reprotect(0, 0, 256).ok());
  ASSERT_TRUE(t.Reprotect(1, 0, 256).ok());
  DirtySet again = DirtySet::ForSlots(ram_.slots());
  EXPECT_EQ(t.Collect(&again)->pages, 0u);
  Touch(0x5008);
  EXPECT_EQ(t.Collect(&again)->pages, 1u);
  ASSERT_TRUE(mmu_->CheckInvariants().ok());
  ASSERT_TRUE(t.Stop().ok());
  EXPECT_FALSE(t.Collect(&again).ok());
}

TEST_P(TrackerTest, RejectsForeignSlots) {
  SoftDirtyTracker t(mmu_.get(), GetParam());
  Memslot bogus = ram_.slots()[0];
  bogus.slot = 42;
  EXPECT_FALSE(t.Start({bogus}).ok());
  DirtySet set = DirtySet::ForSlots(ram_.slots());
  EXPECT_FALSE(t.Collect(&set).ok());  // not started
}

INSTANTIATE_TEST_SUITE_P(Modes, TrackerTest, ::testing::Bool(),
                         [](const auto& info) {
                           return info.param ? "ClearLog" : "GetLog";
                         });

}  // namespace
}  // namespace ferry::mmu::softmmu
