#include "controller/scheduler/queue.h"

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "controller/scheduler/test_cluster.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::controller::scheduler {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::TestCluster;

// "m1->h2" for admitted, "m3:<message>" for waiting.
std::vector<std::string> Summarize(const std::vector<Decision>& ds) {
  std::vector<std::string> out;
  for (const Decision& d : ds) {
    out.push_back(d.admitted ? absl::StrCat(d.migration_id, "->", d.target_host)
                             : absl::StrCat(d.migration_id, ":", d.message));
  }
  return out;
}

TEST(QueueTest, OutboundLimitHoldsTheRestWithAReason) {
  TestCluster c;
  for (const char* h : {"h1", "h2", "h3", "h4"}) c.Host(h);
  for (int i = 1; i <= 4; ++i) {
    c.Vm(absl::StrCat("v", i), "h1");
    c.Migration(absl::StrCat("m", i), absl::StrCat("v", i), "h1", i);
  }
  auto ds = ScheduleMigrations(c.snapshot(), Limits());
  EXPECT_THAT(Summarize(ds),
              ElementsAre("m1->h2", "m2->h3",
                          "m3:source host h1 has 2/2 outbound migrations",
                          "m4:source host h1 has 2/2 outbound migrations"));
  EXPECT_EQ(ds[2].reason, v1::PENDING_REASON_CONCURRENCY_LIMIT);
}

TEST(QueueTest, ClusterLimitAndInFlightCount) {
  TestCluster c;
  for (int i = 0; i < 8; ++i) {
    c.Host(absl::StrCat("h", i));
    c.Vm(absl::StrCat("v", i), absl::StrCat("h", i));
  }
  // One already running from h0 to h7.
  c.Migration("m-run", "v0", "h0", 0, v1::MIGRATION_PHASE_TRANSFERRING, "h7");
  for (int i = 1; i <= 6; ++i) {
    c.Migration(absl::StrCat("m", i), absl::StrCat("v", i), absl::StrCat("h", i), i);
  }
  auto ds = ScheduleMigrations(c.snapshot(), Limits());
  ASSERT_EQ(ds.size(), 6u);
  int admitted = std::count_if(ds.begin(), ds.end(),
                               [](const Decision& d) { return d.admitted; });
  EXPECT_EQ(admitted, 4);  // 5 cluster-wide, one already in flight
  EXPECT_EQ(ds[4].message, "cluster has 5/5 migrations in flight");
  EXPECT_EQ(ds[5].message, "cluster has 5/5 migrations in flight");
}

TEST(QueueTest, FifoWithDeterministicTieBreak) {
  TestCluster c;
  for (const char* h : {"h1", "h2", "h3"}) c.Host(h);
  for (const char* id : {"c", "a", "d", "b"}) {
    c.Vm(absl::StrCat("vm-", id), "h1");
    c.Migration(id, absl::StrCat("vm-", id), "h1", /*t=*/id[0] == 'd' ? 0 : 5);
  }
  auto first = Summarize(ScheduleMigrations(c.snapshot(), Limits()));
  // d is oldest; a, b, c share a timestamp and go by id.
  EXPECT_THAT(first[0], HasSubstr("d->"));
  EXPECT_THAT(first[1], HasSubstr("a->"));
  EXPECT_THAT(first[2], HasSubstr("b:"));
  EXPECT_THAT(first[3], HasSubstr("c:"));
  // Input order does not matter.
  std::mt19937 rng(7);
  for (int i = 0; i < 5; ++i) {
    auto& ms = c.mutable_snapshot().migrations;
    std::shuffle(ms.begin(), ms.end(), rng);
    EXPECT_EQ(Summarize(ScheduleMigrations(c.snapshot(), Limits())), first);
  }
}

TEST(QueueTest, BlockedHeadDoesNotStallOthers) {
  TestCluster c;
  c.Host("h1", 256);
  c.Host("h2", 64);
  c.Vm("huge", "h1", 128, 8);
  c.Vm("small", "h1", 2, 1);
  c.Migration("m1", "huge", "h1", 1);
  c.Migration("m2", "small", "h1", 2);
  auto ds = ScheduleMigrations(c.snapshot(), Limits());
  EXPECT_EQ(ds[0].reason, v1::PENDING_REASON_NO_CAPACITY);
  EXPECT_EQ(ds[0].message,
            "0/2 hosts can take vm 'huge' (128 GiB, 8 vCPUs): 1 is the source, "
            "1 insufficient memory");
  EXPECT_TRUE(ds[1].admitted);
}

TEST(QueueTest, VmNotReadyCases) {
  TestCluster c;
  c.Host("h1");
  c.Host("h2");
  c.Host("h3").set_readiness(v1::HOST_READINESS_UNKNOWN);
  c.Vm("paused", "h1").mutable_status()->set_phase(v1::VM_PHASE_PAUSED);
  c.Vm("busy", "h1");
  c.Vm("twice", "h1");
  c.Vm("stranded", "h3");
  c.Migration("m0", "busy", "h1", 0, v1::MIGRATION_PHASE_SWITCHOVER, "h2");
  c.Migration("m1", "paused", "h1", 1);
  c.Migration("m2", "busy", "h1", 2);
  c.Migration("m3", "ghost", "h1", 3);
  c.Migration("m4", "twice", "h1", 4);
  c.Migration("m5", "twice", "h1", 5);
  c.Migration("m6", "stranded", "h3", 6);
  c.Migration("m7", "paused", "h1", 7, v1::MIGRATION_PHASE_FAILED, "h2");  // ignored
  auto ds = ScheduleMigrations(c.snapshot(), Limits());
  EXPECT_THAT(
      Summarize(ds),
      ElementsAre("m1:vm 'paused' is VM_PHASE_PAUSED; only a RUNNING VM migrates live",
                  "m2:vm 'busy' is already migrating (m0)",
                  "m3:vm 'ghost' does not exist", "m4->h2",
                  "m5:vm 'twice' is already migrating (m4)",
                  "m6:source host h3 is HOST_READINESS_UNKNOWN"));
  for (int i : {0, 1, 2, 4, 5}) {
    EXPECT_EQ(ds[i].reason, v1::PENDING_REASON_VM_NOT_READY) << i;
  }
}

TEST(QueueTest, InboundLimitAndRequestedTarget) {
  TestCluster c;
  c.Host("h1");
  c.Host("h2");
  c.Host("h3");
  c.Host("h4", 8, 4);  // small: only fits one 4 GiB VM
  for (int i = 1; i <= 3; ++i) {
    c.Vm(absl::StrCat("a", i), "h1");
    c.Vm(absl::StrCat("b", i), "h3");
  }
  c.Migration("m1", "a1", "h1", 1).set_requested_target_host("h2");
  c.Migration("m2", "b1", "h3", 2).set_requested_target_host("h2");
  c.Migration("m3", "a2", "h1", 3).set_requested_target_host("h2");
  c.Migration("m4", "b2", "h3", 4);
  auto ds = ScheduleMigrations(c.snapshot(), Limits());
  EXPECT_THAT(Summarize(ds),
              ElementsAre("m1->h2", "m2->h2",
                          "m3:requested host h2 cannot take vm 'a2' (4 GiB, 2 "
                          "vCPUs): at inbound migration limit",
                          "m4->h1"));  // h2 full of inbound; h1 beats tiny h4
  EXPECT_EQ(ds[2].reason, v1::PENDING_REASON_CONCURRENCY_LIMIT);
}

}  // namespace
}  // namespace ferry::controller::scheduler
