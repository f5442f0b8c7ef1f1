// A gRPC server interceptor that records every ControllerService call in
// ControllerMetrics (count and latency by full method name and status
// code), so the API layer does not time each handler by hand. Register the
// factory on the ServerBuilder:
//   std::vector<std::unique_ptr<
//       grpc::experimental::ServerInterceptorFactoryInterface>> f;
//   f.push_back(std::make_unique<RequestMetricsInterceptorFactory>(metrics));
//   builder.experimental().SetInterceptorCreators(std::move(f));
// The method label comes from the server's own method table (never from
// the request), so the label set stays bounded; unknown methods never reach
// an interceptor.
#ifndef FERRY_CONTROLLER_METRICS_REQUEST_INTERCEPTOR_H_
#define FERRY_CONTROLLER_METRICS_REQUEST_INTERCEPTOR_H_

#include <memory>

#include <grpcpp/support/server_interceptor.h>

#include "controller/metrics/controller_metrics.h"

namespace ferry::controller {

class RequestMetricsInterceptorFactory
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  // `metrics` must outlive the server.
  explicit RequestMetricsInterceptorFactory(std::shared_ptr<ControllerMetrics> metrics)
      : metrics_(std::move(metrics)) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  std::shared_ptr<ControllerMetrics> metrics_;
};

}  // namespace ferry::controller

#endif  // FERRY_CONTROLLER_METRICS_REQUEST_INTERCEPTOR_H_
