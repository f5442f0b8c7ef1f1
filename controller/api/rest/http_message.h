// HTTP/1.1 request parsing (RFC 9112) kept free of sockets so it can be
// tested on strings: the request head, percent-decoding, query strings.
#ifndef FERRY_CONTROLLER_API_REST_HTTP_MESSAGE_H_
#define FERRY_CONTROLLER_API_REST_HTTP_MESSAGE_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::rest {

struct HttpRequest {
  std::string method;  // "GET", case-sensitive per RFC 9110
  std::string target;  // as sent: "/v1/hosts?pageSize=2"
  std::string path;    // target up to '?', still percent-encoded
  std::string query;   // after '?', still percent-encoded
  int version_minor = 1;  // HTTP/1.<minor>
  // Header names lower-cased, values trimmed; order kept.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  // The first header named `name` (lower case), or nullptr.
  const std::string* Header(absl::string_view name) const;
  // Connection semantics: HTTP/1.1 keeps alive unless "close"; 1.0 only on
  // "keep-alive".
  bool WantsKeepAlive() const;
};

// A parse failure with the HTTP status to answer (400, 413, 431, 501, ...).
struct HttpError {
  int status = 400;
  std::string message;
};

// Parses the request line and header fields of `head` (everything before
// the blank line, without it). Fills method/target/path/query/version and
// headers; validates the framing headers and returns the body length the
// request announces (0 if none). Refuses what would make framing ambiguous
// (request smuggling): Transfer-Encoding in a request, conflicting or
// malformed Content-Length, obsolete line folding, whitespace before ':'.
// `max_body_bytes` turns a larger Content-Length into 413.
absl::StatusOr<uint64_t> ParseRequestHead(absl::string_view head,
                                          uint64_t max_body_bytes,
                                          HttpRequest* request,
                                          HttpError* error);

// Decodes %XX escapes; with `plus_is_space` ('+' in query strings) also '+'.
// Fails on a truncated or non-hex escape.
absl::StatusOr<std::string> UrlDecode(absl::string_view in, bool plus_is_space);

// Splits "a=1&b=x%20y&a=2" into decoded (key, value) pairs, in order.
// A key without '=' has an empty value; empty pieces ("a=1&&b") are skipped.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseQuery(
    absl::string_view query);

// "OK", "Not Found", ... for the status line.
absl::string_view ReasonPhrase(int status);

}  // namespace ferry::rest

#endif  // FERRY_CONTROLLER_API_REST_HTTP_MESSAGE_H_
