#include "kmod/caps.h"

#include <set>

#include "gtest/gtest.h"

namespace ferry::kmod {
namespace {

TEST(CapsTest, NamesComeFromTheKernelMacros) {
  EXPECT_EQ(CapName(Cap::kDirtyLogRing), "KVM_CAP_DIRTY_LOG_RING");
  EXPECT_EQ(CapName(Cap::kManualDirtyLogProtect2),
            "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2");
  EXPECT_EQ(static_cast<int>(Cap::kDirtyLogRing), KVM_CAP_DIRTY_LOG_RING);
  EXPECT_EQ(CapName(static_cast<Cap>(99999)), "KVM_CAP_<unknown>");
}

TEST(CapsTest, AllCapsAreNamedAndUnique) {
  std::set<int> seen;
  for (Cap cap : AllCaps()) {
    EXPECT_NE(CapName(cap), "KVM_CAP_<unknown>") << static_cast<int>(cap);
    EXPECT_TRUE(seen.insert(static_cast<int>(cap)).second)
        << CapName(cap) << " listed twice";
  }
  EXPECT_GE(seen.size(), 30u);
}

}  // namespace
}  // namespace ferry::kmod
