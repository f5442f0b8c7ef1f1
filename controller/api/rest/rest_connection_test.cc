// Connection behaviour: keep-alive, pipelining, HTTP/1.0, Expect, a client
// hanging up mid-stream, Stop() with open connections, and a real client.
#include <stdio.h>
#include <unistd.h>

#include <atomic>
#include <iostream>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "controller/api/rest/rest_test_fixture.h"
#include "gmock/gmock.h"

namespace ferry::rest::testing {
namespace {

using ::testing::HasSubstr;

using ConnectionTest = RestFixture;

TEST_F(ConnectionTest, KeepAliveServesManyRequestsOnOneConnection) {
  auto c = Connect();
  for (int i = 0; i < 5; ++i) {
    auto r = c->Call("GET", absl::StrCat("/v1/hosts/h", i));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->Header("connection"), "keep-alive");
    EXPECT_THAT(r->body, HasSubstr(absl::StrCat("\"name\":\"h", i, "\"")));
  }
  // An error response that keeps framing intact keeps the connection too.
  auto r = c->Call("GET", "/v1/nowhere");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 404);
  r = c->Call("POST", "/v1/hosts/h1:cordon", R"({"reason":"after 404"})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200);
}

TEST_F(ConnectionTest, PipelinedRequestsAnswerInOrder) {
  auto c = Connect();
  ASSERT_TRUE(c->SendRaw("GET /v1/hosts/p1 HTTP/1.1\r\nHost: x\r\n\r\n"
                         "POST /v1/hosts/p2:cordon HTTP/1.1\r\nHost: x\r\n"
                         "Content-Type: application/json\r\n"
                         "Content-Length: 14\r\n\r\n{\"reason\":\"r\"}"
                         "GET /v1/hosts/p3 HTTP/1.1\r\nHost: x\r\n"
                         "Connection: close\r\n\r\n")
                  .ok());
  for (const char* name : {"p1", "p2", "p3"}) {
    auto r = c->Read();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->status, 200);
    EXPECT_THAT(r->body, HasSubstr(absl::StrCat("\"name\":\"", name, "\"")));
  }
  EXPECT_TRUE(c->WaitClosed(absl::Seconds(2)));
}

TEST_F(ConnectionTest, Http10ClosesAfterResponseAndStreamsWithoutChunks) {
  auto c = Connect();
  ASSERT_TRUE(c->SendRaw("GET /v1/hosts/h HTTP/1.0\r\n\r\n").ok());
  auto r = c->Read();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->Header("connection"), "close");
  EXPECT_TRUE(c->WaitClosed(absl::Seconds(2)));

  c = Connect();
  ASSERT_TRUE(c->SendRaw("GET /v1/migrations/m:watch HTTP/1.0\r\n\r\n").ok());
  r = c->Read();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->Header("transfer-encoding"), "");
  std::vector<std::string> lines =
      absl::StrSplit(r->body, '\n', absl::SkipEmpty());
  EXPECT_EQ(lines.size(), 3u) << r->body;
}

TEST_F(ConnectionTest, ExpectContinueGetsInterimResponse) {
  auto c = Connect();
  ASSERT_TRUE(c->SendRaw("POST /v1/hosts/h:cordon HTTP/1.1\r\nHost: x\r\n"
                         "Content-Type: application/json\r\n"
                         "Expect: 100-continue\r\nContent-Length: 14\r\n\r\n")
                  .ok());
  auto interim = c->ReadHead(absl::Seconds(2));
  ASSERT_TRUE(interim.ok()) << interim.status();
  EXPECT_EQ(interim->status, 100);
  ASSERT_TRUE(c->SendRaw("{\"reason\":\"e\"}").ok());
  auto r = c->Read();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->body, HasSubstr("\"cordonReason\":\"e\""));
}

TEST_F(ConnectionTest, ClientHangingUpMidStreamCancelsTheRpc) {
  fake_.watch_hang = true;
  auto c = Connect();
  ASSERT_TRUE(c->Send("GET", "/v1/migrations/m:watch").ok());
  auto head = c->ReadHead(absl::Seconds(5));
  ASSERT_TRUE(head.ok()) << head.status();
  auto first = c->ReadChunk(absl::Seconds(5));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_THAT(*first, HasSubstr("MIGRATION_PHASE_TRANSFERRING"));
  c->Close();
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (!fake_.watch_done && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_TRUE(fake_.watch_saw_cancel) << "backend stream not cancelled";
  // The worker is free again: with 4 workers, 6 sequential calls must work.
  for (int i = 0; i < 6; ++i) EXPECT_EQ(Call("GET", "/v1/hosts").status, 200);
}

TEST_F(ConnectionTest, StopReturnsPromptlyWithOpenConnections) {
  fake_.watch_hang = true;
  auto idle = Connect();  // keep-alive connection between requests
  ASSERT_EQ(idle->Call("GET", "/v1/hosts").value().status, 200);
  auto half = Connect();  // half a request
  ASSERT_TRUE(half->SendRaw("GET /v1/hosts HTTP/1.1\r\nHo").ok());
  auto streaming = Connect();  // a stream that would never end by itself
  ASSERT_TRUE(streaming->Send("GET", "/v1/migrations/m:watch").ok());
  ASSERT_TRUE(streaming->ReadHead(absl::Seconds(5)).ok());

  const absl::Time start = absl::Now();
  rest_->Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_TRUE(idle->WaitClosed(absl::Seconds(2)));
  EXPECT_TRUE(half->WaitClosed(absl::Seconds(2)));
  EXPECT_TRUE(streaming->WaitClosed(absl::Seconds(2)));
  // The backend learns of the cancellation asynchronously.
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (!fake_.watch_done && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_TRUE(fake_.watch_saw_cancel);
  rest_->Stop();  // idempotent
  EXPECT_FALSE(TestHttpClient::Connect(rest_->address()).ok());
}

TEST_F(ConnectionTest, StopCancelsAnInFlightUnaryCall) {
  fake_.get_vm_delay_ms = 10000;
  auto c = Connect();
  ASSERT_TRUE(c->Send("GET", "/v1/vms/slow").ok());
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (fake_.last_rpc() != "GetVm" && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  const absl::Time start = absl::Now();
  rest_->Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_TRUE(c->WaitClosed(absl::Seconds(2)));
}

TEST_F(ConnectionTest, ConcurrentKeepAliveClients) {
  constexpr int kThreads = 8;
  constexpr int kRequests = 40;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  const absl::Time start = absl::Now();
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto c = TestHttpClient::Connect(rest_->address());
      if (!c.ok()) return;
      for (int i = 0; i < kRequests; ++i) {
        const std::string name = absl::StrCat("h", t, "-", i);
        auto r = (*c)->Call("POST", absl::StrCat("/v1/hosts/", name, ":cordon"),
                            R"({"reason":"load"})");
        if (!r.ok()) {
          // The server may close a keep-alive connection when others wait
          // (4 workers, 8 clients): reconnect, as HTTP clients do.
          c = TestHttpClient::Connect(rest_->address());
          if (!c.ok()) return;
          r = (*c)->Call("POST", absl::StrCat("/v1/hosts/", name, ":cordon"),
                         R"({"reason":"load"})");
        }
        if (r.ok() && r->status == 200 &&
            r->body.find("\"name\":\"" + name + "\"") != std::string::npos) {
          ++ok;
        }
        if (r.ok() && r->Header("connection") == "close") {
          c = TestHttpClient::Connect(rest_->address());
          if (!c.ok()) return;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), kThreads * kRequests);
  std::cout << kThreads * kRequests << " requests from " << kThreads
            << " clients in " << absl::Now() - start << "\n";
}

// Random bytes must never crash or wedge the server.
TEST_F(ConnectionTest, SurvivesGarbage) {
  const uint32_t seed = static_cast<uint32_t>(absl::ToUnixNanos(absl::Now()));
  std::cout << "seed " << seed << "\n";
  std::mt19937 rng(seed);
  const std::string prefixes[] = {"", "GET /v1/hosts HTTP/1.1\r\n",
                                  "POST /v1/vms HTTP/1.1\r\nHost: x\r\n"
                                  "Content-Type: application/json\r\n"
                                  "Content-Length: 40\r\n\r\n"};
  for (int i = 0; i < 30; ++i) {
    std::string junk = prefixes[i % 3];
    const int n = 1 + rng() % 600;
    for (int j = 0; j < n; ++j) junk.push_back(static_cast<char>(rng() % 256));
    if (i % 2 == 0) junk += "\r\n\r\n";
    auto c = Connect();
    ASSERT_TRUE(c->SendRaw(junk).ok());
    c->Close();  // the server must cope whatever it was doing
  }
  EXPECT_EQ(Call("GET", "/v1/hosts").status, 200);
}

TEST_F(ConnectionTest, IdleConnectionIsClosedAfterIdleTimeout) {
  RestOptions o = DefaultOptions();
  o.http.idle_timeout = absl::Milliseconds(300);
  o.http.read_timeout = absl::Milliseconds(300);
  StartRest(o);
  auto idle = Connect();
  EXPECT_TRUE(idle->WaitClosed(absl::Seconds(3)));
  auto slow = Connect();  // slowloris: never finishes its headers
  ASSERT_TRUE(slow->SendRaw("GET /v1/hosts HTTP/1.1\r\n").ok());
  auto r = slow->Read(absl::Seconds(3));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 408);
}

TEST_F(ConnectionTest, QueuedConnectionsAreServedWhenWorkersAreBusy) {
  RestOptions o = DefaultOptions();
  o.http.worker_threads = 1;
  StartRest(o);
  auto first = Connect();  // holds the only worker while idle
  ASSERT_EQ(first->Call("GET", "/v1/hosts").value().status, 200);
  // The worker gives the idle connection up for the queued one.
  const absl::Time start = absl::Now();
  EXPECT_EQ(Call("GET", "/v1/hosts").status, 200);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST_F(ConnectionTest, FullQueueAnswers503) {
  RestOptions o = DefaultOptions();
  o.http.worker_threads = 1;
  o.http.max_pending_connections = 1;
  StartRest(o);
  fake_.watch_hang = true;
  auto busy = Connect();  // holds the only worker in a stream
  ASSERT_TRUE(busy->Send("GET", "/v1/migrations/m:watch").ok());
  ASSERT_TRUE(busy->ReadHead(absl::Seconds(5)).ok());
  auto queued = Connect();  // fills the queue
  absl::SleepFor(absl::Milliseconds(100));  // let the acceptor queue it
  auto rejected = Connect();
  auto r = rejected->Read(absl::Seconds(5));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->Header("retry-after"), "1");
  EXPECT_THAT(r->body, HasSubstr("UNAVAILABLE"));
  // The queued one is served once the stream ends.
  ASSERT_TRUE(queued->Send("GET", "/v1/hosts").ok());
  busy->Close();
  auto served = queued->Read(absl::Seconds(5));
  ASSERT_TRUE(served.ok()) << served.status();
  EXPECT_EQ(served->status, 200);
}

TEST_F(ConnectionTest, BadListenAddressIsAnError) {
  RestOptions o = DefaultOptions();
  o.http.listen_address = "nonsense";
  grpc::ChannelArguments args;
  auto s = RestServer::Start(o, grpc_server_->InProcessChannel(args));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  o.http.listen_address = rest_->address();  // taken
  s = RestServer::Start(o, grpc_server_->InProcessChannel(args));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable);
}

// A real client parses our framing: curl, if the machine has it.
std::string RunCommand(const std::string& command) {
  std::string out;
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

TEST_F(ConnectionTest, CurlUnderstandsUs) {
  if (access("/usr/bin/curl", X_OK) != 0) {
    GTEST_SKIP() << "/usr/bin/curl not installed; the raw-socket tests cover "
                    "the framing";
  }
  const std::string base = absl::StrCat("http://", rest_->address());
  // Two URLs: curl reuses the keep-alive connection for the second.
  std::string out = RunCommand(absl::StrCat(
      "/usr/bin/curl -sS -i --max-time 10 ", base, "/v1/hosts/h1 ", base,
      "/v1/hosts/h2 2>&1"));
  EXPECT_THAT(out, HasSubstr("HTTP/1.1 200 OK"));
  EXPECT_THAT(out, HasSubstr("\"name\":\"h1\""));
  EXPECT_THAT(out, HasSubstr("\"name\":\"h2\""));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("curl: (")));

  out = RunCommand(absl::StrCat(
      "/usr/bin/curl -sS --max-time 10 -X POST -H 'Content-Type: "
      "application/json' -d '{\"reason\":\"curl\"}' ", base,
      "/v1/hosts/h1:cordon 2>&1"));
  EXPECT_THAT(out, HasSubstr("\"cordonReason\":\"curl\""));

  out = RunCommand(absl::StrCat("/usr/bin/curl -sS -N --max-time 10 ", base,
                                "/v1/migrations/m-5:watch 2>&1"));
  std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << out;
  EXPECT_THAT(lines[2], HasSubstr("\"id\":\"m-5\""));

  // A big body makes curl send Expect: 100-continue; curl must not stall.
  const std::string reason(2000, 'r');
  const absl::Time start = absl::Now();
  out = RunCommand(absl::StrCat(
      "/usr/bin/curl -sS --max-time 10 -H 'Content-Type: application/json' "
      "-d '{\"reason\":\"", reason, "\"}' ", base, "/v1/hosts/h3:cordon 2>&1"));
  EXPECT_THAT(out, HasSubstr(reason));
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(900));

  out = RunCommand(absl::StrCat("/usr/bin/curl -sS -o /dev/null -w '%{http_code}' ",
                                base, "/v1/nope 2>&1"));
  EXPECT_EQ(out, "404");
}

}  // namespace
}  // namespace ferry::rest::testing
