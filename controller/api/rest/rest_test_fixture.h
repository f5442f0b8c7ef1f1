// Test-only: a RestServer in front of an in-process gRPC server running
// FakeController, plus helpers to talk to it.
#ifndef FERRY_CONTROLLER_API_REST_REST_TEST_FIXTURE_H_
#define FERRY_CONTROLLER_API_REST_REST_TEST_FIXTURE_H_

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>
#include "controller/api/rest/fake_controller.h"
#include "controller/api/rest/rest_server.h"
#include "controller/api/rest/test_http_client.h"
#include "gtest/gtest.h"

namespace ferry::rest::testing {

class RestFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.RegisterService(&fake_);
    grpc_server_ = builder.BuildAndStart();
    ASSERT_NE(grpc_server_, nullptr);
    StartRest(DefaultOptions());
  }
  void TearDown() override {
    if (rest_) rest_->Stop();
    if (grpc_server_) grpc_server_->Shutdown();
  }

  static RestOptions DefaultOptions() {
    RestOptions o;
    o.http.listen_address = "127.0.0.1:0";
    o.http.worker_threads = 4;
    o.http.max_body_bytes = 4096;
    o.http.max_header_bytes = 2048;
    return o;
  }

  void StartRest(const RestOptions& options) {
    if (rest_) rest_->Stop();
    grpc::ChannelArguments args;
    auto server = RestServer::Start(options,
                                    grpc_server_->InProcessChannel(args));
    ASSERT_TRUE(server.ok()) << server.status();
    rest_ = *std::move(server);
  }

  std::unique_ptr<TestHttpClient> Connect() {
    auto c = TestHttpClient::Connect(rest_->address());
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  // One request on a fresh connection.
  TestResponse Call(const std::string& method, const std::string& target,
                    const std::string& body = "") {
    auto c = Connect();
    if (c == nullptr) return {};
    auto r = c->Call(method, target, body);
    EXPECT_TRUE(r.ok()) << method << " " << target << ": " << r.status();
    return r.ok() ? *r : TestResponse{};
  }

  FakeController fake_;
  std::unique_ptr<grpc::Server> grpc_server_;
  std::unique_ptr<RestServer> rest_;
};

}  // namespace ferry::rest::testing

#endif  // FERRY_CONTROLLER_API_REST_REST_TEST_FIXTURE_H_
