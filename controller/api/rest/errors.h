// The REST API's error model: gRPC status codes mapped to HTTP statuses and
// a JSON body in the shape Google APIs use,
//   {"error":{"code":404,"status":"NOT_FOUND","message":"..."}}
// so a client can switch on the stable `status` name and show `message`.
#ifndef FERRY_CONTROLLER_API_REST_ERRORS_H_
#define FERRY_CONTROLLER_API_REST_ERRORS_H_

#include <string>

#include "absl/strings/string_view.h"
#include <grpcpp/grpcpp.h>

namespace ferry::rest {

// HTTP status for a gRPC code, following google.rpc.Code's documented
// mapping (google/rpc/code.proto). Notably FAILED_PRECONDITION is 400, not
// 409: the request is refused because of the system's state and must not be
// retried until that state is fixed (e.g. "host is cordoned"); 409 is kept
// for ABORTED (concurrency conflict: a resourceVersion mismatch, retry) and
// ALREADY_EXISTS. CANCELLED is 499 (client closed request).
int HttpStatusFromGrpc(grpc::StatusCode code);

// "NOT_FOUND", "INVALID_ARGUMENT", ... (the google.rpc.Code enum names).
absl::string_view GrpcCodeName(grpc::StatusCode code);

// The JSON error document. `message` is escaped; `status` must be a code name.
std::string ErrorJson(int http_status, absl::string_view status,
                      absl::string_view message);

// ErrorJson for a gRPC status returned by the backend.
std::string ErrorJsonFromGrpc(const grpc::Status& status);

// Escapes `s` as the contents of a JSON string (no quotes added).
std::string JsonEscape(absl::string_view s);

}  // namespace ferry::rest

#endif  // FERRY_CONTROLLER_API_REST_ERRORS_H_
