#include "common/metrics/text_format.h"

#include <cmath>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace ferry::metrics {
namespace {

absl::Status Bad(int line, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("metrics text line ", line, ": ", why));
}

bool ParseValue(absl::string_view v, double* out) {
  if (v == "+Inf") {
    *out = std::numeric_limits<double>::infinity();
    return true;
  }
  if (v == "-Inf") {
    *out = -std::numeric_limits<double>::infinity();
    return true;
  }
  if (v == "NaN") {
    *out = std::nan("");
    return true;
  }
  return absl::SimpleAtod(v, out);
}

}  // namespace

absl::StatusOr<std::vector<Sample>> ParseTextFormat(absl::string_view text) {
  std::vector<Sample> out;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    Sample s;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    s.name = std::string(line.substr(0, i));
    if (s.name.empty()) return Bad(line_no, "no metric name");
    if (i < line.size() && line[i] == '{') {
      ++i;
      for (;;) {
        while (i < line.size() && (line[i] == ' ' || line[i] == ',')) ++i;
        if (i < line.size() && line[i] == '}') {
          ++i;
          break;
        }
        const size_t eq = line.find('=', i);
        if (eq == absl::string_view::npos || eq + 1 >= line.size() ||
            line[eq + 1] != '"') {
          return Bad(line_no, "label without =\"value\"");
        }
        std::string key(absl::StripAsciiWhitespace(line.substr(i, eq - i)));
        std::string value;
        size_t j = eq + 2;
        for (; j < line.size() && line[j] != '"'; ++j) {
          if (line[j] == '\\' && j + 1 < line.size()) {
            ++j;
            value.push_back(line[j] == 'n' ? '\n' : line[j]);
          } else {
            value.push_back(line[j]);
          }
        }
        if (j >= line.size()) return Bad(line_no, "unterminated label value");
        s.labels[std::move(key)] = std::move(value);
        i = j + 1;
      }
    }
    std::vector<absl::string_view> rest =
        absl::StrSplit(line.substr(i), ' ', absl::SkipEmpty());
    if (rest.empty() || !ParseValue(rest[0], &s.value)) {
      return Bad(line_no, absl::StrCat("bad value in \"", line, "\""));
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::optional<double> FindSample(const std::vector<Sample>& samples,
                                 absl::string_view name,
                                 const std::map<std::string, std::string>& match) {
  for (const Sample& s : samples) {
    if (s.name != name) continue;
    bool ok = true;
    for (const auto& [k, v] : match) {
      auto it = s.labels.find(k);
      if (it == s.labels.end() || it->second != v) {
        ok = false;
        break;
      }
    }
    if (ok) return s.value;
  }
  return std::nullopt;
}

int CountSamples(const std::vector<Sample>& samples, absl::string_view name) {
  int n = 0;
  for (const Sample& s : samples) n += s.name == name ? 1 : 0;
  return n;
}

}  // namespace ferry::metrics
