#include <functional>
#include <string>

#include "controller/scheduler/ledger.h"
#include "controller/scheduler/test_cluster.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::controller::scheduler {
namespace {

using ::testing::HasSubstr;
using testing::kGiB;
using testing::TestCluster;

struct Case {
  std::string name;
  // Builds the cluster; the VM to place is "mover" (on h1 unless changed).
  std::function<void(TestCluster&)> setup;
  std::string requested_host;
  // Expect this host, or (if empty) this reason and message fragment.
  std::string want_host;
  v1::PendingReason want_reason = v1::PENDING_REASON_UNSPECIFIED;
  std::string want_message;
};

void ThreeHosts(TestCluster& c) {
  c.Host("h1");
  c.Host("h2");
  c.Host("h3");
}

TEST(PlacementTest, Table) {
  const Case cases[] = {
      {"least loaded wins",
       [](TestCluster& c) {
         ThreeHosts(c);
         c.Vm("a", "h2", 32);
         c.Vm("b", "h3", 8);
       },
       "", "h3", v1::PENDING_REASON_UNSPECIFIED, ""},
      {"tie broken by name",
       [](TestCluster& c) { ThreeHosts(c); }, "", "h2",
       v1::PENDING_REASON_UNSPECIFIED, ""},
      {"dominant share: vCPU-heavy host loses",
       [](TestCluster& c) {
         ThreeHosts(c);
         c.Vm("cpu-hog", "h2", 1, 30);  // 3% memory, 94% vCPU
         c.Vm("mem", "h3", 16, 1);      // 25% memory
       },
       "", "h3", v1::PENDING_REASON_UNSPECIFIED, ""},
      {"never the source",
       [](TestCluster& c) {
         c.Host("h1");
         c.Host("h2", 64, 32);
         c.Vm("big", "h2", 61);
       },
       "", "", v1::PENDING_REASON_NO_CAPACITY,
       "0/2 hosts can take vm 'mover' (4 GiB, 2 vCPUs): 1 is the source, 1 "
       "insufficient memory"},
      {"not ready, unknown and cordoned are skipped",
       [](TestCluster& c) {
         ThreeHosts(c);
         c.Host("h4").set_readiness(v1::HOST_READINESS_UNKNOWN);
         c.mutable_snapshot().hosts[1].set_cordoned(true);
         c.mutable_snapshot().hosts[2].set_readiness(v1::HOST_READINESS_NOT_READY);
       },
       "", "", v1::PENDING_REASON_NO_MATCHING_HOST,
       "1 is the source, 2 not ready, 1 cordoned"},
      {"vCPUs short",
       [](TestCluster& c) {
         c.Host("h1");
         c.Host("h2", 64, 2);
         c.Vm("x", "h2", 1, 1);
       },
       "", "", v1::PENDING_REASON_NO_CAPACITY, "1 insufficient vCPUs"},
      {"anti-affinity steers away",
       [](TestCluster& c) {
         ThreeHosts(c);
         c.mutable_snapshot().vms.clear();
         c.Vm("mover", "h1", 4, 2, "db");
         c.Vm("db-2", "h2", 1, 1, "db");
         c.Vm("web", "h3", 30, 1, "web");
       },
       "", "h3", v1::PENDING_REASON_UNSPECIFIED, ""},
      {"anti-affinity everywhere is no matching host",
       [](TestCluster& c) {
         ThreeHosts(c);
         c.mutable_snapshot().vms.clear();
         c.Vm("mover", "h1", 4, 2, "db");
         c.Vm("db-2", "h2", 1, 1, "db");
         c.Vm("db-3", "h3", 1, 1, "db");
       },
       "", "", v1::PENDING_REASON_NO_MATCHING_HOST, "2 anti-affinity conflict"},
      {"incoming migration is reserved",
       [](TestCluster& c) {
         ThreeHosts(c);
         c.Vm("a", "h3", 8);
         c.Vm("big", "h1", 40);  // moving h1 -> h2: h2 holds 40 GiB for it
         c.Migration("m0", "big", "h1", 1, v1::MIGRATION_PHASE_TRANSFERRING, "h2");
       },
       "", "h3", v1::PENDING_REASON_UNSPECIFIED, ""},
      {"agent-reported allocation counts",
       [](TestCluster& c) {
         ThreeHosts(c);
         c.mutable_snapshot().hosts[1].mutable_info()->mutable_allocated()
             ->set_memory_bytes(62 * kGiB);
         c.mutable_snapshot().hosts[2].mutable_info()->mutable_allocated()
             ->set_memory_bytes(61 * kGiB);
       },
       "", "", v1::PENDING_REASON_NO_CAPACITY, "2 insufficient memory"},
      {"backend must be supported",
       [](TestCluster& c) {
         ThreeHosts(c);
         c.mutable_snapshot().vms.clear();
         c.Vm("mover", "h1").mutable_spec()->set_backend(v1::VM_BACKEND_KVM);
         c.mutable_snapshot().hosts[1].mutable_info()->add_backends(v1::VM_BACKEND_SOFT);
       },
       "", "h3", v1::PENDING_REASON_UNSPECIFIED, ""},
      {"requested host honoured",
       [](TestCluster& c) {
         ThreeHosts(c);
         c.Vm("a", "h3", 40);
       },
       "h3", "h3", v1::PENDING_REASON_UNSPECIFIED, ""},
      {"requested host cordoned",
       [](TestCluster& c) {
         ThreeHosts(c);
         c.mutable_snapshot().hosts[2].set_cordoned(true);
       },
       "h3", "", v1::PENDING_REASON_NO_MATCHING_HOST,
       "requested host h3 cannot take vm 'mover' (4 GiB, 2 vCPUs): cordoned"},
      {"requested host unknown",
       [](TestCluster& c) { ThreeHosts(c); }, "h9", "",
       v1::PENDING_REASON_NO_MATCHING_HOST, "requested host h9 is not registered"},
      {"inbound limit is a concurrency wait",
       [](TestCluster& c) {
         c.Host("h1");
         c.Host("h2");
         c.Vm("p", "h1", 1);
         c.Vm("q", "h1", 1);
         c.Migration("m1", "p", "h1", 1, v1::MIGRATION_PHASE_PREPARING, "h2");
         c.Migration("m2", "q", "h1", 2, v1::MIGRATION_PHASE_TRANSFERRING, "h2");
       },
       "", "", v1::PENDING_REASON_CONCURRENCY_LIMIT,
       "1 at inbound migration limit"},
  };
  for (const Case& tc : cases) {
    SCOPED_TRACE(tc.name);
    TestCluster c;
    c.Vm("mover", "h1");
    tc.setup(c);
    const v1::Vm* mover = nullptr;
    for (const auto& vm : c.snapshot().vms) {
      if (vm.spec().name() == "mover") mover = &vm;
    }
    ASSERT_NE(mover, nullptr);
    Ledger ledger(c.snapshot(), Limits());
    PlacementRequest req;
    req.vm_name = "mover";
    req.spec = &mover->spec();
    req.source_host = "h1";
    req.requested_host = tc.requested_host;
    req.respect_inbound_limit = true;
    Placement p = ledger.Choose(req);
    EXPECT_EQ(p.host, tc.want_host) << p.message;
    if (tc.want_host.empty()) {
      EXPECT_EQ(p.reason, tc.want_reason) << p.message;
      EXPECT_THAT(p.message, HasSubstr(tc.want_message));
    }
  }
}

TEST(PlacementTest, NewVmHasNoSource) {
  TestCluster c;
  c.Host("h1");
  c.Host("h2");
  c.Vm("a", "h1", 8);
  v1::VmSpec spec;
  spec.set_name("new");
  spec.set_memory_bytes(2 * kGiB);
  spec.set_vcpu_count(1);
  Ledger ledger(c.snapshot(), Limits());
  PlacementRequest req;
  req.vm_name = "new";
  req.spec = &spec;
  Placement p = ledger.Choose(req);
  EXPECT_EQ(p.host, "h2");
  // 2 GiB of 64 = 31250 ppm, 1 of 32 vCPUs = 31250 ppm.
  EXPECT_EQ(p.score_ppm, 31250u);
  // Charged placements count for the next one: h2 now holds 12 GiB > 8.
  spec.set_memory_bytes(12 * kGiB);
  ledger.Commit(spec, "", "h2");
  EXPECT_EQ(ledger.host("h2")->memory_bytes, 12 * kGiB);
  EXPECT_EQ(ledger.host("h2")->inbound, 0u);  // a placement, not a migration
  spec.set_memory_bytes(kGiB);
  EXPECT_EQ(ledger.Choose(req).host, "h1");
}

}  // namespace
}  // namespace ferry::controller::scheduler
