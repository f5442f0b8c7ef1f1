#include "controller/scheduler/drain.h"

#include <map>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "controller/scheduler/test_cluster.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::controller::scheduler {
namespace {

using ::testing::HasSubstr;
using testing::TestCluster;

// Every wave keeps the per-host and cluster limits.
void ExpectWavesWithinLimits(const DrainPlan& plan, const Limits& limits,
                             uint32_t parallel) {
  std::map<uint32_t, uint32_t> per_wave;
  std::map<std::pair<uint32_t, std::string>, uint32_t> inbound;
  for (const DrainItem& item : plan.items) {
    if (item.action != DrainAction::kMigrate) continue;
    ++per_wave[item.wave];
    ++inbound[{item.wave, item.target_host}];
  }
  for (const auto& [wave, n] : per_wave) {
    EXPECT_LE(n, parallel) << "wave " << wave;
    EXPECT_LE(n, limits.max_cluster) << "wave " << wave;
  }
  for (const auto& [key, n] : inbound) {
    EXPECT_LE(n, limits.max_inbound_per_host) << key.second << " wave " << key.first;
  }
}

TEST(DrainTest, PlansEveryVmLargestFirstInWaves) {
  TestCluster c;
  c.Host("h1");
  c.Host("h2");
  c.Host("h3");
  c.Vm("a", "h1", 2);
  c.Vm("b", "h1", 16);
  c.Vm("c", "h1", 8);
  c.Vm("d", "h1", 4);
  c.Vm("e", "h1", 4);
  c.Vm("other", "h2", 10);
  Limits limits;
  auto plan = PlanDrain(c.snapshot(), "h1", limits);
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::vector<std::string> order;
  for (const auto& item : plan->items) {
    order.push_back(absl::StrCat(item.vm_name, "->", item.target_host, "@",
                                 item.wave));
  }
  // b (16) to the empty h3, c (8) to h2 (10+8 < 16+8), then by load; two per
  // wave (outbound limit 2).
  EXPECT_THAT(order, ::testing::ElementsAre("b->h3@0", "c->h2@0", "d->h3@1",
                                            "e->h2@1", "a->h3@2"));
  EXPECT_EQ(plan->waves, 3u);
  EXPECT_EQ(plan->summary,
            "drain h1: 5 VMs, 5 to migrate in 3 waves, 0 already migrating, 0 "
            "skipped, 0 unplaceable");
  ExpectWavesWithinLimits(*plan, limits, 2);
}

TEST(DrainTest, ReportsWhatCannotMove) {
  TestCluster c;
  c.Host("h1", 512, 64);
  c.Host("h2");
  c.Host("h3").set_cordoned(true);
  c.Vm("giant", "h1", 100, 4);
  c.Vm("sleepy", "h1").mutable_status()->set_phase(v1::VM_PHASE_PAUSED);
  c.Vm("moving", "h1");
  c.Vm("db-1", "h1", 4, 2, "db");
  c.Vm("db-2", "h1", 4, 2, "db");
  c.Vm("ok", "h1", 1, 1);
  c.Migration("m9", "moving", "h1", 0, v1::MIGRATION_PHASE_TRANSFERRING, "h2");
  auto plan = PlanDrain(c.snapshot(), "h1", Limits());
  ASSERT_TRUE(plan.ok());
  std::map<std::string, DrainItem> by_vm;
  for (const auto& item : plan->items) by_vm[item.vm_name] = item;

  EXPECT_EQ(by_vm["giant"].action, DrainAction::kUnplaceable);
  EXPECT_EQ(by_vm["giant"].reason, v1::PENDING_REASON_NO_CAPACITY);
  EXPECT_EQ(by_vm["giant"].message,
            "0/3 hosts can take vm 'giant' (100 GiB, 4 vCPUs): 1 is the source, "
            "1 cordoned, 1 insufficient memory");
  EXPECT_EQ(by_vm["sleepy"].action, DrainAction::kSkip);
  EXPECT_THAT(by_vm["sleepy"].message, HasSubstr("VM_PHASE_PAUSED"));
  EXPECT_EQ(by_vm["moving"].action, DrainAction::kAlreadyMigrating);
  EXPECT_EQ(by_vm["moving"].migration_id, "m9");
  // Only h2 takes VMs, and it can hold one "db".
  EXPECT_EQ(by_vm["db-1"].action, DrainAction::kMigrate);
  EXPECT_EQ(by_vm["db-2"].action, DrainAction::kUnplaceable);
  EXPECT_EQ(by_vm["db-2"].reason, v1::PENDING_REASON_NO_MATCHING_HOST);
  EXPECT_THAT(by_vm["db-2"].message, HasSubstr("1 anti-affinity conflict"));
  // The drain already has one outbound (m9) in wave 0; h2 already receives
  // one, so wave 0 has one slot on it.
  EXPECT_EQ(by_vm["db-1"].wave, 0u);
  EXPECT_EQ(by_vm["ok"].wave, 1u);
  EXPECT_EQ(plan->summary,
            "drain h1: 6 VMs, 2 to migrate in 2 waves, 1 already migrating, 1 "
            "skipped, 2 unplaceable");
}

TEST(DrainTest, MaxParallelAndClusterLimit) {
  TestCluster c;
  c.Host("h1");
  for (int i = 2; i <= 9; ++i) c.Host(absl::StrCat("h", i));
  for (int i = 0; i < 6; ++i) c.Vm(absl::StrCat("v", i), "h1", 1, 1);
  Limits limits;
  limits.max_outbound_per_host = 4;
  auto one_at_a_time = PlanDrain(c.snapshot(), "h1", limits, 1);
  ASSERT_TRUE(one_at_a_time.ok());
  EXPECT_EQ(one_at_a_time->waves, 6u);
  ExpectWavesWithinLimits(*one_at_a_time, limits, 1);

  // 4 migrations elsewhere leave one cluster slot in wave 0.
  for (int i = 0; i < 4; ++i) {
    c.Vm(absl::StrCat("x", i), absl::StrCat("h", 2 + i), 1, 1);
    c.Migration(absl::StrCat("mx", i), absl::StrCat("x", i),
                absl::StrCat("h", 2 + i), 0, v1::MIGRATION_PHASE_TRANSFERRING,
                absl::StrCat("h", 6 + i));
  }
  auto plan = PlanDrain(c.snapshot(), "h1", limits);
  ASSERT_TRUE(plan.ok());
  int in_wave0 = 0;
  for (const auto& item : plan->items) in_wave0 += item.wave == 0;
  EXPECT_EQ(in_wave0, 1);
  EXPECT_EQ(plan->waves, 3u);  // 1 + 4 + 1
  ExpectWavesWithinLimits(*plan, limits, 4);
}

TEST(DrainTest, UnknownHost) {
  TestCluster c;
  c.Host("h1");
  EXPECT_EQ(PlanDrain(c.snapshot(), "nope", Limits()).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace ferry::controller::scheduler
