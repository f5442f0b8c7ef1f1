// HTTP request pieces -> a gRPC request message, and messages -> JSON,
// using protobuf's canonical JSON mapping (lowerCamelCase field names, enums
// by name, 64-bit integers as strings, Timestamp/Duration as RFC 3339 / "1.5s").
#ifndef FERRY_CONTROLLER_API_REST_TRANSCODING_H_
#define FERRY_CONTROLLER_API_REST_TRANSCODING_H_

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include <google/protobuf/message.h>
#include "controller/api/rest/http_message.h"

namespace ferry::rest {

// True if the request declares a JSON body ("application/json", any
// parameters such as charset=utf-8).
bool HasJsonContentType(const HttpRequest& request);

// Merges a JSON object into `message`. Unknown fields are INVALID_ARGUMENT
// (a misspelt field silently ignored would do the wrong thing quietly).
absl::Status MergeJson(absl::string_view json,
                       google::protobuf::Message* message);

// Sets top-level fields of `message` from query parameters, by JSON name
// ("pageSize") or proto name ("page_size"). Scalars, enums (by name or
// number) and repeated scalars/enums (repeat the key, or comma-separate
// enum names) are supported; message and map fields are not. Fields named
// in `path_fields` come from the path and cannot be set here.
absl::Status ApplyQuery(
    const std::vector<std::pair<std::string, std::string>>& query,
    const std::set<std::string>& path_fields,
    google::protobuf::Message* message);

// Sets the top-level string field `field` (proto name) to `value`. A value
// the body already set that differs is INVALID_ARGUMENT.
absl::Status BindPathParam(const std::string& field, const std::string& value,
                           google::protobuf::Message* message);

// Canonical JSON of `message` (compact, default values omitted).
absl::StatusOr<std::string> MessageToJson(const google::protobuf::Message& message);

}  // namespace ferry::rest

#endif  // FERRY_CONTROLLER_API_REST_TRANSCODING_H_
