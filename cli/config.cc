#include "cli/config.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace ferry::cli {

std::string ConfigPath(const GetEnvFn& getenv) {
  if (auto p = getenv("FERRYCONFIG"); p && !p->empty()) return *p;
  if (auto home = getenv("HOME"); home && !home->empty()) {
    return absl::StrCat(*home, "/.config/ferry/config");
  }
  return "";
}

absl::StatusOr<ClientConfig> ParseConfig(absl::string_view text) {
  ClientConfig c;
  std::string section;  // Context name of the current [context X].
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    size_t hash = line.find('#');
    if (hash != absl::string_view::npos) line = line.substr(0, hash);
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    if (absl::ConsumePrefix(&line, "[")) {
      absl::string_view name = line;
      if (!absl::ConsumeSuffix(&name, "]") ||
          !absl::ConsumePrefix(&name, "context ")) {
        return absl::InvalidArgumentError(absl::StrCat(
            "config line ", line_no, ": expected [context NAME]"));
      }
      section = std::string(absl::StripAsciiWhitespace(name));
      if (section.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("config line ", line_no, ": empty context name"));
      }
      c.contexts[section];
      continue;
    }
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(line, absl::MaxSplits('=', 1));
    absl::string_view key = absl::StripAsciiWhitespace(kv.first);
    absl::string_view value = absl::StripAsciiWhitespace(kv.second);
    if (line.find('=') == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("config line ", line_no, ": expected KEY = VALUE"));
    }
    if (section.empty() && key == "current-context") {
      c.current_context = std::string(value);
    } else if (!section.empty() && key == "server") {
      c.contexts[section] = std::string(value);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "config line ", line_no, ": unknown setting \"", key, "\"",
          section.empty() ? " (only current-context goes before sections)"
                          : " (a context has only server)"));
    }
  }
  return c;
}

std::string SerializeConfig(const ClientConfig& c) {
  std::string out = "# ferryctl config (see ferryctl config --help)\n";
  if (!c.current_context.empty()) {
    absl::StrAppend(&out, "current-context = ", c.current_context, "\n");
  }
  for (const auto& [name, server] : c.contexts) {
    absl::StrAppend(&out, "\n[context ", name, "]\nserver = ", server, "\n");
  }
  return out;
}

absl::StatusOr<ClientConfig> LoadConfig(const std::string& path) {
  if (path.empty()) return ClientConfig{};
  std::ifstream in(path);
  if (!in) {
    if (errno == ENOENT) return ClientConfig{};
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read config ", path, ": ", std::strerror(errno)));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  auto c = ParseConfig(ss.str());
  if (!c.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", c.status().message()));
  }
  return c;
}

absl::Status SaveConfig(const std::string& path, const ClientConfig& c) {
  if (path.empty()) {
    return absl::FailedPreconditionError(
        "no config path: set $FERRYCONFIG or $HOME");
  }
  // mkdir -p of the parent; existing directories are fine.
  for (size_t pos = path.find('/', 1); pos != std::string::npos;
       pos = path.find('/', pos + 1)) {
    std::string dir = path.substr(0, pos);
    if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot create ", dir, ": ", std::strerror(errno)));
    }
  }
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << SerializeConfig(c);
    out.flush();
    if (!out) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot write ", tmp, ": ", std::strerror(errno)));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot rename ", tmp, " to ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<ServerAddress> ResolveServer(const std::string& flag_server,
                                            const std::string& flag_context,
                                            const GetEnvFn& getenv) {
  if (!flag_server.empty()) return ServerAddress{flag_server, "--server"};
  if (flag_context.empty()) {
    if (auto env = getenv("FERRY_SERVER"); env && !env->empty()) {
      return ServerAddress{*env, "$FERRY_SERVER"};
    }
  }
  std::string path = ConfigPath(getenv);
  auto config = LoadConfig(path);
  if (!config.ok()) return config.status();
  std::string name =
      flag_context.empty() ? config->current_context : flag_context;
  if (!name.empty()) {
    auto it = config->contexts.find(name);
    if (it == config->contexts.end() || it->second.empty()) {
      return absl::NotFoundError(absl::StrCat(
          "context \"", name, "\" has no server in ", path,
          "; add one with: ferryctl config set-context ", name,
          " --server HOST:PORT"));
    }
    return ServerAddress{it->second,
                         absl::StrCat("context \"", name, "\" in ", path)};
  }
  return ServerAddress{kDefaultServer, "the default"};
}

}  // namespace ferry::cli
