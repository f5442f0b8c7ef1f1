// version, completion, config.
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/app_internal.h"
#include "cli/output.h"

namespace ferry::cli {
namespace {

constexpr char kCommands[] =
    "get describe create delete migrate cancel cordon uncordon drain top "
    "version completion config help";

std::string BashCompletion() {
  // Flags each command takes, from the one flag table.
  std::string flag_cases;
  for (absl::string_view cmd : absl::StrSplit(kCommands, ' ')) {
    std::vector<std::string> names;
    for (const FlagDef& d : AllFlags()) {
      if (FlagApplies(d, cmd)) names.push_back(absl::StrCat("--", d.name));
    }
    absl::StrAppend(&flag_cases, "    ", cmd, ") flags=\"",
                    absl::StrJoin(names, " "), "\";;\n");
  }
  return absl::StrCat(R"SH(# ferryctl bash completion. Load with:
#   source <(ferryctl completion bash)
_ferryctl_names() {
  ferryctl get "$1" -o name 2>/dev/null | sed 's|^[^/]*/||'
}
_ferryctl() {
  local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
  local cmd="${COMP_WORDS[1]}" flags=""
  if [[ $COMP_CWORD -eq 1 ]]; then
    COMPREPLY=($(compgen -W ")SH", kCommands, R"SH(" -- "$cur")); return
  fi
  case "$prev" in
    -o|--output) COMPREPLY=($(compgen -W "table wide json yaml name" -- "$cur")); return;;
    --compression) COMPREPLY=($(compgen -W "none lz4 zstd auto" -- "$cur")); return;;
    --workload) COMPREPLY=($(compgen -W "idle uniform hotcold sequential" -- "$cur")); return;;
    --backend) COMPREPLY=($(compgen -W "kvm soft auto" -- "$cur")); return;;
    --verify) COMPREPLY=($(compgen -W "none sampled full" -- "$cur")); return;;
    --handoff) COMPREPLY=($(compgen -W "controller direct" -- "$cur")); return;;
    --to|--host) COMPREPLY=($(compgen -W "$(_ferryctl_names hosts)" -- "$cur")); return;;
  esac
  case "$cmd" in
)SH", flag_cases, R"SH(  esac
  if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W "$flags" -- "$cur")); return; fi
  local n=$COMP_CWORD
  case "$cmd" in
    get|describe)
      if [[ $n -eq 2 ]]; then COMPREPLY=($(compgen -W "hosts vms migrations" -- "$cur"))
      else COMPREPLY=($(compgen -W "$(_ferryctl_names "${COMP_WORDS[2]}")" -- "$cur")); fi;;
    create|delete|migrate)
      if [[ $n -eq 2 ]]; then COMPREPLY=($(compgen -W "vm" -- "$cur"))
      elif [[ $cmd != create ]]; then COMPREPLY=($(compgen -W "$(_ferryctl_names vms)" -- "$cur")); fi;;
    cancel)
      if [[ $n -eq 2 ]]; then COMPREPLY=($(compgen -W "migration" -- "$cur"))
      else COMPREPLY=($(compgen -W "$(_ferryctl_names migrations)" -- "$cur")); fi;;
    cordon|uncordon|drain) COMPREPLY=($(compgen -W "$(_ferryctl_names hosts)" -- "$cur"));;
    top) COMPREPLY=($(compgen -W "vms hosts" -- "$cur"));;
    completion) COMPREPLY=($(compgen -W "bash zsh" -- "$cur"));;
    config)
      if [[ $n -eq 2 ]]; then COMPREPLY=($(compgen -W "get-contexts current-context use-context set-context delete-context view" -- "$cur"))
      else COMPREPLY=($(compgen -W "$(ferryctl config get-contexts -o name 2>/dev/null)" -- "$cur")); fi;;
  esac
}
complete -F _ferryctl ferryctl
)SH");
}

int ConfigFail(Invocation& inv, const absl::Status& s) {
  inv.err() << "error: " << s.message() << "\n";
  return kExitFailed;
}

}  // namespace

int CmdVersion(Invocation& inv) {
  if (!inv.words.empty()) return UsageError(inv, "version takes no arguments");
  inv.out() << "Client Version: ferryctl " << kFerryctlVersion
            << " (API ferry.v1)\n";
  if (inv.args.Get("client") == "true") return kExitOk;
  auto client = Client::Connect(inv);
  if (!client.ok()) return UsageError(inv, client.status());
  Client& c = **client;
  std::vector<v1::Host> hosts;
  grpc::Status s = ListAllHosts(c, "", &hosts);
  if (!s.ok()) return c.Fail(inv, s);
  // ControllerService has no version call; the agents report theirs.
  std::map<std::string, int> versions;
  for (const v1::Host& h : hosts) {
    versions[h.info().agent_version().empty() ? "unknown"
                                              : h.info().agent_version()]++;
  }
  inv.out() << "Server: " << c.address().address << " (from "
            << c.address().source << "), API ferry.v1, reachable\n";
  std::vector<std::string> parts;
  for (const auto& [v, n] : versions) {
    parts.push_back(absl::StrCat(v, " (", n, n == 1 ? " host)" : " hosts)"));
  }
  inv.out() << "Agent versions: "
            << (parts.empty() ? "no hosts registered" : absl::StrJoin(parts, ", "))
            << "\n";
  return kExitOk;
}

int CmdCompletion(Invocation& inv) {
  if (inv.words.size() != 1 || (inv.words[0] != "bash" && inv.words[0] != "zsh")) {
    return UsageError(inv, "usage: ferryctl completion bash|zsh");
  }
  if (inv.words[0] == "zsh") {
    // zsh runs bash completion functions through bashcompinit.
    inv.out() << "# ferryctl zsh completion. Load with:\n"
                 "#   source <(ferryctl completion zsh)\n"
                 "autoload -U +X compinit && compinit\n"
                 "autoload -U +X bashcompinit && bashcompinit\n";
  }
  inv.out() << BashCompletion();
  return kExitOk;
}

int CmdConfig(Invocation& inv) {
  if (inv.words.empty()) {
    return UsageError(inv, "usage: ferryctl config get-contexts|current-context|"
                           "use-context NAME|set-context NAME --server ADDR|"
                           "delete-context NAME|view");
  }
  const std::string& sub = inv.words[0];
  std::string path = ConfigPath(inv.env.getenv);
  auto config = LoadConfig(path);
  if (!config.ok()) return ConfigFail(inv, config.status());
  size_t want_args = (sub == "get-contexts" || sub == "current-context" ||
                      sub == "view") ? 1 : 2;
  if (sub != "get-contexts" && sub != "current-context" && sub != "view" &&
      sub != "use-context" && sub != "set-context" && sub != "delete-context") {
    return UsageError(inv, absl::StrCat("unknown config command \"", sub, "\""));
  }
  if (inv.words.size() != want_args) {
    return UsageError(inv, absl::StrCat("config ", sub,
                                        want_args == 2 ? " takes one NAME"
                                                       : " takes no arguments"));
  }
  if (inv.args.Has("output") && sub != "get-contexts") {
    return UsageError(inv, "-o applies to config get-contexts only");
  }
  if (sub == "view") {
    inv.out() << "# " << path << "\n" << SerializeConfig(*config);
    return kExitOk;
  }
  if (sub == "current-context") {
    if (config->current_context.empty()) {
      inv.err() << "error: no current context is set in " << path << "\n";
      return kExitFailed;
    }
    inv.out() << config->current_context << "\n";
    return kExitOk;
  }
  if (sub == "get-contexts") {
    if (inv.args.Get("output") == "name") {
      for (const auto& [name, unused] : config->contexts) inv.out() << name << "\n";
      return kExitOk;
    }
    std::vector<std::vector<std::string>> rows = {{"CURRENT", "NAME", "SERVER"}};
    for (const auto& [name, server] : config->contexts) {
      rows.push_back({name == config->current_context ? "*" : "", name, server});
    }
    inv.out() << RenderTable(rows);
    return kExitOk;
  }
  const std::string& name = inv.words[1];
  if (sub == "use-context" || sub == "delete-context") {
    if (config->contexts.count(name) == 0) {
      inv.err() << "error: no context \"" << name << "\" in " << path << "\n";
      return kExitFailed;
    }
    if (sub == "use-context") {
      config->current_context = name;
    } else {
      config->contexts.erase(name);
      if (config->current_context == name) config->current_context.clear();
    }
  } else {  // set-context
    std::string server = inv.args.Get("server");
    if (server.empty()) {
      return UsageError(inv, "config set-context needs --server HOST:PORT");
    }
    config->contexts[name] = server;
  }
  absl::Status s = SaveConfig(path, *config);
  if (!s.ok()) return ConfigFail(inv, s);
  if (sub == "use-context") inv.out() << "Switched to context \"" << name << "\".\n";
  if (sub == "delete-context") inv.out() << "Deleted context \"" << name << "\".\n";
  if (sub == "set-context") inv.out() << "Context \"" << name << "\" set.\n";
  return kExitOk;
}

}  // namespace ferry::cli
