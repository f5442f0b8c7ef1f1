#include "cli/yaml.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/util/json_util.h"

namespace ferry::cli {
namespace {

using google::protobuf::ListValue;
using google::protobuf::Struct;
using google::protobuf::Value;

// YAML 1.1 readers (PyYAML, many others) still take these as booleans or
// null, so a string spelled like one must be quoted.
bool IsReservedWord(absl::string_view s) {
  static constexpr const char* kWords[] = {
      "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~",
      ".nan", ".inf", "-.inf", "+.inf"};
  std::string lower = absl::AsciiStrToLower(s);
  for (const char* w : kWords) {
    if (lower == w) return true;
  }
  return false;
}

bool LooksNumeric(absl::string_view s) {
  double d;
  if (absl::SimpleAtod(s, &d)) return true;
  // 0x1F, 0o17, 1_000 and sexagesimal 1:20 are numbers to some readers.
  if (absl::StartsWith(s, "0x") || absl::StartsWith(s, "0o")) return true;
  bool digits_only = !s.empty();
  for (char c : s) {
    if (!absl::ascii_isdigit(c) && c != '_' && c != ':' && c != '.' &&
        c != '-' && c != '+') {
      digits_only = false;
    }
  }
  return digits_only && absl::ascii_isdigit(s[0]);
}

bool NeedsQuotes(absl::string_view s) {
  if (s.empty() || IsReservedWord(s) || LooksNumeric(s)) return true;
  if (s.front() == ' ' || s.back() == ' ') return true;
  // Timestamps, IPs, versions and "0.300s" durations: YAML 1.1 readers turn
  // some digit-led strings into dates or numbers; quoting all of them is
  // simpler than knowing which (kubectl quotes its timestamps too).
  if (absl::ascii_isdigit(static_cast<unsigned char>(s.front()))) return true;
  // Characters that start a flow collection, anchor, tag, alias, block
  // scalar, directive or comment when they come first.
  if (absl::string_view("-?:,[]{}#&*!|>'\"%@`").find(s.front()) !=
      absl::string_view::npos) {
    return true;
  }
  if (absl::StrContains(s, ": ") || absl::StrContains(s, " #") ||
      absl::EndsWith(s, ":")) {
    return true;
  }
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

std::string Quote(absl::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += absl::StrFormat("\\x%02x", c);
        } else {
          out += static_cast<char>(c);  // UTF-8 passes through.
        }
    }
  }
  out += "\"";
  return out;
}

bool IsScalar(const Value& v) {
  switch (v.kind_case()) {
    case Value::kStructValue: return v.struct_value().fields().empty();
    case Value::kListValue: return v.list_value().values().empty();
    default: return true;
  }
}

std::string Scalar(const Value& v) {
  switch (v.kind_case()) {
    case Value::kNullValue: return "null";
    case Value::kBoolValue: return v.bool_value() ? "true" : "false";
    case Value::kNumberValue: return FormatNumber(v.number_value());
    case Value::kStringValue: return YamlScalar(v.string_value());
    case Value::kStructValue: return "{}";
    case Value::kListValue: return "[]";
    default: return "null";
  }
}

void Emit(const Value& v, int indent, std::string* out);

void EmitStruct(const Struct& s, int indent, std::string* out) {
  // google::protobuf::Map has no order; sort keys so output is stable.
  std::vector<std::string> keys;
  for (const auto& [k, unused] : s.fields()) keys.push_back(k);
  std::sort(keys.begin(), keys.end());
  for (const std::string& k : keys) {
    const Value& child = s.fields().at(k);
    out->append(indent, ' ');
    absl::StrAppend(out, YamlScalar(k), ":");
    if (IsScalar(child)) {
      absl::StrAppend(out, " ", Scalar(child), "\n");
    } else if (child.kind_case() == Value::kListValue) {
      out->append("\n");
      Emit(child, indent, out);
    } else {
      out->append("\n");
      Emit(child, indent + 2, out);
    }
  }
}

void EmitList(const ListValue& l, int indent, std::string* out) {
  for (const Value& item : l.values()) {
    out->append(indent, ' ');
    if (IsScalar(item)) {
      absl::StrAppend(out, "- ", Scalar(item), "\n");
      continue;
    }
    // Emit the item two deeper, then put the dash over its first indent.
    std::string inner;
    Emit(item, indent + 2, &inner);
    out->append("- ");
    out->append(inner.substr(indent + 2));
  }
}

void Emit(const Value& v, int indent, std::string* out) {
  if (IsScalar(v)) {
    out->append(indent, ' ');
    absl::StrAppend(out, Scalar(v), "\n");
  } else if (v.kind_case() == Value::kStructValue) {
    EmitStruct(v.struct_value(), indent, out);
  } else {
    EmitList(v.list_value(), indent, out);
  }
}

}  // namespace

std::string FormatNumber(double d) {
  if (std::isnan(d)) return ".nan";
  if (std::isinf(d)) return d > 0 ? ".inf" : "-.inf";
  if (d == std::floor(d) && std::fabs(d) < 9007199254740992.0) {
    return absl::StrFormat("%.0f", d);
  }
  for (int precision = 1; precision <= 17; ++precision) {
    std::string s = absl::StrFormat("%.*g", precision, d);
    if (std::strtod(s.c_str(), nullptr) == d) return s;
  }
  return absl::StrFormat("%.17g", d);
}

std::string YamlScalar(absl::string_view s) {
  return NeedsQuotes(s) ? Quote(s) : std::string(s);
}

std::string ValueToYaml(const Value& value) {
  std::string out;
  Emit(value, 0, &out);
  return out;
}

absl::StatusOr<std::string> JsonToYaml(absl::string_view json) {
  Value v;
  auto status = google::protobuf::util::JsonStringToMessage(
      std::string(json), &v);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not valid JSON: ", status.ToString()));
  }
  return ValueToYaml(v);
}

}  // namespace ferry::cli
