#include "controller/api/rest/http_message.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace ferry::rest {
namespace {

// RFC 9110 token characters (method and header names).
bool IsTokenChar(char c) {
  if (absl::ascii_isalnum(static_cast<unsigned char>(c))) return true;
  return absl::string_view("!#$%&'*+-.^_`|~").find(c) != absl::string_view::npos;
}

bool IsToken(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsTokenChar(c)) return false;
  }
  return true;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

absl::Status Fail(HttpError* error, int status, std::string message) {
  error->status = status;
  error->message = message;
  return absl::InvalidArgumentError(std::move(message));
}

absl::Status ParseRequestLine(absl::string_view line, HttpRequest* request,
                              HttpError* error) {
  std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
  if (parts.size() != 3) {
    return Fail(error, 400,
                "malformed request line: expected \"METHOD /path HTTP/1.1\"");
  }
  if (!IsToken(parts[0])) return Fail(error, 400, "malformed request method");
  if (parts[1].empty() || parts[1][0] != '/') {
    // Absolute-form and authority-form are for proxies; we are an origin.
    return Fail(error, 400, "request target must be an absolute path (\"/v1/...\")");
  }
  for (unsigned char c : parts[1]) {
    if (c <= 0x20 || c >= 0x7f) {
      return Fail(error, 400, "request target contains a control, space or "
                              "non-ASCII byte; percent-encode it");
    }
  }
  if (parts[2] == "HTTP/1.1") {
    request->version_minor = 1;
  } else if (parts[2] == "HTTP/1.0") {
    request->version_minor = 0;
  } else if (absl::StartsWith(parts[2], "HTTP/")) {
    return Fail(error, 505, absl::StrCat("HTTP version ", parts[2],
                                         " not supported; use HTTP/1.1"));
  } else {
    return Fail(error, 400, "malformed HTTP version in request line");
  }
  request->method = std::string(parts[0]);
  request->target = std::string(parts[1]);
  const size_t q = request->target.find('?');
  request->path = request->target.substr(0, q);
  request->query = q == std::string::npos ? "" : request->target.substr(q + 1);
  // A fragment never reaches a server; if one does, it is not part of the
  // query we interpret.
  const size_t hash = request->query.find('#');
  if (hash != std::string::npos) request->query.resize(hash);
  return absl::OkStatus();
}

}  // namespace

const std::string* HttpRequest::Header(absl::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key == name) return &value;
  }
  return nullptr;
}

bool HttpRequest::WantsKeepAlive() const {
  bool close = false;
  bool keep_alive = false;
  for (const auto& [key, value] : headers) {
    if (key != "connection") continue;
    for (absl::string_view opt : absl::StrSplit(value, ',')) {
      opt = absl::StripAsciiWhitespace(opt);
      if (absl::EqualsIgnoreCase(opt, "close")) close = true;
      if (absl::EqualsIgnoreCase(opt, "keep-alive")) keep_alive = true;
    }
  }
  if (close) return false;
  return version_minor >= 1 || keep_alive;
}

absl::StatusOr<uint64_t> ParseRequestHead(absl::string_view head,
                                          uint64_t max_body_bytes,
                                          HttpRequest* request,
                                          HttpError* error) {
  std::vector<absl::string_view> lines = absl::StrSplit(head, "\r\n");
  if (lines.empty() || lines[0].empty()) {
    return Fail(error, 400, "empty request line");
  }
  if (absl::Status s = ParseRequestLine(lines[0], request, error); !s.ok()) {
    return s;
  }
  bool have_length = false;
  uint64_t length = 0;
  for (size_t i = 1; i < lines.size(); ++i) {
    absl::string_view line = lines[i];
    if (line.empty()) continue;
    if (line[0] == ' ' || line[0] == '\t') {
      return Fail(error, 400, "obsolete header line folding is not accepted");
    }
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos || !IsToken(line.substr(0, colon))) {
      return Fail(error, 400,
                  absl::StrCat("malformed header field on line ", i + 1));
    }
    std::string name = absl::AsciiStrToLower(line.substr(0, colon));
    absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
    for (unsigned char c : value) {
      if ((c < 0x20 && c != '\t') || c == 0x7f) {
        return Fail(error, 400,
                    absl::StrCat("control character in header ", name));
      }
    }
    if (name == "transfer-encoding") {
      // Chunked request bodies are legal HTTP/1.1 but no client of this API
      // needs them; refusing them keeps one body framing and no smuggling.
      return Fail(error, 411,
                  "Transfer-Encoding request bodies are not accepted; send "
                  "the body with Content-Length");
    }
    if (name == "content-length") {
      uint64_t n = 0;
      bool digits = !value.empty() && value.size() <= 19;
      for (char c : value) digits = digits && absl::ascii_isdigit(c);
      if (!digits || !absl::SimpleAtoi(value, &n)) {
        return Fail(error, 400, "Content-Length must be a decimal byte count");
      }
      if (have_length && n != length) {
        return Fail(error, 400, "conflicting Content-Length headers");
      }
      have_length = true;
      length = n;
    }
    request->headers.emplace_back(std::move(name), std::string(value));
  }
  if (request->version_minor >= 1 && request->Header("host") == nullptr) {
    return Fail(error, 400, "HTTP/1.1 request without a Host header");
  }
  if (length > max_body_bytes) {
    return Fail(error, 413,
                absl::StrCat("request body of ", length,
                             " bytes exceeds the limit of ", max_body_bytes));
  }
  return length;
}

absl::StatusOr<std::string> UrlDecode(absl::string_view in,
                                      bool plus_is_space) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("truncated percent-escape in \"", in, "\""));
      }
      const int hi = HexValue(in[i + 1]);
      const int lo = HexValue(in[i + 2]);
      if (hi < 0 || lo < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("bad percent-escape in \"", in, "\""));
      }
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseQuery(
    absl::string_view query) {
  std::vector<std::pair<std::string, std::string>> out;
  for (absl::string_view piece : absl::StrSplit(query, '&')) {
    if (piece.empty()) continue;
    const size_t eq = piece.find('=');
    absl::StatusOr<std::string> key = UrlDecode(piece.substr(0, eq), true);
    if (!key.ok()) return key.status();
    std::string value;
    if (eq != absl::string_view::npos) {
      absl::StatusOr<std::string> v = UrlDecode(piece.substr(eq + 1), true);
      if (!v.ok()) return v.status();
      value = *std::move(v);
    }
    out.emplace_back(*std::move(key), std::move(value));
  }
  return out;
}

absl::string_view ReasonPhrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

}  // namespace ferry::rest
