// Command-line flags, kubectl style: flags anywhere among the words,
// "--name value", "--name=value", "-o json", "-ojson", "-o=json", boolean
// "--wait", "--wait=false", "--no-wait", and "--" ending the flags.
#ifndef FERRY_CLI_FLAGS_H_
#define FERRY_CLI_FLAGS_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::cli {

struct FlagDef {
  const char* name;      // Long name without "--".
  char short_name;       // 0 = none.
  bool is_bool;
  const char* commands;  // Space-separated commands that take it; "" = all.
  const char* value_name;  // For help: "SIZE", "DURATION", ...
  const char* help;
};

// Every flag ferryctl knows.
const std::vector<FlagDef>& AllFlags();

struct ParsedArgs {
  std::vector<std::string> words;  // Positional arguments, in order.
  // Flag name -> values in the order given (bools: "true"/"false").
  std::map<std::string, std::vector<std::string>> flags;

  bool Has(const std::string& name) const { return flags.count(name) > 0; }
  // Last value given, or `def`.
  std::string Get(const std::string& name, const std::string& def = "") const;
  std::vector<std::string> GetAll(const std::string& name) const;
};

// Syntax only: unknown flags, missing values and bad booleans are
// INVALID_ARGUMENT. Whether a flag fits the command is CheckFlagsFor's job.
absl::StatusOr<ParsedArgs> ParseArgs(const std::vector<std::string>& args,
                                     const std::vector<FlagDef>& defs);

// INVALID_ARGUMENT naming the first flag given that `command` does not take.
absl::Status CheckFlagsFor(const ParsedArgs& args, absl::string_view command,
                           const std::vector<FlagDef>& defs);

// True if `def` applies to `command`.
bool FlagApplies(const FlagDef& def, absl::string_view command);

}  // namespace ferry::cli

#endif  // FERRY_CLI_FLAGS_H_
