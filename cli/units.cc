#include "cli/units.h"

#include <cmath>
#include <cstdio>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace ferry::cli {
namespace {

struct Unit {
  const char* name;
  double factor;
};

// Exact spellings only: guessing at "mb" (millibits? megabytes?) is how
// a 1000x mistake gets into a migration policy.
constexpr Unit kUnits[] = {
    {"", 1},           {"B", 1},
    {"k", 1e3},        {"K", 1e3},         {"kB", 1e3},   {"KB", 1e3},
    {"M", 1e6},        {"MB", 1e6},        {"G", 1e9},    {"GB", 1e9},
    {"T", 1e12},       {"TB", 1e12},
    {"Ki", 1024.0},    {"KiB", 1024.0},    {"Mi", 1048576.0},
    {"MiB", 1048576.0}, {"Gi", 1073741824.0}, {"GiB", 1073741824.0},
    {"Ti", 1099511627776.0}, {"TiB", 1099511627776.0},
};

constexpr char kSizeForms[] =
    "expected a number with an optional unit: B, KB/MB/GB/TB (powers of "
    "1000) or KiB/MiB/GiB/TiB (powers of 1024), e.g. 512MiB or 1.5GB";

}  // namespace

absl::StatusOr<uint64_t> ParseBytes(absl::string_view text) {
  absl::string_view s = absl::StripAsciiWhitespace(text);
  size_t i = 0;
  while (i < s.size() && (absl::ascii_isdigit(s[i]) || s[i] == '.')) ++i;
  absl::string_view number = s.substr(0, i);
  absl::string_view unit = s.substr(i);
  if (number.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid size \"", text, "\": ", kSizeForms));
  }
  double value = 0;
  if (!absl::SimpleAtod(number, &value) || !std::isfinite(value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid size \"", text, "\": ", kSizeForms));
  }
  if (unit.size() >= 2 && unit.back() == 'b') {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid size \"", text,
        "\": a lowercase 'b' means bits; sizes are in bytes (use B, e.g. ",
        number, unit.substr(0, unit.size() - 1), "B)"));
  }
  for (const Unit& u : kUnits) {
    if (unit != u.name) continue;
    double bytes = value * u.factor;
    if (bytes >= 18446744073709551616.0) {
      return absl::InvalidArgumentError(
          absl::StrCat("size \"", text, "\" is too large"));
    }
    return static_cast<uint64_t>(bytes);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "invalid size \"", text, "\": unknown unit \"", unit, "\"; ",
      kSizeForms));
}

absl::StatusOr<uint64_t> ParseRate(absl::string_view text) {
  absl::string_view s = absl::StripAsciiWhitespace(text);
  if (absl::ConsumeSuffix(&s, "/s") || absl::ConsumeSuffix(&s, "ps")) {
    if (s.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "invalid rate \"", text, "\": expected a size per second, e.g. "
          "100MB/s or 1GiB/s"));
    }
  }
  auto bytes = ParseBytes(s);
  if (!bytes.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid rate \"", text, "\": expected a size per second such as "
        "100MB/s or 1GiB/s (", bytes.status().message(), ")"));
  }
  return *bytes;
}

absl::StatusOr<absl::Duration> ParseDurationArg(absl::string_view text) {
  absl::string_view s = absl::StripAsciiWhitespace(text);
  absl::Duration d;
  double plain = 0;
  if (absl::SimpleAtod(s, &plain) && plain != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid duration \"", text,
        "\": missing unit (use ms, s, m or h, e.g. 50ms or 1m30s)"));
  }
  if (!absl::ParseDuration(s, &d) || d == absl::InfiniteDuration() ||
      d == -absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid duration \"", text,
        "\": expected a number with a unit (ms, s, m, h), e.g. 50ms or 1m30s"));
  }
  if (d < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid duration \"", text, "\": must not be negative"));
  }
  return d;
}

absl::StatusOr<bool> ParseBoolArg(absl::string_view text) {
  std::string s = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  if (s == "true" || s == "1" || s == "yes") return true;
  if (s == "false" || s == "0" || s == "no") return false;
  return absl::InvalidArgumentError(
      absl::StrCat("invalid boolean \"", text, "\": use true or false"));
}

std::string FormatBytes(uint64_t bytes) {
  static constexpr const char* kNames[] = {"B",   "KiB", "MiB", "GiB",
                                           "TiB", "PiB", "EiB"};
  if (bytes < 1024) return absl::StrCat(bytes, "B");
  double v = static_cast<double>(bytes);
  int unit = 0;
  while (v >= 1024 && unit < 6) {
    v /= 1024;
    ++unit;
  }
  // Rounding 1023.7KiB to "1024KiB" is uglier than moving up a unit.
  if (std::round(v) >= 1024 && unit < 6) {
    v /= 1024;
    ++unit;
  }
  std::string n = v < 10 ? absl::StrFormat("%.1f", v)
                         : absl::StrFormat("%.0f", v);
  if (absl::EndsWith(n, ".0")) n.resize(n.size() - 2);
  return absl::StrCat(n, kNames[unit]);
}

std::string FormatRate(uint64_t bytes_per_s) {
  return absl::StrCat(FormatBytes(bytes_per_s), "/s");
}

std::string FormatAge(absl::Duration d) {
  if (d < -absl::Seconds(1)) return "<invalid>";
  if (d < absl::ZeroDuration()) return "0s";
  int64_t s = absl::ToInt64Seconds(d);
  int64_t m = s / 60, h = s / 3600, days = h / 24, y = days / 365;
  auto two = [](int64_t a, const char* ua, int64_t b, const char* ub) {
    return b == 0 ? absl::StrCat(a, ua) : absl::StrCat(a, ua, b, ub);
  };
  if (s < 120) return absl::StrCat(s, "s");
  if (m < 10) return two(m, "m", s % 60, "s");
  if (m < 180) return absl::StrCat(m, "m");
  if (h < 8) return two(h, "h", m % 60, "m");
  if (h < 48) return absl::StrCat(h, "h");
  if (h < 24 * 8) return two(days, "d", h % 24, "h");
  if (days < 365 * 2) return absl::StrCat(days, "d");
  if (days < 365 * 8) return two(y, "y", days % 365, "d");
  return absl::StrCat(y, "y");
}

std::string FormatSpan(absl::Duration d) {
  if (d <= absl::ZeroDuration()) return "0s";
  if (d < absl::Milliseconds(1)) {
    return absl::StrCat(absl::ToInt64Microseconds(d), "us");
  }
  if (d < absl::Seconds(1)) {
    return absl::StrCat(absl::ToInt64Milliseconds(d), "ms");
  }
  if (d < absl::Minutes(1)) {
    std::string n = absl::StrFormat("%.2f", absl::ToDoubleSeconds(d));
    while (absl::EndsWith(n, "0")) n.pop_back();
    if (absl::EndsWith(n, ".")) n.pop_back();
    return absl::StrCat(n, "s");
  }
  int64_t s = absl::ToInt64Seconds(d);
  if (s < 3600) {
    return s % 60 ? absl::StrCat(s / 60, "m", s % 60, "s")
                  : absl::StrCat(s / 60, "m");
  }
  return (s / 60) % 60 ? absl::StrCat(s / 3600, "h", (s / 60) % 60, "m")
                       : absl::StrCat(s / 3600, "h");
}

std::string FormatEta(absl::Duration d) {
  if (d <= absl::ZeroDuration()) return "0s";
  int64_t s = absl::ToInt64Seconds(absl::Ceil(d, absl::Seconds(1)));
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrCat(s / 60, "m", s % 60, "s");
  return absl::StrCat(s / 3600, "h", (s / 60) % 60, "m");
}

}  // namespace ferry::cli
