// Help texts. Flag lists come from the flag table, so they cannot drift.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/app_internal.h"

namespace ferry::cli {
namespace {

struct CommandHelp {
  const char* name;
  const char* usage;
  const char* brief;  // One line for the command list.
  const char* summary;
  const char* examples;
};

const CommandHelp kHelp[] = {
    {"get", "ferryctl get hosts|vms|migrations [NAME] [flags]",
     "Show hosts, VMs or migrations",
     "Show resources as a table (or wide, json, yaml, name). Aliases: host, vm,\n"
     "migration, mig. --watch prints changes until Ctrl-C (one migration: every\n"
     "update the server pushes; otherwise polling every 2s).",
     "  ferryctl get hosts\n"
     "  ferryctl get vms -o wide -l tier=web\n"
     "  ferryctl get vm web-1 -o yaml\n"
     "  ferryctl get migrations --host node-a --watch\n"},
    {"describe", "ferryctl describe host|vm|migration NAME",
     "Show one resource in detail, with events",
     "Show one resource in detail, with related objects and recent events.",
     "  ferryctl describe host node-a\n"
     "  ferryctl describe migration 6f1c...\n"},
    {"create", "ferryctl create vm NAME --memory SIZE [--vcpus N] [flags]",
     "Create a VM",
     "Create a VM. Sizes take units (512MiB, 1GiB, 2GB); rates too (100MB/s).",
     "  ferryctl create vm web-1 --memory 1GiB --vcpus 2\n"
     "  ferryctl create vm hot --memory 2GiB --workload hotcold --dirty-rate 200MB/s "
     "--working-set 1GiB -l tier=db\n"},
    {"delete", "ferryctl delete vm NAME",
     "Delete a VM", "Delete a VM.",
     "  ferryctl delete vm web-1\n"},
    {"migrate", "ferryctl migrate vm NAME [--to HOST] [flags]",
     "Live-migrate a VM, with live progress",
     "Live-migrate a VM. Policy flags override the cluster defaults; unset\n"
     "ones keep them. --timeout is the whole migration's deadline (sent as\n"
     "a per-GiB deadline); use --request-timeout for the call itself. By\n"
     "default waits and shows progress; exit 0 only if the migration\n"
     "SUCCEEDED, 1 if it FAILED or was CANCELLED, 130 on Ctrl-C (the migration\n"
     "goes on).",
     "  ferryctl migrate vm web-1\n"
     "  ferryctl migrate vm web-1 --to node-b --max-downtime 50ms --bandwidth 1GiB/s\n"
     "  ferryctl migrate vm db --auto-converge=false --compression zstd --no-wait\n"},
    {"cancel", "ferryctl cancel migration ID [--reason TEXT]",
     "Cancel a migration",
     "Ask the controller to cancel a migration; it acts at the next safe point\n"
     "and rolls the VM back to its source.",
     "  ferryctl cancel migration 6f1c... --reason \"maintenance window over\"\n"},
    {"cordon", "ferryctl cordon HOST [--reason TEXT]",
     "Stop scheduling onto a host",
     "Mark a host unschedulable: no new VMs or incoming migrations.",
     "  ferryctl cordon node-a --reason \"disk replacement\"\n"},
    {"uncordon", "ferryctl uncordon HOST",
     "Allow scheduling onto a host again", "Make a cordoned host schedulable again.",
     "  ferryctl uncordon node-a\n"},
    {"drain", "ferryctl drain HOST [--max-parallel N] [flags]",
     "Cordon a host and migrate all its VMs off",
     "Cordon a host and migrate every VM off it, printing one line per VM\n"
     "outcome and a tally. Exit 1 if any VM failed to move. The drain runs in\n"
     "the controller: --no-wait or Ctrl-C leaves it running; run the command\n"
     "again to re-attach.",
     "  ferryctl drain node-a\n"
     "  ferryctl drain node-a --max-parallel 2 --max-downtime 100ms\n"},
    {"top", "ferryctl top vms|hosts [--sort-by KEY] [-l SELECTOR] [--host HOST]",
     "Show VMs by dirty rate, hosts by use",
     "Show resource use: VMs by dirty rate, hosts by memory use.",
     "  ferryctl top vms\n  ferryctl top hosts --sort-by cpu\n"},
    {"version", "ferryctl version [--client]",
     "Print client and server versions",
     "Print the client version and check the server (ControllerService has no\n"
     "version call; the agents' versions are listed instead).",
     "  ferryctl version\n"},
    {"completion", "ferryctl completion bash|zsh",
     "Print a bash or zsh completion script", "Print a shell completion script.",
     "  source <(ferryctl completion bash)\n"},
    {"config", "ferryctl config get-contexts|current-context|use-context NAME|"
               "set-context NAME --server ADDR|delete-context NAME|view",
     "Manage contexts in the client config file",
     "Manage the client config file: $FERRYCONFIG, else ~/.config/ferry/config.\n"
     "Format:\n"
     "  current-context = prod\n"
     "  [context prod]\n"
     "  server = 10.0.0.1:7400",
     "  ferryctl config set-context lab --server 10.1.2.3:7400\n"
     "  ferryctl config use-context lab\n"},
};

std::string FlagLines(const std::string& command, bool globals) {
  std::string out;
  for (const FlagDef& d : AllFlags()) {
    bool global = d.commands[0] == '\0';
    if (global != globals) continue;
    if (!global && !FlagApplies(d, command)) continue;
    std::string name = d.short_name ? absl::StrCat("-", std::string(1, d.short_name),
                                                   ", --", d.name)
                                    : absl::StrCat("    --", d.name);
    if (d.is_bool) {
      if (std::string(d.name) != "help") name += "[=BOOL]";
    } else {
      absl::StrAppend(&name, " ", d.value_name);
    }
    absl::StrAppend(&out, absl::StrFormat("  %-32s %s\n", name, d.help));
  }
  return out;
}

constexpr char kGlobalNote[] =
    "Server address: --server, else $FERRY_SERVER, else the config's context\n"
    "(--context or current-context), else 127.0.0.1:7400.\n"
    "Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 server unreachable.\n";

}  // namespace

bool IsCommand(const std::string& name) {
  for (const CommandHelp& h : kHelp) {
    if (name == h.name) return true;
  }
  return false;
}

std::string HelpText(const std::string& command) {
  for (const CommandHelp& h : kHelp) {
    if (command != h.name) continue;
    std::string flags = FlagLines(command, false);
    return absl::StrCat("Usage: ", h.usage, "\n\n", h.summary, "\n\nExamples:\n",
                        h.examples, flags.empty() ? "" : "\nFlags:\n", flags,
                        "\nGlobal flags:\n", FlagLines(command, true), "\n",
                        kGlobalNote);
  }
  std::string out =
      "ferryctl controls a ferry cluster: hosts, VMs and their live migrations.\n\n"
      "Usage: ferryctl COMMAND [ARGS] [flags]\n\nCommands:\n";
  for (const CommandHelp& h : kHelp) {
    absl::StrAppend(&out, absl::StrFormat("  %-11s %s\n", h.name, h.brief));
  }
  absl::StrAppend(&out,
                  "\nExamples:\n"
                  "  ferryctl get hosts\n"
                  "  ferryctl create vm web-1 --memory 1GiB --vcpus 2\n"
                  "  ferryctl migrate vm web-1 --to node-b\n"
                  "  ferryctl drain node-a\n"
                  "\nGlobal flags:\n",
                  FlagLines("", true), "\n", kGlobalNote,
                  "\nRun 'ferryctl COMMAND --help' for a command's flags.\n");
  return out;
}

}  // namespace ferry::cli
