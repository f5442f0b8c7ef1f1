// Shared by the command implementations (cmd_*.cc); not a public API.
#ifndef FERRY_CLI_APP_INTERNAL_H_
#define FERRY_CLI_APP_INTERNAL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cli/app.h"
#include "cli/config.h"
#include "cli/flags.h"
#include "grpcpp/grpcpp.h"
#include "proto/controller.grpc.pb.h"

namespace ferry::cli {

// One command being run.
struct Invocation {
  Env& env;
  std::string command;             // "get", "migrate", ...
  std::vector<std::string> words;  // Positional words after the command.
  ParsedArgs args;
  std::ostream& out() { return *env.out; }
  std::ostream& err() { return *env.err; }
  bool Interrupted() const {
    return env.interrupted != nullptr && env.interrupted->load();
  }
};

// Prints "error: MSG" and the --help hint; returns kExitUsage.
int UsageError(Invocation& inv, const std::string& message);
int UsageError(Invocation& inv, const absl::Status& status);

// A connection to ControllerService and the way to report its failures.
class Client {
 public:
  // Resolves the address (flags, env, config); errors are usage-level
  // (bad --context, unreadable config) and printed by the caller.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(Invocation& inv);

  v1::ControllerService::Stub& stub() { return *stub_; }
  // A context with the --request-timeout deadline.
  std::unique_ptr<grpc::ClientContext> UnaryContext() const;
  // No deadline: for watches and waits, which end on their own or Ctrl-C.
  std::unique_ptr<grpc::ClientContext> StreamContext() const;

  // Prints "error: ..." for a failed call and returns the exit code:
  // kExitUnreachable when the channel never connected, kExitFailed
  // otherwise (with the server's message).
  int Fail(Invocation& inv, const grpc::Status& s) const;

  const ServerAddress& address() const { return address_; }

 private:
  ServerAddress address_;
  absl::Duration timeout_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ControllerService::Stub> stub_;
};

// Runs `body` while a helper thread cancels `ctx` when the user presses
// Ctrl-C (blocking stream reads have no other way out).
class CancelOnInterrupt {
 public:
  CancelOnInterrupt(const Invocation& inv, grpc::ClientContext* ctx);
  ~CancelOnInterrupt();
  CancelOnInterrupt(const CancelOnInterrupt&) = delete;
  CancelOnInterrupt& operator=(const CancelOnInterrupt&) = delete;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

// Sleeps up to `d` in short slices; false if interrupted meanwhile.
bool SleepUnlessInterrupted(const Invocation& inv, absl::Duration d);

// 128 random bits, hex: the request_id that makes a create safe to retry.
std::string RandomRequestId();

// "hosts", "vms" or "migrations" for the aliases; "" if unknown.
std::string CanonicalResource(const std::string& word);

// Pages through the List calls.
grpc::Status ListAllHosts(Client& c, const std::string& selector,
                          std::vector<v1::Host>* out);
grpc::Status ListAllVms(Client& c, const std::string& selector,
                        const std::string& host, std::vector<v1::Vm>* out);
grpc::Status ListAllMigrations(Client& c, const std::string& host,
                               const std::string& vm,
                               std::vector<v1::Migration>* out);
grpc::Status ListAllEvents(Client& c, v1::ObjectKind kind,
                           const std::string& name,
                           std::vector<v1::Event>* out);

// The commands. Each returns the exit code.
int CmdGet(Invocation& inv);
int CmdDescribe(Invocation& inv);
int CmdCreate(Invocation& inv);
int CmdDelete(Invocation& inv);
int CmdCordon(Invocation& inv, bool cordon);
int CmdCancel(Invocation& inv);
int CmdMigrate(Invocation& inv);
int CmdDrain(Invocation& inv);
int CmdTop(Invocation& inv);
int CmdVersion(Invocation& inv);
int CmdCompletion(Invocation& inv);
int CmdConfig(Invocation& inv);

bool IsCommand(const std::string& name);
// Help text for `command` ("" or unknown = top level).
std::string HelpText(const std::string& command);

}  // namespace ferry::cli

#endif  // FERRY_CLI_APP_INTERNAL_H_
