// absl::Status <-> grpc::Status. Both use the canonical codes of
// google.rpc.Code with the same numbers, but the mapping is written out so a
// future enum change fails to compile here rather than silently mislabel
// errors. Used by every gRPC surface of the agent (and the controller).
#ifndef FERRY_AGENT_SERVICE_STATUS_CONVERSION_H_
#define FERRY_AGENT_SERVICE_STATUS_CONVERSION_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace ferry::service {

grpc::StatusCode ToGrpcCode(absl::StatusCode code);
absl::StatusCode FromGrpcCode(grpc::StatusCode code);

// Code and message (not absl's "CODE: message" rendering, which would repeat
// the code on the client).
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace ferry::service

#endif  // FERRY_AGENT_SERVICE_STATUS_CONVERSION_H_
