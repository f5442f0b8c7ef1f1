// Maps (method, path) to handlers using Google API path templates:
//   /v1/hosts/{name}:cordon    /v1/hosts:register    /v1/vms/{name}
// A `{var}` matches one non-empty path segment and is percent-decoded; the
// optional `:verb` is a custom method (AIP-136) on the last segment.
// Unknown paths answer 404, known paths with another method 405 + Allow.
#ifndef FERRY_CONTROLLER_API_REST_ROUTER_H_
#define FERRY_CONTROLLER_API_REST_ROUTER_H_

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "controller/api/rest/http_message.h"
#include "controller/api/rest/http_server.h"

namespace ferry::rest {

// Decoded path variables by name ("name" -> "host-a").
using PathParams = std::map<std::string, std::string>;

class PathTemplate {
 public:
  static absl::StatusOr<PathTemplate> Parse(absl::string_view text);

  // Matches a raw (still percent-encoded) path. Returns false if it does
  // not match; on a match with an undecodable variable returns true and
  // sets *decode_error.
  bool Match(absl::string_view raw_path, PathParams* params,
             absl::Status* decode_error) const;
  bool has_verb() const { return !verb_.empty(); }
  const std::string& text() const { return text_; }
  // Variable names in path order.
  std::vector<std::string> variables() const;

 private:
  struct Segment {
    bool is_variable = false;
    std::string text;  // literal text, or the variable name
  };
  std::string text_;
  std::vector<Segment> segments_;
  std::string verb_;
};

class Router {
 public:
  using Handler = std::function<void(const HttpRequest&, const PathParams&,
                                     ResponseWriter&)>;
  struct Route {
    std::string method;
    PathTemplate path;
    Handler handler;
  };

  // Fails on a malformed template or a duplicate (method, template).
  absl::Status Add(absl::string_view method, absl::string_view path_template,
                   Handler handler);
  void Dispatch(const HttpRequest& request, ResponseWriter& writer) const;
  const std::vector<Route>& routes() const { return routes_; }

 private:
  std::vector<Route> routes_;
};

// Sends the JSON error document with `status` as code.
void SendError(ResponseWriter& writer, int http_status,
               absl::string_view status_name, absl::string_view message,
               const ResponseWriter::Headers& extra_headers = {});

}  // namespace ferry::rest

#endif  // FERRY_CONTROLLER_API_REST_ROUTER_H_
