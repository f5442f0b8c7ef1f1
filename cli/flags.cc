#include "cli/flags.h"

#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/units.h"

namespace ferry::cli {
namespace {

constexpr char kPolicyCmds[] = "migrate drain";

const FlagDef* FindLong(const std::vector<FlagDef>& defs,
                        absl::string_view name) {
  for (const FlagDef& d : defs) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

const FlagDef* FindShort(const std::vector<FlagDef>& defs, char c) {
  for (const FlagDef& d : defs) {
    if (d.short_name == c) return &d;
  }
  return nullptr;
}

}  // namespace

const std::vector<FlagDef>& AllFlags() {
  static const auto* flags = new std::vector<FlagDef>{
      // Global.
      {"server", 0, false, "", "HOST:PORT",
       "controller address (default: $FERRY_SERVER, the config's current "
       "context, else 127.0.0.1:7400)"},
      {"context", 0, false, "", "NAME", "use this context of the config file"},
      {"request-timeout", 0, false, "", "DURATION",
       "deadline of each server call (default 10s)"},
      {"timeout", 0, false, "", "DURATION",
       "migrate/drain: the migration's completion deadline; other commands: "
       "same as --request-timeout"},
      {"help", 'h', true, "", "", "show help"},
      // get / top.
      {"output", 'o', false, "get config", "FORMAT",
       "table, wide, json, yaml or name"},
      {"watch", 'w', true, "get", "", "keep printing changes until Ctrl-C"},
      {"selector", 'l', false, "get top create", "SELECTOR",
       "get/top: label selector (k=v,k!=v,k in (a,b)); create: a label k=v "
       "(repeatable)"},
      {"host", 0, false, "get top create", "HOST",
       "get/top: only objects on this host; create: pin the VM to it"},
      {"sort-by", 0, false, "top", "KEY",
       "vms: dirty-rate (default), memory or name; hosts: memory (default), "
       "cpu or name"},
      // create vm.
      {"memory", 0, false, "create", "SIZE", "guest memory, e.g. 1GiB"},
      {"vcpus", 0, false, "create", "N", "vCPUs (default 1)"},
      {"backend", 0, false, "create", "KIND", "kvm, soft or auto (default)"},
      {"workload", 0, false, "create", "KIND",
       "idle, uniform, hotcold or sequential"},
      {"dirty-rate", 0, false, "create", "RATE",
       "bytes/s the guest dirties, e.g. 100MB/s (0 = as fast as it can)"},
      {"working-set", 0, false, "create", "SIZE",
       "memory the workload writes to (default: all)"},
      {"hot-fraction", 0, false, "create", "F", "hotcold: hot share (0,1]"},
      {"hot-probability", 0, false, "create", "P",
       "hotcold: share of writes going to the hot part [0,1]"},
      {"seed", 0, false, "create", "N", "workload PRNG seed (0 = random)"},
      // migrate / drain policy.
      {"to", 0, false, "migrate", "HOST", "target host (default: scheduler)"},
      {"max-downtime", 0, false, kPolicyCmds, "DURATION",
       "longest acceptable guest pause, e.g. 50ms"},
      {"bandwidth", 0, false, kPolicyCmds, "RATE",
       "cap on the wire rate, e.g. 1GiB/s (0 = unlimited)"},
      {"streams", 0, false, kPolicyCmds, "N", "parallel transfer streams (1-16)"},
      {"auto-converge", 0, true, kPolicyCmds, "",
       "throttle the vCPUs when rounds stop shrinking (=true|false)"},
      {"compression", 0, false, kPolicyCmds, "KIND", "none, lz4, zstd or auto"},
      {"xor-delta", 0, true, kPolicyCmds, "", "send re-dirtied pages as deltas"},
      {"max-rounds", 0, false, kPolicyCmds, "N",
       "rounds before the migration counts as not converging"},
      {"progress-timeout", 0, false, kPolicyCmds, "DURATION",
       "fail if remaining bytes make no new low for this long"},
      {"timeout-per-gib", 0, false, kPolicyCmds, "DURATION",
       "completion deadline per GiB of guest memory"},
      {"verify", 0, false, kPolicyCmds, "MODE",
       "memory digest at switchover: none, sampled or full"},
      {"handoff", 0, false, kPolicyCmds, "MODE", "controller or direct"},
      {"wait", 0, true, kPolicyCmds, "",
       "show progress until done (default; --no-wait returns at once)"},
      {"max-parallel", 0, false, "drain", "N",
       "migrations of this drain at once (0 = scheduler limit)"},
      {"reason", 0, false, "cancel cordon drain", "TEXT",
       "why, recorded with the change"},
      {"client", 0, true, "version", "", "client version only; no server call"},
  };
  return *flags;
}

bool FlagApplies(const FlagDef& def, absl::string_view command) {
  if (def.commands[0] == '\0') return true;
  for (absl::string_view c : absl::StrSplit(def.commands, ' ')) {
    if (c == command) return true;
  }
  return false;
}

std::string ParsedArgs::Get(const std::string& name,
                            const std::string& def) const {
  auto it = flags.find(name);
  return it == flags.end() || it->second.empty() ? def : it->second.back();
}

std::vector<std::string> ParsedArgs::GetAll(const std::string& name) const {
  auto it = flags.find(name);
  return it == flags.end() ? std::vector<std::string>{} : it->second;
}

absl::StatusOr<ParsedArgs> ParseArgs(const std::vector<std::string>& args,
                                     const std::vector<FlagDef>& defs) {
  ParsedArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      out.words.insert(out.words.end(), args.begin() + i + 1, args.end());
      break;
    }
    if (a.size() < 2 || a[0] != '-') {
      out.words.push_back(a);
      continue;
    }
    const FlagDef* def = nullptr;
    std::string shown;  // As the user wrote it, for messages.
    std::optional<std::string> value;
    bool negated = false;
    if (absl::StartsWith(a, "--")) {
      absl::string_view body = absl::string_view(a).substr(2);
      size_t eq = body.find('=');
      absl::string_view name = body.substr(0, eq);
      if (eq != absl::string_view::npos) value = std::string(body.substr(eq + 1));
      shown = absl::StrCat("--", name);
      def = FindLong(defs, name);
      if (def == nullptr && absl::StartsWith(name, "no-")) {
        def = FindLong(defs, name.substr(3));
        if (def != nullptr && !def->is_bool) def = nullptr;
        negated = def != nullptr;
        if (negated && value) {
          return absl::InvalidArgumentError(
              absl::StrCat(shown, " takes no value"));
        }
      }
    } else {
      shown = a.substr(0, 2);
      def = FindShort(defs, a[1]);
      if (a.size() > 2) {
        value = a[2] == '=' ? a.substr(3) : a.substr(2);
      }
    }
    if (def == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", shown));
    }
    std::string v;
    if (def->is_bool) {
      bool b = !negated;
      if (value) {
        auto parsed = ParseBoolArg(*value);
        if (!parsed.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(
              shown, ": ", parsed.status().message()));
        }
        b = *parsed;
      }
      v = b ? "true" : "false";
    } else if (value) {
      v = *value;
    } else if (i + 1 < args.size()) {
      v = args[++i];
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(shown, " needs a value (", def->value_name, ")"));
    }
    out.flags[def->name].push_back(v);
  }
  return out;
}

absl::Status CheckFlagsFor(const ParsedArgs& args, absl::string_view command,
                           const std::vector<FlagDef>& defs) {
  for (const auto& [name, unused] : args.flags) {
    const FlagDef* def = FindLong(defs, name);
    if (def != nullptr && !FlagApplies(*def, command)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown flag --", name, " for \"", command, "\""));
    }
  }
  return absl::OkStatus();
}

}  // namespace ferry::cli
