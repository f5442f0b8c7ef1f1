// Golden output of the table, wide, json, yaml and name formats, describe
// and the progress printer, on the records of test_fixtures.
#include "cli/output.h"

#include <sstream>

#include "cli/describe.h"
#include "cli/progress.h"
#include "cli/test_fixtures.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"

namespace ferry::cli {
namespace {

using testing::Db1;
using testing::Dur;
using testing::kNow;
using testing::Mig1;
using testing::Mig2;
using testing::Mig3;
using testing::NodeA;
using testing::NodeB;
using testing::Ts;
using testing::Web1;

TEST(RenderTable, PadsAllButTheLastColumn) {
  EXPECT_EQ(RenderTable({{"A", "BB", "C"}, {"long", "x", ""}}),
            "A      BB   C\n"
            "long   x\n");
}

TEST(ParseOutputFormat, KnownAndUnknown) {
  EXPECT_EQ(*ParseOutputFormat(""), OutputFormat::kTable);
  EXPECT_EQ(*ParseOutputFormat("wide"), OutputFormat::kWide);
  EXPECT_EQ(*ParseOutputFormat("name"), OutputFormat::kName);
  EXPECT_EQ(ParseOutputFormat("xml").status().message(),
            "unknown output format \"xml\": use table, wide, json, yaml or name");
}

TEST(Hosts, TableAndWide) {
  EXPECT_EQ(FormatHosts({NodeA(), NodeB()}, OutputFormat::kTable, false, kNow),
            "NAME     STATUS                     VMS   CPU    MEMORY       AGE\n"
            "node-a   Ready                      2     6/16   5GiB/64GiB   2d3h\n"
            "node-b   Ready,SchedulingDisabled   0     0/8    0B/32GiB     45s\n");
  EXPECT_EQ(
      FormatHosts({NodeA(), NodeB()}, OutputFormat::kWide, false, kNow),
      "NAME     STATUS                     VMS   CPU    MEMORY       AGE    "
      "SCHEDULED-MEM   AGENT           MIGRATION-ADDR   VERSION   BACKENDS   "
      "HEARTBEAT\n"
      "node-a   Ready                      2     6/16   5GiB/64GiB   2d3h   "
      "6GiB            10.0.0.1:7401   10.0.1.1:7402    0.3.0     kvm,soft   "
      "3s ago\n"
      "node-b   Ready,SchedulingDisabled   0     0/8    0B/32GiB     45s    "
      "0B              10.0.0.2:7401   -                0.3.0     soft       "
      "never\n");
}

TEST(Vms, TableAndWide) {
  EXPECT_EQ(FormatVms({Web1(), Db1()}, OutputFormat::kTable, false, kNow),
            "NAME    PHASE     HOST     VCPUS   MEMORY   DIRTY-RATE   AGE\n"
            "web-1   RUNNING   node-a   2       1GiB     95MiB/s      5m3s\n"
            "db-1    PENDING   -        4       4GiB     0B/s         120m\n");
  EXPECT_EQ(FormatVms({Web1(), Db1()}, OutputFormat::kWide, false, kNow),
            "NAME    PHASE     HOST     VCPUS   MEMORY   DIRTY-RATE   AGE    "
            "BACKEND   WORKLOAD           MIGRATION   SELFCHECK-ERRORS   UID\n"
            "web-1   RUNNING   node-a   2       1GiB     95MiB/s      5m3s   "
            "kvm       uniform@100MiB/s   -           0                  "
            "uid-web-1\n"
            "db-1    PENDING   -        4       4GiB     0B/s         120m   "
            "-         -                  -           0                  "
            "uid-db-1\n");
}

TEST(Migrations, TableAndWide) {
  EXPECT_EQ(
      FormatMigrations({Mig1(), Mig2(), Mig3()}, OutputFormat::kTable, false,
                       kNow),
      "ID      VM      SOURCE   TARGET      PHASE          PROGRESS   AGE\n"
      "mig-1   web-1   node-a   node-b      TRANSFERRING   75%        12s\n"
      "mig-2   db-1    node-a   <pending>   PENDING        -          3m\n"
      "mig-3   web-1   node-b   node-a      SUCCEEDED      100%       60m\n");
  EXPECT_EQ(
      FormatMigrations({Mig1(), Mig2(), Mig3()}, OutputFormat::kWide, false,
                       kNow),
      "ID      VM      SOURCE   TARGET      PHASE          PROGRESS   AGE   "
      "ROUND   REMAINING   BANDWIDTH   DOWNTIME   REASON\n"
      "mig-1   web-1   node-a   node-b      TRANSFERRING   75%        12s   "
      "2       256MiB      1GiB/s      ~35ms      -\n"
      "mig-2   db-1    node-a   <pending>   PENDING        -          3m    "
      "-       -           -           -          NO_CAPACITY\n"
      "mig-3   web-1   node-b   node-a      SUCCEEDED      100%       60m   "
      "-       -           -           42ms       -\n");
}

TEST(Json, SingleObjectKeepsFieldOrder) {
  EXPECT_EQ(FormatMigrations({Mig2()}, OutputFormat::kJson, true, kNow),
            "{\n"
            "  \"id\": \"mig-2\",\n"
            "  \"vmName\": \"db-1\",\n"
            "  \"sourceHost\": \"node-a\",\n"
            "  \"phase\": \"MIGRATION_PHASE_PENDING\",\n"
            "  \"pendingReason\": \"PENDING_REASON_NO_CAPACITY\",\n"
            "  \"pendingMessage\": \"no host has 4GiB free\",\n"
            "  \"createTime\": \"2027-01-15T07:57:00Z\"\n"
            "}\n");
}

TEST(Json, ListIsItems) {
  EXPECT_EQ(FormatVms({Db1()}, OutputFormat::kJson, false, kNow),
            "{\n"
            "  \"items\": [\n"
            "    {\n"
            "      \"spec\": {\n"
            "        \"name\": \"db-1\",\n"
            "        \"memoryBytes\": \"4294967296\",\n"
            "        \"vcpuCount\": 4\n"
            "      },\n"
            "      \"status\": {\n"
            "        \"phase\": \"VM_PHASE_PENDING\"\n"
            "      },\n"
            "      \"uid\": \"uid-db-1\",\n"
            "      \"createTime\": \"2027-01-15T06:00:00Z\"\n"
            "    }\n"
            "  ]\n"
            "}\n");
  EXPECT_EQ(FormatHosts({}, OutputFormat::kJson, false, kNow),
            "{\n  \"items\": []\n}\n");
}

TEST(Json, HostRoundTripsThroughTheParser) {
  std::string json = FormatHosts({NodeA()}, OutputFormat::kJson, true, kNow);
  v1::Host back;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json, &back).ok());
  EXPECT_EQ(back.SerializeAsString(), NodeA().SerializeAsString());
}

TEST(Yaml, SingleAndList) {
  EXPECT_EQ(FormatHosts({NodeB()}, OutputFormat::kYaml, true, kNow),
            "cordonReason: disk swap\n"
            "cordoned: true\n"
            "info:\n"
            "  agentAddress: \"10.0.0.2:7401\"\n"
            "  agentVersion: \"0.3.0\"\n"
            "  backends:\n"
            "  - VM_BACKEND_SOFT\n"
            "  capacity:\n"
            "    memoryBytes: \"34359738368\"\n"
            "    vcpus: 8\n"
            "  name: node-b\n"
            "name: node-b\n"
            "readiness: HOST_READINESS_READY\n"
            "registerTime: \"2027-01-15T07:59:15Z\"\n"
            "resourceVersion: \"2\"\n");
  EXPECT_EQ(FormatVms({Db1()}, OutputFormat::kYaml, false, kNow),
            "items:\n"
            "- createTime: \"2027-01-15T06:00:00Z\"\n"
            "  spec:\n"
            "    memoryBytes: \"4294967296\"\n"
            "    name: db-1\n"
            "    vcpuCount: 4\n"
            "  status:\n"
            "    phase: VM_PHASE_PENDING\n"
            "  uid: uid-db-1\n");
}

TEST(Name, KindSlashName) {
  EXPECT_EQ(FormatMigrations({Mig1(), Mig2()}, OutputFormat::kName, false, kNow),
            "migration/mig-1\nmigration/mig-2\n");
  EXPECT_EQ(FormatVms({Web1()}, OutputFormat::kName, false, kNow), "vm/web-1\n");
}

TEST(Describe, Host) {
  EXPECT_EQ(DescribeHost(NodeA(), {Web1()}, kNow),
            "Name:                node-a\n"
            "Status:              Ready\n"
            "Labels:              zone=a\n"
            "Agent:               10.0.0.1:7401\n"
            "Migration address:   10.0.1.1:7402\n"
            "Agent version:       0.3.0\n"
            "Protocol:            1-1\n"
            "Backends:            kvm,soft\n"
            "Registered:          2027-01-13T05:00:00Z (2d3h ago)\n"
            "Last heartbeat:      2027-01-15T07:59:57Z (3s ago)\n"
            "Resources:\n"
            "  Capacity:          cpu 16, memory 64GiB, vms 0\n"
            "  Allocated:         cpu 6, memory 5GiB, vms 2\n"
            "  Scheduled:         cpu 6, memory 6GiB, vms 3\n"
            "VMs (1):\n"
            "  NAME    PHASE     VCPUS   MEMORY   DIRTY-RATE   MIGRATION\n"
            "  web-1   RUNNING   2       1GiB     95MiB/s      -\n");
}

TEST(Describe, MigrationWithTransitionsHistoryAndResult) {
  EXPECT_EQ(
      DescribeMigration(Mig3(), kNow),
      "ID:                  mig-3\n"
      "VM:                  web-1 (uid uid-web-1)\n"
      "Source:              node-b\n"
      "Target:              node-a\n"
      "Requested target:    node-a\n"
      "Phase:               SUCCEEDED\n"
      "Created:             2027-01-15T07:00:00Z (60m ago)\n"
      "Started:             2027-01-15T07:00:01Z (59m ago)\n"
      "Ended:               2027-01-15T07:00:09Z (59m ago)\n"
      "Requested policy:    streams 4\n"
      "Policy:              max-downtime 50ms, streams 4, auto-converge on, "
      "compression lz4\n"
      "Transitions:\n"
      "  PENDING        07:00:00.000\n"
      "  PREPARING      07:00:00.500 +500ms\n"
      "  TRANSFERRING   07:00:01.000 +500ms\n"
      "  SWITCHOVER     07:00:08.000 +7s\n"
      "  FINISHING      07:00:08.100 +100ms\n"
      "  SUCCEEDED      07:00:08.400 +300ms\n"
      "Progress history (3 samples, 2 rounds):\n"
      "  ROUND   ELAPSED   REMAINING   DIRTY-RATE   BANDWIDTH   EXP-DOWNTIME   "
      "THROTTLE\n"
      "  0       4s        300MiB      50MiB/s      500MiB/s    40ms           "
      "0%\n"
      "  1       6s        20MiB       50MiB/s      500MiB/s    40ms           "
      "0%\n"
      "Result:\n"
      "  Outcome:           SUCCEEDED\n"
      "  VM host:           node-a\n"
      "  Downtime:          42ms\n"
      "  Total time:        8.4s\n"
      "  Rounds:            2\n"
      "  Sent:              1.1GiB (281600 pages)\n"
      "  Memory verified:   yes\n");
}

TEST(Describe, PendingMigrationAndEvents) {
  std::string d = DescribeMigration(Mig2(), kNow);
  EXPECT_NE(d.find("Pending:             NO_CAPACITY: no host has 4GiB free\n"),
            std::string::npos);
  EXPECT_NE(d.find("Transitions:\n  <none>\n"), std::string::npos);
  std::vector<v1::Event> events;
  for (int i = 0; i < 12; ++i) {
    v1::Event e;
    e.set_sequence(i + 1);
    *e.mutable_time() = Ts(kNow - absl::Seconds(120 - i));
    e.set_severity(i == 11 ? v1::EVENT_SEVERITY_WARNING : v1::EVENT_SEVERITY_INFO);
    e.set_reason("MigrationPhaseChanged");
    e.set_message(absl::StrCat("step ", i));
    events.push_back(e);
  }
  std::string ev = DescribeEvents(events, kNow);
  // Only the last 10, oldest first.
  EXPECT_EQ(ev.find("step 1\n"), std::string::npos);
  EXPECT_NE(ev.find("  118s   Normal    MigrationPhaseChanged   step 2\n"),
            std::string::npos) << ev;
  EXPECT_NE(ev.find("  109s   Warning   MigrationPhaseChanged   step 11\n"),
            std::string::npos) << ev;
  EXPECT_EQ(DescribeEvents({}, kNow), "Events:              <none>\n");
}

TEST(Progress, PlainLinesOnRoundChangeOrInterval) {
  std::ostringstream out;
  ProgressPrinter p(&out, false, absl::Seconds(5));
  v1::Migration m = Mig1();
  absl::Time t = kNow;
  p.OnUpdate(m, t);
  p.OnUpdate(m, t + absl::Seconds(1));  // Same round, too soon: nothing.
  p.OnUpdate(m, t + absl::Seconds(6));  // Interval passed: a line.
  m.mutable_progress()->set_round(3);
  p.OnUpdate(m, t + absl::Seconds(7));  // New round: a line.
  p.Finish();
  EXPECT_EQ(out.str(),
            "TRANSFERRING 75%  round 2  sent 900MiB  remaining 256MiB  dirty "
            "100MiB/s  bw 1GiB/s  downtime ~35ms  ETA 1s\n"
            "TRANSFERRING 75%  round 2  sent 900MiB  remaining 256MiB  dirty "
            "100MiB/s  bw 1GiB/s  downtime ~35ms  ETA 0s\n"
            "TRANSFERRING 75%  round 3  sent 900MiB  remaining 256MiB  dirty "
            "100MiB/s  bw 1GiB/s  downtime ~35ms  ETA 0s\n");
}

TEST(Progress, TtyRedrawsInPlace) {
  std::ostringstream out;
  ProgressPrinter p(&out, true, absl::Seconds(5));
  p.OnUpdate(Mig2(), kNow);
  p.OnUpdate(Mig1(), kNow + absl::Seconds(1));
  p.Finish();
  EXPECT_EQ(out.str(),
            "\r\033[K[--------------------] PENDING  no host has 4GiB free"
            "\r\033[K[###############-----] TRANSFERRING 75%  round 2  sent "
            "900MiB  remaining 256MiB  dirty 100MiB/s  bw 1GiB/s  downtime "
            "~35ms  ETA 1s\n");
}

TEST(Progress, Summaries) {
  EXPECT_EQ(MigrationSummary(Mig3()),
            "migration mig-3 SUCCEEDED\n"
            "  vm          web-1 on node-a\n"
            "  total time  8.4s\n"
            "  downtime    42ms\n"
            "  bytes sent  1.1GiB (281600 pages)\n"
            "  rounds      2\n"
            "  verified    yes\n");
  v1::Migration f = Mig1();
  f.set_phase(v1::MIGRATION_PHASE_FAILED);
  f.mutable_result()->set_phase(v1::MIGRATION_PHASE_FAILED);
  f.mutable_result()->set_failure(v1::MIGRATION_FAILURE_NOT_CONVERGING);
  f.mutable_result()->set_message("dirty rate above bandwidth");
  f.mutable_result()->set_vm_host("node-a");
  *f.mutable_result()->mutable_total_time() = Dur(absl::Seconds(30));
  f.mutable_result()->set_rounds(30);
  f.mutable_result()->set_max_throttle_percent(80);
  EXPECT_EQ(MigrationSummary(f),
            "migration mig-1 FAILED (NOT_CONVERGING): dirty rate above "
            "bandwidth\n"
            "  vm          web-1 on node-a\n"
            "  total time  30s\n"
            "  downtime    -\n"
            "  bytes sent  0B (0 pages)\n"
            "  rounds      30\n"
            "  throttle    max 80%\n");
}

TEST(Progress, EarlyRoundZeroSampleIsNotDone) {
  // What a real agent sends first: total only, no harvest, a year of
  // expected downtime meaning "unknown".
  v1::Migration m = Mig1();
  v1::MigrationProgress* p = m.mutable_progress();
  p->Clear();
  p->set_total_bytes(256ull << 20);
  *p->mutable_expected_downtime() = Dur(absl::Hours(24 * 365));
  EXPECT_EQ(ProgressPercent(m), 0);
  EXPECT_EQ(ProgressPrinter::Line(m, std::nullopt),
            "TRANSFERRING 0%  round 0  sent 0B  remaining 256MiB  dirty 0B/s  "
            "bw 0B/s  downtime --  ETA --");
  p->set_pages_sent(16384);  // 64MiB of data and 64MiB of zero pages.
  p->set_zero_pages(16384);
  EXPECT_EQ(ProgressPercent(m), 50);
  EXPECT_EQ(MigrationRow(m, true, kNow)[10], "-");  // DOWNTIME column.
}

TEST(Progress, DrainLine) {
  v1::DrainHostUpdate u;
  u.set_vm_name("web-1");
  u.set_migration_id("mig-1");
  u.set_outcome(v1::DRAIN_OUTCOME_MIGRATED);
  u.set_vms_remaining(1);
  EXPECT_EQ(DrainLine(u),
            "web-1                MIGRATED  migration mig-1  (1 remaining)");
}

}  // namespace
}  // namespace ferry::cli
