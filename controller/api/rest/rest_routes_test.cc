// Each route reaches the right RPC with the right fields (path, query,
// body), and answers in canonical proto JSON.
#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_split.h"
#include "controller/api/rest/rest_test_fixture.h"
#include "gmock/gmock.h"

namespace ferry::rest::testing {
namespace {

using ::testing::HasSubstr;
using namespace ferry::v1;  // NOLINT: test of ferry.v1 routes

// Parses `json` strictly as T: fails on any non-canonical field name.
template <typename T>
T ParseStrict(const std::string& json) {
  T out;
  google::protobuf::util::JsonParseOptions o;
  o.ignore_unknown_fields = false;
  auto s = google::protobuf::util::JsonStringToMessage(json, &out, o);
  EXPECT_TRUE(s.ok()) << s.ToString() << " in " << json;
  return out;
}

using RoutesTest = RestFixture;

TEST_F(RoutesTest, ListHostsTakesQueryAndAnswersCamelCase) {
  TestResponse r = Call(
      "GET", "/v1/hosts?pageSize=2&pageToken=abc&labelSelector=zone%3Da%2Cgpu");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Header("content-type"), "application/json");
  auto req = fake_.Last<ListHostsRequest>("ListHosts");
  ASSERT_TRUE(req.has_value());
  EXPECT_EQ(req->page_size(), 2);
  EXPECT_EQ(req->page_token(), "abc");
  EXPECT_EQ(req->label_selector(), "zone=a,gpu");
  EXPECT_THAT(r.body, HasSubstr("\"nextPageToken\":\"next-token\""));
  EXPECT_EQ(ParseStrict<ListHostsResponse>(r.body).hosts_size(), 2);
}

TEST_F(RoutesTest, GetHostDecodesPathAndRendersEnumsTimesAndInt64) {
  TestResponse r = Call("GET", "/v1/hosts/host%2Da%3Ab");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(fake_.Last<GetHostRequest>("GetHost")->name(), "host-a:b");
  EXPECT_THAT(r.body, HasSubstr("\"readiness\":\"HOST_READINESS_READY\""));
  EXPECT_THAT(r.body, HasSubstr("\"resourceVersion\":\"42\""));
  EXPECT_THAT(r.body, HasSubstr("\"lastHeartbeatTime\":\"2023-11-14T22:13:20Z\""));
  EXPECT_THAT(r.body, HasSubstr("\"cordonReason\":\"none\""));
  EXPECT_EQ(ParseStrict<Host>(r.body).name(), "host-a:b");
}

TEST_F(RoutesTest, CordonUncordonRegisterHeartbeat) {
  TestResponse r = Call("POST", "/v1/hosts/h1:cordon", R"({"reason":"maint"})");
  ASSERT_EQ(r.status, 200) << r.body;
  auto cordon = fake_.Last<CordonHostRequest>("CordonHost");
  EXPECT_EQ(cordon->name(), "h1");
  EXPECT_EQ(cordon->reason(), "maint");
  EXPECT_TRUE(ParseStrict<Host>(r.body).cordoned());

  r = Call("POST", "/v1/hosts/h1:uncordon");  // no body at all is fine
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(fake_.Last<UncordonHostRequest>("UncordonHost")->name(), "h1");

  r = Call("POST", "/v1/hosts:register",
           R"({"info":{"name":"h9","agentAddress":"10.0.0.9:7070"}})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(fake_.Last<RegisterHostRequest>("RegisterHost")->info().agent_address(),
            "10.0.0.9:7070");
  EXPECT_THAT(r.body, HasSubstr("\"heartbeatInterval\":\"5s\""));

  r = Call("POST", "/v1/hosts/h9:heartbeat",
           R"({"instanceId":"i-1","healthy":true,"migrationIds":["m1","m2"]})");
  ASSERT_EQ(r.status, 200) << r.body;
  auto hb = fake_.Last<HeartbeatRequest>("Heartbeat");
  EXPECT_EQ(hb->host_name(), "h9");
  EXPECT_EQ(hb->instance_id(), "i-1");
  EXPECT_TRUE(hb->healthy());
  EXPECT_EQ(hb->migration_ids_size(), 2);
}

TEST_F(RoutesTest, DrainStreamsNdjsonUpdates) {
  TestResponse r = Call("POST", "/v1/hosts/h1:drain",
                        R"({"maxParallel":2,"policy":{"maxRounds":5}})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Header("transfer-encoding"), "chunked");
  EXPECT_EQ(r.Header("content-type"), "application/x-ndjson");
  auto req = fake_.Last<DrainHostRequest>("DrainHost");
  EXPECT_EQ(req->name(), "h1");
  EXPECT_EQ(req->max_parallel(), 2u);
  EXPECT_EQ(req->policy().max_rounds(), 5u);
  std::vector<std::string> lines =
      absl::StrSplit(r.body, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << r.body;
  EXPECT_EQ(ParseStrict<DrainHostUpdate>(lines[0]).outcome(),
            DRAIN_OUTCOME_STARTED);
  EXPECT_EQ(ParseStrict<DrainHostUpdate>(lines[1]).outcome(),
            DRAIN_OUTCOME_MIGRATED);
}

TEST_F(RoutesTest, VmRoutes) {
  TestResponse r = Call("GET", "/v1/vms?host=h1&pageSize=5&labelSelector=a%3Db");
  ASSERT_EQ(r.status, 200) << r.body;
  auto list = fake_.Last<ListVmsRequest>("ListVms");
  EXPECT_EQ(list->host(), "h1");
  EXPECT_EQ(list->page_size(), 5);
  EXPECT_EQ(list->label_selector(), "a=b");

  r = Call("POST", "/v1/vms",
           R"({"spec":{"name":"vm-1","memoryBytes":"1073741824","vcpuCount":2,)"
           R"("labels":{"app":"db"},"workload":{"kind":"WORKLOAD_KIND_UNIFORM"}},)"
           R"("host":"h1","requestId":"r-1"})");
  ASSERT_EQ(r.status, 200) << r.body;
  auto create = fake_.Last<CreateVmRequest>("CreateVm");
  EXPECT_EQ(create->spec().memory_bytes(), 1073741824u);
  EXPECT_EQ(create->spec().labels().at("app"), "db");
  EXPECT_EQ(create->spec().workload().kind(), WORKLOAD_KIND_UNIFORM);
  EXPECT_EQ(create->request_id(), "r-1");
  EXPECT_THAT(r.body, HasSubstr("\"memoryBytes\":\"1073741824\""));

  r = Call("GET", "/v1/vms/vm-1");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(fake_.Last<GetVmRequest>("GetVm")->name(), "vm-1");
  EXPECT_THAT(r.body, HasSubstr("\"phase\":\"VM_PHASE_RUNNING\""));

  r = Call("DELETE", "/v1/vms/vm-1?resourceVersion=7");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "{}");
  auto del = fake_.Last<DeleteVmRequest>("DeleteVm");
  EXPECT_EQ(del->name(), "vm-1");
  EXPECT_EQ(del->resource_version(), 7u);
}

TEST_F(RoutesTest, MigrationRoutes) {
  TestResponse r = Call(
      "GET",
      "/v1/migrations?vmName=vm-1&host=h&phases=MIGRATION_PHASE_PENDING&"
      "phases=MIGRATION_PHASE_FAILED,MIGRATION_PHASE_CANCELLED&"
      "view=MIGRATION_VIEW_FULL&page_size=3");
  ASSERT_EQ(r.status, 200) << r.body;
  auto list = fake_.Last<ListMigrationsRequest>("ListMigrations");
  EXPECT_EQ(list->vm_name(), "vm-1");
  EXPECT_EQ(list->host(), "h");
  ASSERT_EQ(list->phases_size(), 3);
  EXPECT_EQ(list->phases(2), MIGRATION_PHASE_CANCELLED);
  EXPECT_EQ(list->view(), MIGRATION_VIEW_FULL);
  EXPECT_EQ(list->page_size(), 3);  // proto names are accepted too

  r = Call("POST", "/v1/migrations",
           R"({"vmName":"vm-1","targetHost":"h2",)"
           R"("policy":{"maxDowntime":"0.300s","autoConverge":true}})");
  ASSERT_EQ(r.status, 200) << r.body;
  auto create = fake_.Last<CreateMigrationRequest>("CreateMigration");
  EXPECT_EQ(create->target_host(), "h2");
  EXPECT_EQ(create->policy().max_downtime().nanos(), 300000000);
  EXPECT_TRUE(create->policy().auto_converge());
  EXPECT_THAT(r.body, HasSubstr("\"pendingReason\":\"PENDING_REASON_NO_CAPACITY\""));

  r = Call("GET", "/v1/migrations/m-7?view=MIGRATION_VIEW_BASIC");
  ASSERT_EQ(r.status, 200) << r.body;
  auto get = fake_.Last<GetMigrationRequest>("GetMigration");
  EXPECT_EQ(get->id(), "m-7");
  EXPECT_EQ(get->view(), MIGRATION_VIEW_BASIC);

  r = Call("POST", "/v1/migrations/m-7:cancel", R"({"reason":"user"})");
  ASSERT_EQ(r.status, 200) << r.body;
  auto cancel = fake_.Last<CancelMigrationRequest>("CancelMigration");
  EXPECT_EQ(cancel->id(), "m-7");
  EXPECT_EQ(cancel->reason(), "user");
  EXPECT_THAT(r.body, HasSubstr("\"cancelRequested\":true"));
}

TEST_F(RoutesTest, WatchDeliversSeveralChunksThenEnds) {
  fake_.watch_messages = 4;
  auto c = Connect();
  ASSERT_TRUE(c->Send("GET", "/v1/migrations/m-3:watch").ok());
  auto head = c->ReadHead(absl::Seconds(5));
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->Header("transfer-encoding"), "chunked");
  std::vector<Migration> seen;
  while (true) {
    auto chunk = c->ReadChunk(absl::Seconds(5));
    ASSERT_TRUE(chunk.ok()) << chunk.status();
    if (chunk->empty()) break;
    // One record per chunk, each a complete NDJSON line.
    ASSERT_EQ(chunk->back(), '\n');
    seen.push_back(ParseStrict<Migration>(chunk->substr(0, chunk->size() - 1)));
  }
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[0].phase(), MIGRATION_PHASE_PREPARING);
  EXPECT_EQ(seen[3].phase(), MIGRATION_PHASE_SUCCEEDED);
  EXPECT_EQ(fake_.Last<WatchMigrationRequest>("WatchMigration")->id(), "m-3");
  // The connection stays usable after a finished stream.
  auto next = c->Call("GET", "/v1/hosts/h1");
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->status, 200);
}

TEST_F(RoutesTest, StreamFailingAtOnceGetsARealStatus) {
  fake_.FailWith(grpc::Status(grpc::StatusCode::NOT_FOUND, "no migration m-9"));
  TestResponse r = Call("GET", "/v1/migrations/m-9:watch");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body,
            R"({"error":{"code":404,"status":"NOT_FOUND","message":"no migration m-9"}})");
}

TEST_F(RoutesTest, StreamFailingMidwayEndsWithAnErrorLine) {
  fake_.watch_fail_after = 2;
  TestResponse r = Call("GET", "/v1/migrations/m-4:watch");
  ASSERT_EQ(r.status, 200);  // the status line went out with record 1
  std::vector<std::string> lines =
      absl::StrSplit(r.body, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << r.body;
  EXPECT_EQ(ParseStrict<Migration>(lines[1]).phase(),
            MIGRATION_PHASE_TRANSFERRING);
  EXPECT_EQ(lines[2],
            R"({"error":{"code":409,"status":"ABORTED","message":"store write conflict"}})");
}

TEST_F(RoutesTest, EventsQuery) {
  TestResponse r = Call(
      "GET",
      "/v1/events?afterSequence=5&objectKind=OBJECT_KIND_VM&objectName=vm-1&"
      "minSeverity=EVENT_SEVERITY_WARNING&pageSize=10&pageToken=t");
  ASSERT_EQ(r.status, 200) << r.body;
  auto req = fake_.Last<ListEventsRequest>("ListEvents");
  EXPECT_EQ(req->after_sequence(), 5u);
  EXPECT_EQ(req->object_kind(), OBJECT_KIND_VM);
  EXPECT_EQ(req->object_name(), "vm-1");
  EXPECT_EQ(req->min_severity(), EVENT_SEVERITY_WARNING);
  EXPECT_EQ(req->page_size(), 10);
  EXPECT_EQ(req->page_token(), "t");
  EXPECT_THAT(r.body, HasSubstr("\"attributes\":{\"from\":\"TRANSFERRING\"}"));
  EXPECT_THAT(r.body, HasSubstr("\"objectKind\":\"OBJECT_KIND_VM\""));
}

}  // namespace
}  // namespace ferry::rest::testing
