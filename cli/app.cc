#include "cli/app.h"

#include "absl/strings/str_cat.h"
#include "cli/app_internal.h"

namespace ferry::cli {

int Run(const std::vector<std::string>& args, Env& env) {
  Invocation inv{env, "", {}, {}};
  auto parsed = ParseArgs(args, AllFlags());
  if (!parsed.ok()) {
    // Name the command if one was given, so the hint points at its help.
    for (const std::string& a : args) {
      if (!a.empty() && a[0] != '-') {
        inv.command = a;
        break;
      }
    }
    if (!IsCommand(inv.command)) inv.command.clear();
    return UsageError(inv, parsed.status());
  }
  inv.args = *std::move(parsed);
  std::vector<std::string>& words = inv.args.words;
  bool help = inv.args.Get("help") == "true";
  if (!words.empty() && words[0] == "help") {
    words.erase(words.begin());
    help = true;
  }
  if (words.empty()) {
    env.out->write(HelpText("").data(), HelpText("").size());
    return kExitOk;
  }
  inv.command = words[0];
  inv.words.assign(words.begin() + 1, words.end());
  if (!IsCommand(inv.command)) {
    std::string cmd = inv.command;
    inv.command.clear();
    return UsageError(inv, absl::StrCat("unknown command \"", cmd, "\""));
  }
  if (help) {
    *env.out << HelpText(inv.command);
    return kExitOk;
  }
  absl::Status flags_ok = CheckFlagsFor(inv.args, inv.command, AllFlags());
  if (!flags_ok.ok()) return UsageError(inv, flags_ok);
  const std::string& c = inv.command;
  if (c == "get") return CmdGet(inv);
  if (c == "describe") return CmdDescribe(inv);
  if (c == "create") return CmdCreate(inv);
  if (c == "delete") return CmdDelete(inv);
  if (c == "migrate") return CmdMigrate(inv);
  if (c == "cancel") return CmdCancel(inv);
  if (c == "cordon") return CmdCordon(inv, true);
  if (c == "uncordon") return CmdCordon(inv, false);
  if (c == "drain") return CmdDrain(inv);
  if (c == "top") return CmdTop(inv);
  if (c == "version") return CmdVersion(inv);
  if (c == "completion") return CmdCompletion(inv);
  if (c == "config") return CmdConfig(inv);
  return UsageError(inv, absl::StrCat("unknown command \"", c, "\""));
}

}  // namespace ferry::cli
