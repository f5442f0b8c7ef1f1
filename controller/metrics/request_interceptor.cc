#include "controller/metrics/request_interceptor.h"

#include <string>

#include "absl/time/clock.h"

namespace ferry::controller {
namespace {

using grpc::experimental::InterceptionHookPoints;

class RequestMetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  RequestMetricsInterceptor(ControllerMetrics* metrics, std::string method)
      : metrics_(metrics), method_(std::move(method)), start_(absl::Now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    // The status is final when the server sends it; streams end here too,
    // so a Watch's latency is its whole lifetime (documented in metrics.md).
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_STATUS)) {
      metrics_->RecordRequest(method_, methods->GetSendStatus().error_code(),
                              absl::Now() - start_);
    }
    methods->Proceed();
  }

 private:
  ControllerMetrics* metrics_;
  std::string method_;
  absl::Time start_;
};

}  // namespace

grpc::experimental::Interceptor*
RequestMetricsInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  return new RequestMetricsInterceptor(metrics_.get(), info->method());
}

}  // namespace ferry::controller
