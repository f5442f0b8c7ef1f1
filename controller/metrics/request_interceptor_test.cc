#include "controller/metrics/request_interceptor.h"

#include <stdlib.h>

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "common/metrics/text_format.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "proto/controller.grpc.pb.h"

namespace ferry::controller {
namespace {

// Answers GetHost with NOT_FOUND and ListHosts with an empty page.
class TinyController final : public v1::ControllerService::Service {
  grpc::Status GetHost(grpc::ServerContext*, const v1::GetHostRequest* r,
                       v1::Host*) override {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "no host " + r->name());
  }
  grpc::Status ListHosts(grpc::ServerContext*, const v1::ListHostsRequest*,
                         v1::ListHostsResponse*) override {
    return grpc::Status::OK;
  }
};

TEST(RequestMetricsInterceptor, CountsEveryCallByMethodAndCode) {
  const char* tmp = getenv("TEST_TMPDIR");
  std::string dir = absl::StrCat(tmp ? tmp : "/tmp", "/interceptor-XXXXXX");
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir + "/db");
  ASSERT_TRUE(store.ok()) << store.status();
  auto metrics = std::make_shared<ControllerMetrics>(**store);

  TinyController service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> f;
  f.push_back(std::make_unique<RequestMetricsInterceptorFactory>(metrics));
  builder.experimental().SetInterceptorCreators(std::move(f));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) GTEST_SKIP() << "cannot listen on 127.0.0.1";

  auto stub = v1::ControllerService::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext ctx;
    v1::GetHostRequest req;
    req.set_name("h");
    v1::Host host;
    EXPECT_EQ(stub->GetHost(&ctx, req, &host).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    v1::ListHostsResponse resp;
    EXPECT_TRUE(stub->ListHosts(&ctx, v1::ListHostsRequest(), &resp).ok());
  }
  {  // Not implemented by the service: still counted, as UNIMPLEMENTED.
    grpc::ClientContext ctx;
    v1::ListVmsResponse resp;
    EXPECT_EQ(stub->ListVms(&ctx, v1::ListVmsRequest(), &resp).error_code(),
              grpc::StatusCode::UNIMPLEMENTED);
  }
  server->Shutdown();

  absl::StatusOr<std::vector<metrics::Sample>> s = metrics::ParseTextFormat(
      prometheus::TextSerializer().Serialize(metrics->Collect()));
  ASSERT_TRUE(s.ok()) << s.status();
  const std::string get = "/ferry.v1.ControllerService/GetHost";
  EXPECT_EQ(metrics::FindSample(*s, "ferry_controller_api_requests_total",
                                {{"method", get}, {"code", "NOT_FOUND"}}), 3);
  EXPECT_EQ(metrics::FindSample(*s, "ferry_controller_api_requests_total",
                                {{"method", "/ferry.v1.ControllerService/ListHosts"},
                                 {"code", "OK"}}), 1);
  EXPECT_EQ(metrics::FindSample(*s, "ferry_controller_api_requests_total",
                                {{"method", "/ferry.v1.ControllerService/ListVms"},
                                 {"code", "UNIMPLEMENTED"}}), 1);
  EXPECT_EQ(metrics::FindSample(*s, "ferry_controller_api_request_duration_seconds_count",
                                {{"method", get}}), 3);
}

}  // namespace
}  // namespace ferry::controller
