// Generates openapi.json (OpenAPI 3.0) from the route table and the proto
// descriptors, so the description cannot drift from what is served:
//   bazel run //controller/api/rest:openapi_gen > controller/api/rest/openapi.json
// openapi_test fails when the checked-in file is stale.
#ifndef FERRY_CONTROLLER_API_REST_OPENAPI_GEN_H_
#define FERRY_CONTROLLER_API_REST_OPENAPI_GEN_H_

#include <string>

namespace ferry::rest {

std::string GenerateOpenApi();

}  // namespace ferry::rest

#endif  // FERRY_CONTROLLER_API_REST_OPENAPI_GEN_H_
