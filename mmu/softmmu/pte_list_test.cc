#include "mmu/softmmu/pte_list.h"

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace ferry::mmu::softmmu {
namespace {

constexpr int kExt = PteListDesc::kExt;

std::set<uint64_t*> Entries(const PteList& l) {
  std::set<uint64_t*> s;
  l.ForEach([&](uint64_t* p) { s.insert(p); });
  return s;
}

size_t DescsFor(size_t n) { return n <= 1 ? 0 : (n + kExt - 1) / kExt; }

// Every count around each block boundary, removing in several orders.
TEST(PteListTest, AddRemoveAtEveryBlockBoundary) {
  std::vector<uint64_t> sptes(5 * kExt + 3);
  std::vector<size_t> sizes = {0, 1, 2, 3};
  for (int k = 1; k <= 4; ++k) {
    for (int d = -1; d <= 1; ++d) sizes.push_back(k * kExt + d);
  }
  for (size_t n : sizes) {
    for (int order = 0; order < 3; ++order) {
      PteList l;
      std::set<uint64_t*> want;
      for (size_t i = 0; i < n; ++i) {
        l.Add(&sptes[i]);
        want.insert(&sptes[i]);
        ASSERT_EQ(l.Count(), i + 1);
        ASSERT_EQ(l.NumDescs(), DescsFor(i + 1)) << "n=" << i + 1;
      }
      ASSERT_EQ(Entries(l), want);
      std::vector<uint64_t*> rm(want.begin(), want.end());
      if (order == 1) std::reverse(rm.begin(), rm.end());
      if (order == 2) std::shuffle(rm.begin(), rm.end(), std::mt19937(n));
      for (uint64_t* p : rm) {
        ASSERT_TRUE(l.Contains(p));
        ASSERT_TRUE(l.Remove(p));
        ASSERT_FALSE(l.Remove(p));
        want.erase(p);
        ASSERT_EQ(Entries(l), want);
        ASSERT_EQ(l.Count(), want.size());
        // Only the head block may be partial: blocks stay minimal.
        ASSERT_EQ(l.NumDescs(), DescsFor(want.size()));
      }
      EXPECT_TRUE(l.empty());
      EXPECT_EQ(l.First(), nullptr);
    }
  }
}

TEST(PteListTest, SingleEntryNeedsNoBlock) {
  uint64_t a = 0, b = 0;
  PteList l;
  l.Add(&a);
  EXPECT_EQ(l.NumDescs(), 0u);
  EXPECT_EQ(l.First(), &a);
  EXPECT_FALSE(l.Remove(&b));
  l.Add(&b);
  EXPECT_EQ(l.NumDescs(), 1u);
  EXPECT_TRUE(l.Remove(&a));
  EXPECT_EQ(l.NumDescs(), 0u);  // folded back
  EXPECT_EQ(l.First(), &b);
}

TEST(PteListTest, MoveAndClear) {
  std::vector<uint64_t> sptes(40);
  PteList a;
  for (auto& s : sptes) a.Add(&s);
  PteList b(std::move(a));
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(b.Count(), 40u);
  b.Clear();
  EXPECT_TRUE(b.empty());
}

}  // namespace
}  // namespace ferry::mmu::softmmu
