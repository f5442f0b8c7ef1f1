#include "controller/api/rest/router.h"

#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "controller/api/rest/errors.h"

namespace ferry::rest {
namespace {

bool IsIdentifier(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_')) {
      return false;
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<PathTemplate> PathTemplate::Parse(absl::string_view text) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad path template \"", text, "\": ", why));
  };
  if (text.size() < 2 || text[0] != '/') return bad("must start with /");
  PathTemplate t;
  t.text_ = std::string(text);
  std::vector<std::string> parts = absl::StrSplit(text.substr(1), '/');
  std::string& last = parts.back();
  const size_t colon = last.rfind(':');
  if (colon != std::string::npos && last.find('}', colon) == std::string::npos) {
    t.verb_ = last.substr(colon + 1);
    last.resize(colon);
    if (!IsIdentifier(t.verb_)) return bad("bad custom verb");
  }
  for (const std::string& part : parts) {
    Segment s;
    if (part.size() > 2 && part.front() == '{' && part.back() == '}') {
      s.is_variable = true;
      s.text = part.substr(1, part.size() - 2);
      if (!IsIdentifier(s.text)) return bad("bad variable name");
    } else {
      s.text = part;
      if (part.empty() || part.find_first_of("{}:") != std::string::npos) {
        return bad("bad literal segment");
      }
    }
    t.segments_.push_back(std::move(s));
  }
  return t;
}

std::vector<std::string> PathTemplate::variables() const {
  std::vector<std::string> out;
  for (const Segment& s : segments_) {
    if (s.is_variable) out.push_back(s.text);
  }
  return out;
}

bool PathTemplate::Match(absl::string_view raw_path, PathParams* params,
                         absl::Status* decode_error) const {
  if (raw_path.empty() || raw_path[0] != '/') return false;
  std::vector<absl::string_view> parts =
      absl::StrSplit(raw_path.substr(1), '/');
  if (parts.size() != segments_.size()) return false;
  if (!verb_.empty()) {
    // The verb is split off the raw segment, so a name containing ':' can
    // still be addressed as %3A.
    const std::string suffix = absl::StrCat(":", verb_);
    if (!absl::EndsWith(parts.back(), suffix)) return false;
    parts.back().remove_suffix(suffix.size());
  } else if (parts.back().find(':') != absl::string_view::npos) {
    // An unknown custom verb ("/v1/hosts/a:explode") is not the resource
    // "a:explode" (AIP-136 splits the verb off the raw path first).
    return false;
  }
  PathParams found;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Segment& s = segments_[i];
    if (!s.is_variable) {
      if (parts[i] != s.text) return false;
      continue;
    }
    if (parts[i].empty()) return false;
    absl::StatusOr<std::string> value = UrlDecode(parts[i], false);
    if (!value.ok()) {
      *decode_error = absl::InvalidArgumentError(absl::StrCat(
          "path parameter {", s.text, "}: ", value.status().message()));
      return true;
    }
    found[s.text] = *std::move(value);
  }
  *params = std::move(found);
  return true;
}

absl::Status Router::Add(absl::string_view method,
                         absl::string_view path_template, Handler handler) {
  absl::StatusOr<PathTemplate> t = PathTemplate::Parse(path_template);
  if (!t.ok()) return t.status();
  for (const Route& r : routes_) {
    if (r.method == method && r.path.text() == path_template) {
      return absl::AlreadyExistsError(
          absl::StrCat("duplicate route ", method, " ", path_template));
    }
  }
  routes_.push_back(Route{std::string(method), *std::move(t), std::move(handler)});
  return absl::OkStatus();
}

void Router::Dispatch(const HttpRequest& request,
                      ResponseWriter& writer) const {
  // Custom-verb routes win over plain ones: "/v1/hosts/a:cordon" is the
  // cordon method on host "a", never a host named "a:cordon".
  for (bool verbs : {true, false}) {
    std::set<std::string> allowed;
    for (const Route& route : routes_) {
      if (route.path.has_verb() != verbs) continue;
      PathParams params;
      absl::Status decode_error;
      if (!route.path.Match(request.path, &params, &decode_error)) continue;
      allowed.insert(route.method);
      if (route.method != request.method) continue;
      if (!decode_error.ok()) {
        SendError(writer, 400, "INVALID_ARGUMENT", decode_error.message());
        return;
      }
      route.handler(request, params, writer);
      return;
    }
    if (!allowed.empty()) {
      const std::string allow = absl::StrJoin(allowed, ", ");
      SendError(writer, 405, "UNIMPLEMENTED",
                absl::StrCat("method ", request.method, " is not allowed on ",
                             request.path, "; allowed: ", allow),
                {{"Allow", allow}});
      return;
    }
  }
  SendError(writer, 404, "NOT_FOUND",
            absl::StrCat("no API route matches ", request.method, " ",
                         request.path,
                         "; see controller/api/rest/openapi.json for the "
                         "routes this server serves"));
}

void SendError(ResponseWriter& writer, int http_status,
               absl::string_view status_name, absl::string_view message,
               const ResponseWriter::Headers& extra_headers) {
  writer.Send(http_status, "application/json",
              ErrorJson(http_status, status_name, message), extra_headers);
}

}  // namespace ferry::rest
