// Connection handling and helpers shared by the commands.
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/app_internal.h"
#include "cli/units.h"

namespace ferry::cli {

int UsageError(Invocation& inv, const std::string& message) {
  inv.err() << "error: " << message << "\n"
            << "Run 'ferryctl " << (inv.command.empty() ? "" : inv.command + " ")
            << "--help' for usage.\n";
  return kExitUsage;
}

int UsageError(Invocation& inv, const absl::Status& status) {
  return UsageError(inv, std::string(status.message()));
}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(Invocation& inv) {
  auto address = ResolveServer(inv.args.Get("server"), inv.args.Get("context"),
                               inv.env.getenv);
  if (!address.ok()) return address.status();
  absl::Duration timeout = absl::Seconds(10);
  std::string t = inv.args.Get("request-timeout");
  // --timeout means the migration's deadline for migrate/drain.
  if (t.empty() && inv.command != "migrate" && inv.command != "drain") {
    t = inv.args.Get("timeout");
  }
  if (!t.empty()) {
    auto d = ParseDurationArg(t);
    if (!d.ok()) return d.status();
    if (*d <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError("--request-timeout must be positive");
    }
    timeout = *d;
  }
  auto c = std::unique_ptr<Client>(new Client());
  c->address_ = *address;
  c->timeout_ = timeout;
  c->channel_ = grpc::CreateChannel(address->address,
                                    grpc::InsecureChannelCredentials());
  c->stub_ = v1::ControllerService::NewStub(c->channel_);
  return c;
}

std::unique_ptr<grpc::ClientContext> Client::UnaryContext() const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() +
                    absl::ToChronoMilliseconds(timeout_));
  return ctx;
}

std::unique_ptr<grpc::ClientContext> Client::StreamContext() const {
  return std::make_unique<grpc::ClientContext>();
}

namespace {

const char* CodeName(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return nullptr;  // Self-explanatory with the message.
  }
}

}  // namespace

int Client::Fail(Invocation& inv, const grpc::Status& s) const {
  grpc_connectivity_state state = channel_->GetState(false);
  bool never_connected = state != GRPC_CHANNEL_READY;
  if (never_connected && (s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                          s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)) {
    inv.err() << "error: cannot reach the server at " << address_.address
              << " (from " << address_.source << "): " << s.error_message()
              << "\n";
    return kExitUnreachable;
  }
  if (s.error_code() == grpc::StatusCode::CANCELLED && inv.Interrupted()) {
    return kExitInterrupted;
  }
  std::string msg = s.error_message();
  for (char& ch : msg) {
    if (ch == '\n') ch = ' ';  // One line, always.
  }
  inv.err() << "error: " << (msg.empty() ? "call failed" : msg);
  // Codes whose name adds to the message (a deadline, an outage) are
  // shown; NOT_FOUND and friends read fine from the message alone.
  if (const char* name = CodeName(s.error_code())) {
    inv.err() << " (" << name << ")";
  }
  inv.err() << "\n";
  return kExitFailed;
}

struct CancelOnInterrupt::State {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread thread;
};

CancelOnInterrupt::CancelOnInterrupt(const Invocation& inv,
                                     grpc::ClientContext* ctx)
    : state_(std::make_shared<State>()) {
  if (inv.env.interrupted == nullptr) return;
  const std::atomic<bool>* flag = inv.env.interrupted;
  State* st = state_.get();
  st->thread = std::thread([st, flag, ctx] {
    std::unique_lock<std::mutex> lock(st->mu);
    while (!st->done) {
      if (flag->load()) {
        ctx->TryCancel();
        return;
      }
      st->cv.wait_for(lock, std::chrono::milliseconds(50));
    }
  });
}

CancelOnInterrupt::~CancelOnInterrupt() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->done = true;
  }
  state_->cv.notify_all();
  if (state_->thread.joinable()) state_->thread.join();
}

bool SleepUnlessInterrupted(const Invocation& inv, absl::Duration d) {
  absl::Time end = absl::Now() + d;
  while (absl::Now() < end) {
    if (inv.Interrupted()) return false;
    absl::SleepFor(std::min(absl::Milliseconds(50), end - absl::Now()));
  }
  return !inv.Interrupted();
}

std::string RandomRequestId() {
  std::random_device rd;
  return absl::StrFormat("%08x%08x%08x%08x", rd(), rd(), rd(), rd());
}

std::string CanonicalResource(const std::string& w) {
  if (w == "host" || w == "hosts") return "hosts";
  if (w == "vm" || w == "vms") return "vms";
  if (w == "migration" || w == "migrations" || w == "mig" || w == "migs") {
    return "migrations";
  }
  return "";
}

grpc::Status ListAllHosts(Client& c, const std::string& selector,
                          std::vector<v1::Host>* out) {
  v1::ListHostsRequest req;
  req.set_label_selector(selector);
  do {
    v1::ListHostsResponse resp;
    auto ctx = c.UnaryContext();
    grpc::Status s = c.stub().ListHosts(ctx.get(), req, &resp);
    if (!s.ok()) return s;
    out->insert(out->end(), resp.hosts().begin(), resp.hosts().end());
    req.set_page_token(resp.next_page_token());
  } while (!req.page_token().empty());
  return grpc::Status::OK;
}

grpc::Status ListAllVms(Client& c, const std::string& selector,
                        const std::string& host, std::vector<v1::Vm>* out) {
  v1::ListVmsRequest req;
  req.set_label_selector(selector);
  req.set_host(host);
  do {
    v1::ListVmsResponse resp;
    auto ctx = c.UnaryContext();
    grpc::Status s = c.stub().ListVms(ctx.get(), req, &resp);
    if (!s.ok()) return s;
    out->insert(out->end(), resp.vms().begin(), resp.vms().end());
    req.set_page_token(resp.next_page_token());
  } while (!req.page_token().empty());
  return grpc::Status::OK;
}

grpc::Status ListAllMigrations(Client& c, const std::string& host,
                               const std::string& vm,
                               std::vector<v1::Migration>* out) {
  v1::ListMigrationsRequest req;
  req.set_host(host);
  req.set_vm_name(vm);
  do {
    v1::ListMigrationsResponse resp;
    auto ctx = c.UnaryContext();
    grpc::Status s = c.stub().ListMigrations(ctx.get(), req, &resp);
    if (!s.ok()) return s;
    out->insert(out->end(), resp.migrations().begin(),
                resp.migrations().end());
    req.set_page_token(resp.next_page_token());
  } while (!req.page_token().empty());
  return grpc::Status::OK;
}

grpc::Status ListAllEvents(Client& c, v1::ObjectKind kind,
                           const std::string& name,
                           std::vector<v1::Event>* out) {
  v1::ListEventsRequest req;
  req.set_object_kind(kind);
  req.set_object_name(name);
  do {
    v1::ListEventsResponse resp;
    auto ctx = c.UnaryContext();
    grpc::Status s = c.stub().ListEvents(ctx.get(), req, &resp);
    if (!s.ok()) return s;
    out->insert(out->end(), resp.events().begin(), resp.events().end());
    req.set_page_token(resp.next_page_token());
  } while (!req.page_token().empty());
  return grpc::Status::OK;
}

}  // namespace ferry::cli
