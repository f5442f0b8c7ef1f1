// The client config file and server address resolution.
//
// File: $FERRYCONFIG, else $HOME/.config/ferry/config. Format, one setting
// per line, '#' starts a comment:
//
//   current-context = prod
//
//   [context prod]
//   server = 10.0.0.1:7400
//
//   [context lab]
//   server = lab-controller:7400
//
// The server address comes from, in order: --server, $FERRY_SERVER, the
// context named by --context or else current-context, and finally
// 127.0.0.1:7400.
#ifndef FERRY_CLI_CONFIG_H_
#define FERRY_CLI_CONFIG_H_

#include <functional>
#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::cli {

inline constexpr char kDefaultServer[] = "127.0.0.1:7400";

struct ClientConfig {
  std::string current_context;
  // Context name -> server address.
  std::map<std::string, std::string> contexts;
};

// Reads environment variables; tests pass a fake.
using GetEnvFn = std::function<std::optional<std::string>(const std::string&)>;

// Where the config file lives; "" if neither $FERRYCONFIG nor $HOME is set.
std::string ConfigPath(const GetEnvFn& getenv);

// Parses the text of a config file; errors name the line.
absl::StatusOr<ClientConfig> ParseConfig(absl::string_view text);
std::string SerializeConfig(const ClientConfig& c);

// A missing file is an empty config, not an error.
absl::StatusOr<ClientConfig> LoadConfig(const std::string& path);
// Writes atomically (temp file + rename), creating the directory.
absl::Status SaveConfig(const std::string& path, const ClientConfig& c);

struct ServerAddress {
  std::string address;
  // For messages: "--server", "$FERRY_SERVER", "context \"prod\" in
  // /root/.config/ferry/config", "the default".
  std::string source;
};

// `flag_server` / `flag_context` are "" when not given. Unknown contexts
// are an error (NOT_FOUND); an unreadable config file too.
absl::StatusOr<ServerAddress> ResolveServer(const std::string& flag_server,
                                            const std::string& flag_context,
                                            const GetEnvFn& getenv);

}  // namespace ferry::cli

#endif  // FERRY_CLI_CONFIG_H_
