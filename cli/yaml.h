// A small JSON -> YAML emitter for `-o yaml`. The input is the canonical
// protobuf JSON that `-o json` prints, parsed into google.protobuf.Value, so
// both formats always show the same data.
#ifndef FERRY_CLI_YAML_H_
#define FERRY_CLI_YAML_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/struct.pb.h"

namespace ferry::cli {

// Block-style YAML, two-space indents, list items at their key's indent
// (the kubectl layout). Ends with a newline.
std::string ValueToYaml(const google::protobuf::Value& value);

// Parses `json` and emits it as YAML; INVALID_ARGUMENT if it is not JSON.
absl::StatusOr<std::string> JsonToYaml(absl::string_view json);

// A scalar string as YAML: plain when that reads back as the same string,
// double-quoted with escapes otherwise ("true", "123", "a: b", "", ...).
std::string YamlScalar(absl::string_view s);

// The shortest decimal that reads back as `d` ("3", "0.5", "1e+300").
std::string FormatNumber(double d);

}  // namespace ferry::cli

#endif  // FERRY_CLI_YAML_H_
