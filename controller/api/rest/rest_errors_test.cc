// Error mapping and every kind of bad input: each gets a clear JSON error
// with the right status, and never reaches (or changes) the backend.
#include "absl/strings/str_cat.h"
#include "controller/api/rest/errors.h"
#include "controller/api/rest/rest_test_fixture.h"
#include "gmock/gmock.h"

namespace ferry::rest::testing {
namespace {

using ::testing::HasSubstr;

using ErrorsTest = RestFixture;

TEST_F(ErrorsTest, GrpcCodesMapToHttp) {
  struct Case {
    grpc::StatusCode code;
    int http;
    const char* name;
  };
  const Case cases[] = {
      {grpc::StatusCode::INVALID_ARGUMENT, 400, "INVALID_ARGUMENT"},
      {grpc::StatusCode::FAILED_PRECONDITION, 400, "FAILED_PRECONDITION"},
      {grpc::StatusCode::OUT_OF_RANGE, 400, "OUT_OF_RANGE"},
      {grpc::StatusCode::UNAUTHENTICATED, 401, "UNAUTHENTICATED"},
      {grpc::StatusCode::PERMISSION_DENIED, 403, "PERMISSION_DENIED"},
      {grpc::StatusCode::NOT_FOUND, 404, "NOT_FOUND"},
      {grpc::StatusCode::ALREADY_EXISTS, 409, "ALREADY_EXISTS"},
      {grpc::StatusCode::ABORTED, 409, "ABORTED"},
      {grpc::StatusCode::RESOURCE_EXHAUSTED, 429, "RESOURCE_EXHAUSTED"},
      {grpc::StatusCode::INTERNAL, 500, "INTERNAL"},
      {grpc::StatusCode::DATA_LOSS, 500, "DATA_LOSS"},
      {grpc::StatusCode::UNKNOWN, 500, "UNKNOWN"},
      {grpc::StatusCode::UNIMPLEMENTED, 501, "UNIMPLEMENTED"},
      {grpc::StatusCode::UNAVAILABLE, 503, "UNAVAILABLE"},
      {grpc::StatusCode::DEADLINE_EXCEEDED, 504, "DEADLINE_EXCEEDED"},
  };
  for (const Case& c : cases) {
    fake_.FailWith(grpc::Status(c.code, "said \"why\"\nand what to do"));
    TestResponse r = Call("GET", "/v1/hosts/h1");
    EXPECT_EQ(r.status, c.http) << c.name;
    EXPECT_EQ(r.Header("content-type"), "application/json");
    EXPECT_EQ(r.body, absl::StrCat("{\"error\":{\"code\":", c.http,
                                   ",\"status\":\"", c.name,
                                   "\",\"message\":\"said \\\"why\\\"\\nand "
                                   "what to do\"}}"));
  }
}

TEST_F(ErrorsTest, UnaryDeadlineIs504) {
  RestOptions o = DefaultOptions();
  o.rpc_timeout = absl::Milliseconds(200);
  StartRest(o);
  fake_.get_vm_delay_ms = 3000;
  const absl::Time start = absl::Now();
  TestResponse r = Call("GET", "/v1/vms/slow");
  EXPECT_EQ(r.status, 504) << r.body;
  EXPECT_THAT(r.body, HasSubstr("DEADLINE_EXCEEDED"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

// A bad request must not reach the backend.
class BadInputTest : public RestFixture {
 protected:
  void Expect(const std::string& method, const std::string& target,
              const std::string& body, int status, const std::string& text,
              const std::string& content_type = "application/json") {
    const int calls = fake_.calls();
    auto c = Connect();
    ASSERT_TRUE(c->Send(method, target, body, content_type).ok());
    auto r = c->Read();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->status, status) << method << " " << target << " " << r->body;
    EXPECT_EQ(r->Header("content-type"), "application/json");
    EXPECT_THAT(r->body, HasSubstr(absl::StrCat("{\"error\":{\"code\":", status)));
    EXPECT_THAT(r->body, HasSubstr(text)) << method << " " << target;
    EXPECT_EQ(fake_.calls(), calls) << "reached the backend";
  }
};

TEST_F(BadInputTest, Bodies) {
  Expect("POST", "/v1/hosts/h1:cordon", "{\"reason\":", 400, "not a valid JSON");
  Expect("POST", "/v1/hosts/h1:cordon", "[1,2]", 400, "INVALID_ARGUMENT");
  Expect("POST", "/v1/hosts/h1:cordon", R"({"reasn":"x"})", 400, "reasn");
  Expect("POST", "/v1/vms", R"({"spec":{"vcpuCount":"many"}})", 400,
         "INVALID_ARGUMENT");
  Expect("POST", "/v1/hosts/h1:cordon", "reason=x", 415, "application/json",
         "application/x-www-form-urlencoded");
  Expect("POST", "/v1/hosts/h1:cordon", R"({"name":"h2"})", 400,
         "contradicts the path");
  Expect("POST", "/v1/migrations/m-1:cancel", R"({"id":"m-2"})", 400,
         "contradicts the path");
  Expect("GET", "/v1/hosts/h1", "{}", 400, "takes no request body");
  Expect("POST", "/v1/hosts/h1:cordon?reason=x", "", 400, "JSON body");
  Expect("POST", "/v1/vms", std::string(5000, ' '), 413, "exceeds the limit");
}

TEST_F(BadInputTest, MatchingBodyFieldIsAccepted) {
  TestResponse r = Call("POST", "/v1/hosts/h1:cordon", R"({"name":"h1"})");
  EXPECT_EQ(r.status, 200) << r.body;
}

TEST_F(BadInputTest, QueryValues) {
  Expect("GET", "/v1/hosts?pageSize=abc", "", 400, "pageSize=\\\"abc\\\"");
  Expect("GET", "/v1/hosts?pageSize=99999999999", "", 400, "32-bit");
  Expect("GET", "/v1/hosts?pageSize=1&pageSize=2", "", 400, "more than once");
  Expect("GET", "/v1/hosts?colour=red", "", 400, "unknown query parameter");
  Expect("GET", "/v1/vms/v?name=w", "", 400, "set by the path");
  Expect("DELETE", "/v1/vms/v?resourceVersion=-1", "", 400, "unsigned");
  Expect("GET", "/v1/migrations/m?view=EVERYTHING", "", 400,
         "MIGRATION_VIEW_FULL");
  Expect("GET", "/v1/migrations?phases=MIGRATION_PHASE_PENDING,NOPE", "", 400,
         "NOPE");
  Expect("GET", "/v1/hosts?pageToken=%zz", "", 400, "percent-escape");
}

TEST_F(BadInputTest, RoutesAndMethods) {
  Expect("GET", "/v1/nothing", "", 404, "no API route matches GET /v1/nothing");
  Expect("GET", "/v1/hosts/", "", 404, "NOT_FOUND");
  Expect("GET", "/v1/hosts/a/b", "", 404, "NOT_FOUND");
  Expect("GET", "/v1/hosts/h1:explode", "", 404, "NOT_FOUND");
  Expect("GET", "/v1/hosts/bad%zzname", "", 400, "percent-escape");

  auto c = Connect();
  auto r = c->Call("DELETE", "/v1/hosts");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->Header("allow"), "GET");
  r = c->Call("PUT", "/v1/vms/x");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->Header("allow"), "DELETE, GET");
  // The custom verb wins: this is cordon, not GetHost("h1:cordon").
  r = c->Call("GET", "/v1/hosts/h1:cordon");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->Header("allow"), "POST");
  EXPECT_THAT(r->body, HasSubstr("\"code\":405"));
  EXPECT_EQ(fake_.calls(), 0);
}

// Malformed HTTP: answered with a JSON error, then the connection closes.
TEST_F(ErrorsTest, MalformedHttp) {
  struct Case {
    std::string raw;
    int status;
  };
  const Case cases[] = {
      {"GARBAGE\r\n\r\n", 400},
      {"GET /v1/hosts HTTP/2.0\r\nHost: x\r\n\r\n", 505},
      {"GET http://x/v1/hosts HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"GET /v1/hosts HTTP/1.1\r\n\r\n", 400},  // no Host
      {"POST /v1/vms HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", 400},
      {"POST /v1/vms HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
       "Content-Length: 3\r\n\r\n{}", 400},
      {"POST /v1/vms HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
       "2\r\n{}\r\n0\r\n\r\n", 411},
      {"GET /v1/hosts HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400},
      {"GET /v1/hosts HTTP/1.1\r\nHost : x\r\n\r\n", 400},
      {absl::StrCat("GET /v1/hosts HTTP/1.1\r\nHost: x\r\nX-Big: ",
                    std::string(4000, 'a'), "\r\n\r\n"), 431},
  };
  for (const Case& c : cases) {
    auto client = Connect();
    ASSERT_TRUE(client->SendRaw(c.raw).ok());
    auto r = client->Read();
    ASSERT_TRUE(r.ok()) << r.status() << " for " << c.raw.substr(0, 60);
    EXPECT_EQ(r->status, c.status) << c.raw.substr(0, 60) << " -> " << r->body;
    EXPECT_THAT(r->body, HasSubstr("\"error\""));
    EXPECT_EQ(r->Header("connection"), "close");
    EXPECT_TRUE(client->WaitClosed(absl::Seconds(2)));
  }
  EXPECT_EQ(fake_.calls(), 0);
  // And the server still serves.
  EXPECT_EQ(Call("GET", "/v1/hosts").status, 200);
}

TEST(ErrorJsonTest, EscapesControlCharacters) {
  EXPECT_EQ(ErrorJson(400, "INVALID_ARGUMENT", std::string("a\x01\\b", 4)),
            R"({"error":{"code":400,"status":"INVALID_ARGUMENT","message":"a\u0001\\b"}})");
}

}  // namespace
}  // namespace ferry::rest::testing
