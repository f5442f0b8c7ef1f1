#include "proto/phases.h"
#include "agent/service/engine_hooks.h"

#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/service/log.h"
#include "agent/service/proto_util.h"
#include "agent/service/status_conversion.h"

namespace ferry::service {
namespace {

constexpr uint32_t kMaxStreams = 16;

absl::Status CheckMigrationId(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("migration_id is required");
  if (id.size() > 128) {
    return absl::InvalidArgumentError("migration_id is longer than 128 bytes");
  }
  return absl::OkStatus();
}

absl::Status CheckDuration(const google::protobuf::Duration& d,
                           absl::string_view field) {
  if (d.seconds() < 0 || d.nanos() < 0 || d.nanos() >= 1000000000) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy.", field, " must be a non-negative duration"));
  }
  return absl::OkStatus();
}

absl::Status ValidatePolicy(const v1::MigrationPolicy& p) {
  if (p.has_streams() && (p.streams() < 1 || p.streams() > kMaxStreams)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "policy.streams must be 1..", kMaxStreams, ", got ", p.streams()));
  }
  if (absl::Status s = CheckDuration(p.max_downtime(), "max_downtime"); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckDuration(p.completion_timeout_per_gib(),
                                     "completion_timeout_per_gib");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckDuration(p.progress_timeout(), "progress_timeout");
      !s.ok()) {
    return s;
  }
  if (p.has_throttle_max_percent() && p.throttle_max_percent() > 99) {
    return absl::InvalidArgumentError("policy.throttle_max_percent must be <= 99");
  }
  return absl::OkStatus();
}

v1::MigrationPhase PhaseOf(const migration::IncomingInfo& info) {
  switch (info.state) {
    case migration::ReceiverState::kPrepared:
    case migration::ReceiverState::kConnected:
      return v1::MIGRATION_PHASE_PREPARING;
    case migration::ReceiverState::kReceiving:
      return v1::MIGRATION_PHASE_TRANSFERRING;
    case migration::ReceiverState::kVerifying:
      return v1::MIGRATION_PHASE_SWITCHOVER;
    case migration::ReceiverState::kArmed:
      return v1::MIGRATION_PHASE_FINISHING;
    case migration::ReceiverState::kResumed:
      return v1::MIGRATION_PHASE_SUCCEEDED;
    case migration::ReceiverState::kAborted:
      return info.failure == v1::MIGRATION_FAILURE_CANCELLED
                 ? v1::MIGRATION_PHASE_CANCELLED
                 : v1::MIGRATION_PHASE_FAILED;
  }
  return v1::MIGRATION_PHASE_UNSPECIFIED;
}

// Ends a stream at once with a status.
class FinishedReactor : public grpc::ServerWriteReactor<v1::MigrationProgress> {
 public:
  explicit FinishedReactor(const absl::Status& status) {
    Finish(ToGrpcStatus(status));
  }
  void OnDone() override { delete this; }
};

}  // namespace

// --- records -----------------------------------------------------------------

struct EngineMigrationHooks::Outgoing {
  std::string id;
  std::string vm_name;
  std::string destination_host;
  v1::MigrationPolicy policy;
  absl::Time create_time;
  std::unique_ptr<migration::OutgoingMigration> engine;  // set once, at start
  absl::Mutex mu;
  std::shared_ptr<vmm::Vm> vm ABSL_GUARDED_BY(mu);
  bool cleaned ABSL_GUARDED_BY(mu) = false;
  absl::Time terminal_time ABSL_GUARDED_BY(mu);
};

struct EngineMigrationHooks::Incoming {
  std::string id;
  std::string vm_name;
  std::string uid;
  std::string source_host;
  uint64_t memory_bytes = 0;
  v1::MigrationPolicy policy;
  absl::Time create_time;
  absl::Mutex mu;
  bool terminal ABSL_GUARDED_BY(mu) = false;
  bool shell_released ABSL_GUARDED_BY(mu) = false;
  absl::Time terminal_time ABSL_GUARDED_BY(mu);
};

// --- WatchMigration streams ---------------------------------------------------

// Shared state of one WatchMigration stream: the engine (or the janitor)
// pushes samples, gRPC reports writes done. Decisions are taken under mu_;
// StartWrite/Finish are called outside it. The reactor stays alive while a
// write is in flight or until Finish's OnDone, which is what makes the
// pointer safe to use outside the lock.
class EngineMigrationHooks::Sink {
 public:
  class Reactor : public grpc::ServerWriteReactor<v1::MigrationProgress> {
   public:
    explicit Reactor(std::shared_ptr<Sink> sink) : sink_(std::move(sink)) {}
    void OnWriteDone(bool ok) override { sink_->WriteDone(ok); }
    void OnCancel() override { sink_->Cancelled(); }
    void OnDone() override {
      sink_->Done();
      delete this;
    }

   private:
    std::shared_ptr<Sink> sink_;
  };

  Sink(std::string id, bool source, absl::Duration min_interval,
       std::function<void(Sink*)> on_done)
      : id_(std::move(id)),
        source_(source),
        min_interval_(min_interval),
        on_done_(std::move(on_done)) {}

  void Attach(Reactor* reactor) {
    absl::MutexLock lock(&mu_);
    reactor_ = reactor;
  }
  const std::string& id() const { return id_; }
  bool source() const { return source_; }
  void set_watcher(int w) {
    absl::MutexLock lock(&mu_);
    watcher_ = w;
  }
  int watcher() const {
    absl::MutexLock lock(&mu_);
    return watcher_;
  }

  void Push(const v1::MigrationProgress& p) {
    Action a;
    {
      absl::MutexLock lock(&mu_);
      if (reactor_ == nullptr || finish_called_ || terminal_queued_) return;
      if (v1::IsTerminalPhase(p.phase())) terminal_queued_ = true;
      pending_ = p;
      a = NextLocked();
    }
    Run(a);
  }
  void Close(const grpc::Status& status) {
    Action a;
    {
      absl::MutexLock lock(&mu_);
      if (reactor_ == nullptr || finish_called_) return;
      close_ = status;
      a = NextLocked();
    }
    Run(a);
  }

 private:
  struct Action {
    Reactor* reactor = nullptr;
    const v1::MigrationProgress* write = nullptr;
    std::optional<grpc::Status> finish;
  };

  void WriteDone(bool ok) {
    Action a;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) cancelled_ = true;
      if (v1::IsTerminalPhase(current_.phase())) terminal_written_ = true;
      a = NextLocked();
    }
    Run(a);
  }
  void Cancelled() {
    Action a;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      a = NextLocked();
    }
    Run(a);
  }
  void Done() {
    {
      absl::MutexLock lock(&mu_);
      reactor_ = nullptr;
    }
    if (on_done_) on_done_(this);
  }

  Action NextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Action a;
    if (reactor_ == nullptr || writing_ || finish_called_) return a;
    a.reactor = reactor_;
    if (cancelled_) {
      finish_called_ = true;
      a.finish = grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled");
      return a;
    }
    if (close_.has_value()) {
      finish_called_ = true;
      a.finish = *close_;
      return a;
    }
    if (terminal_written_) {
      finish_called_ = true;
      a.finish = grpc::Status::OK;
      return a;
    }
    if (!pending_.has_value()) return Action{};
    const absl::Time now = absl::Now();
    const bool urgent = v1::IsTerminalPhase(pending_->phase()) || !wrote_any_ ||
                        pending_->phase() != current_.phase();
    if (!urgent && now - last_write_ < min_interval_) return Action{};
    current_ = std::move(*pending_);
    pending_.reset();
    writing_ = true;
    wrote_any_ = true;
    last_write_ = now;
    a.write = &current_;
    return a;
  }

  static void Run(const Action& a) {
    if (a.reactor == nullptr) return;
    if (a.write != nullptr) a.reactor->StartWrite(a.write);
    if (a.finish.has_value()) a.reactor->Finish(*a.finish);
  }

  const std::string id_;
  const bool source_;
  const absl::Duration min_interval_;
  const std::function<void(Sink*)> on_done_;

  mutable absl::Mutex mu_;
  Reactor* reactor_ ABSL_GUARDED_BY(mu_) = nullptr;
  int watcher_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<v1::MigrationProgress> pending_ ABSL_GUARDED_BY(mu_);
  v1::MigrationProgress current_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> close_ ABSL_GUARDED_BY(mu_);
  absl::Time last_write_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool wrote_any_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  bool terminal_queued_ ABSL_GUARDED_BY(mu_) = false;
  bool terminal_written_ ABSL_GUARDED_BY(mu_) = false;
};

// --- construction --------------------------------------------------------------

EngineMigrationHooks::EngineMigrationHooks(VmRegistry& registry,
                                           EngineHooksOptions options)
    : registry_(registry), options_(std::move(options)) {
  migration::IncomingOptions o;
  o.backend = options_.incoming_backend;
  o.adopt = [this](const std::string& id, std::unique_ptr<vmm::Vm> vm) {
    Adopt(id, std::move(vm));
  };
  o.default_ttl = options_.prepare_ttl;
  o.idle_timeout = options_.idle_timeout;
  incoming_ = std::make_unique<migration::IncomingMigrations>(std::move(o));
  janitor_ = std::thread([this] { JanitorLoop(); });
}

EngineMigrationHooks::~EngineMigrationHooks() {
  Shutdown();
  incoming_.reset();
}

grpc::Service* EngineMigrationHooks::migration_service() {
  return incoming_->service();
}

void EngineMigrationHooks::SetEndpoint(const std::string& endpoint) {
  incoming_->set_endpoint(endpoint);
  absl::MutexLock lock(&mu_);
  endpoint_ = endpoint;
}

std::shared_ptr<EngineMigrationHooks::Outgoing> EngineMigrationHooks::FindOutgoing(
    const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = outgoing_.find(id);
  return it == outgoing_.end() ? nullptr : it->second;
}

std::shared_ptr<EngineMigrationHooks::Incoming> EngineMigrationHooks::FindIncoming(
    const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = incoming_records_.find(id);
  return it == incoming_records_.end() ? nullptr : it->second;
}

// --- destination ----------------------------------------------------------------

absl::StatusOr<v1::PrepareIncomingResponse> EngineMigrationHooks::PrepareIncoming(
    const v1::PrepareIncomingRequest& request) {
  if (absl::Status s = CheckMigrationId(request.migration_id()); !s.ok()) return s;
  if (!request.has_spec()) return absl::InvalidArgumentError("spec is required");
  if (absl::Status s = ValidateVmName(request.spec().name()); !s.ok()) return s;
  if (absl::Status s = ValidatePolicy(request.policy()); !s.ok()) return s;
  if (absl::Status s = CheckDuration(request.ttl(), "ttl"); !s.ok()) {
    return absl::InvalidArgumentError("ttl must be a non-negative duration");
  }
  const absl::Duration ttl = FromProtoDuration(request.ttl());
  if (ttl > absl::Hours(24)) {
    return absl::InvalidArgumentError("ttl must be at most 24h");
  }
  const std::string& id = request.migration_id();
  const v1::VmSpec& spec = request.spec();

  absl::MutexLock op(&op_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return absl::UnavailableError("the agent is shutting down");
    if (outgoing_.count(id) != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "migration ", id, " is an outgoing migration on this agent"));
    }
  }
  std::shared_ptr<Incoming> existing = FindIncoming(id);
  if (existing != nullptr && existing->vm_name != spec.name()) {
    return absl::AlreadyExistsError(absl::StrCat(
        "migration ", id, " was prepared for VM \"", existing->vm_name, "\""));
  }
  absl::StatusOr<vmm::Backend*> backend = registry_.ResolveBackend(spec.backend());
  if (!backend.ok()) return backend.status();
  if (*backend != options_.incoming_backend) {
    return absl::FailedPreconditionError(
        "this agent receives migrations on its preferred backend only; the "
        "spec asks for another one");
  }
  const bool fresh = existing == nullptr;
  if (fresh) {
    if (absl::Status s = registry_.Reserve(spec, request.vm_uid(), id); !s.ok()) {
      return s;
    }
  }
  absl::StatusOr<migration::PreparedIncoming> prepared =
      incoming_->Prepare(id, spec, request.policy(), ttl);
  if (!prepared.ok()) {
    if (fresh) {
      absl::StatusOr<std::string> owner = registry_.MigrationOf(spec.name());
      if (owner.ok() && *owner == id) registry_.Release(spec.name()).IgnoreError();
    }
    return prepared.status();
  }
  if (fresh) {
    auto in = std::make_shared<Incoming>();
    in->id = id;
    in->vm_name = spec.name();
    in->uid = request.vm_uid();
    in->source_host = request.source_host();
    in->memory_bytes = spec.memory_bytes();
    in->policy = request.policy();
    in->create_time = absl::Now();
    absl::MutexLock lock(&mu_);
    incoming_records_[id] = std::move(in);
  }
  LogInfo("migration ", id, ": prepared incoming VM ", spec.name(), " from ",
          request.source_host().empty() ? "?" : request.source_host());
  v1::PrepareIncomingResponse response;
  response.set_migration_id(id);
  response.set_endpoint(prepared->endpoint);
  response.set_token(prepared->token);
  ToProtoTime(prepared->expire_time, response.mutable_expire_time());
  *response.mutable_memory() = prepared->memory;
  response.set_min_protocol_version(prepared->min_protocol_version);
  response.set_max_protocol_version(prepared->max_protocol_version);
  return response;
}

void EngineMigrationHooks::Adopt(const std::string& migration_id,
                                 std::unique_ptr<vmm::Vm> vm) {
  if (vm == nullptr) return;
  const std::string name = vm->spec().name();
  std::shared_ptr<Incoming> in = FindIncoming(migration_id);
  // TODO(engine): the adopt callback does not carry VmState.started_time;
  // the VM's start time restarts here.
  absl::Status s = registry_.Adopt(std::move(vm), in ? in->uid : std::string(),
                                   migration_id, absl::Now());
  if (!s.ok()) {
    LogError("migration ", migration_id, ": cannot adopt VM ", name, ": ",
             s.ToString());
    return;
  }
  s = registry_.Activate(name);
  if (!s.ok()) {
    LogError("migration ", migration_id, ": cannot activate VM ", name, ": ",
             s.ToString());
  }
  if (in != nullptr) {
    absl::MutexLock lock(&in->mu);
    in->terminal = true;
    in->terminal_time = absl::Now();
  }
}

void EngineMigrationHooks::ReleaseShell(Incoming& in) {
  {
    absl::MutexLock lock(&in.mu);
    if (in.shell_released) return;
    in.shell_released = true;
    in.terminal = true;
    in.terminal_time = absl::Now();
  }
  absl::StatusOr<std::string> owner = registry_.MigrationOf(in.vm_name);
  if (!owner.ok() || *owner != in.id) return;  // already gone
  absl::StatusOr<std::shared_ptr<vmm::Vm>> vm = registry_.Release(in.vm_name);
  if (!vm.ok()) {
    LogWarning("migration ", in.id, ": cannot drop the shell of ", in.vm_name,
               ": ", vm.status().ToString());
    return;
  }
  LogInfo("migration ", in.id, ": aborted; dropped the incoming shell of ",
          in.vm_name);
}

absl::StatusOr<v1::FinishIncomingResponse> EngineMigrationHooks::FinishIncoming(
    const v1::FinishIncomingRequest& request) {
  if (absl::Status s = CheckMigrationId(request.migration_id()); !s.ok()) return s;
  if (FindIncoming(request.migration_id()) == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("no incoming migration ", request.migration_id()));
  }
  absl::StatusOr<migration::FinishResult> fin =
      incoming_->Finish(request.migration_id());
  if (!fin.ok()) return fin.status();
  v1::FinishIncomingResponse response;
  response.set_handoff(fin->handoff);
  ToProtoTime(fin->resumed_time, response.mutable_resumed_time());
  ToProtoDuration(fin->downtime, response.mutable_downtime());
  return response;
}

// --- source ---------------------------------------------------------------------

absl::StatusOr<v1::StartOutgoingResponse> EngineMigrationHooks::StartOutgoing(
    const v1::StartOutgoingRequest& request) {
  if (absl::Status s = CheckMigrationId(request.migration_id()); !s.ok()) return s;
  if (absl::Status s = ValidateVmName(request.vm_name()); !s.ok()) return s;
  if (request.destination_endpoint().empty()) {
    return absl::InvalidArgumentError("destination_endpoint is required");
  }
  if (request.token().empty()) return absl::InvalidArgumentError("token is required");
  if (absl::Status s = ValidatePolicy(request.policy()); !s.ok()) return s;
  const std::string& id = request.migration_id();

  absl::MutexLock op(&op_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return absl::UnavailableError("the agent is shutting down");
    if (incoming_records_.count(id) != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "migration ", id, " is an incoming migration on this agent"));
    }
  }
  if (std::shared_ptr<Outgoing> out = FindOutgoing(id)) {
    if (out->vm_name != request.vm_name()) {
      return absl::AlreadyExistsError(absl::StrCat(
          "migration ", id, " already migrates VM \"", out->vm_name, "\""));
    }
    v1::StartOutgoingResponse response;  // a repeated call
    response.set_migration_id(id);
    response.set_phase(out->engine->phase());
    return response;
  }
  absl::StatusOr<v1::Vm> current = registry_.Get(request.vm_name());
  if (!current.ok()) return current.status();
  if (current->status().phase() != v1::VM_PHASE_RUNNING) {
    return absl::FailedPreconditionError(absl::StrCat(
        "VM \"", request.vm_name(), "\" is ",
        v1::VmPhase_Name(current->status().phase()),
        "; only a RUNNING VM can be migrated"));
  }
  absl::StatusOr<std::shared_ptr<vmm::Vm>> vm = registry_.Acquire(request.vm_name());
  if (!vm.ok()) return vm.status();
  if (absl::Status s = registry_.AttachMigration(request.vm_name(), id, nullptr);
      !s.ok()) {
    return s;
  }

  auto out = std::make_shared<Outgoing>();
  out->id = id;
  out->vm_name = request.vm_name();
  out->destination_host = request.destination_host();
  out->policy = request.policy();
  out->create_time = absl::Now();
  {
    absl::MutexLock lock(&out->mu);
    out->vm = *vm;
  }
  migration::OutgoingOptions o;
  o.migration_id = id;
  o.endpoint = request.destination_endpoint();
  o.token = request.token();
  o.policy = request.policy();
  o.source_host = options_.host_name;
  o.destination_host = request.destination_host();
  Outgoing* raw = out.get();  // outlives its engine (a member of it)
  o.release = [this, raw](vmm::Vm*) {
    absl::Status marked = registry_.MarkMigrated(raw->vm_name);
    if (!marked.ok()) {
      LogWarning("migration ", raw->id, ": MarkMigrated: ", marked.ToString());
    }
    absl::StatusOr<std::shared_ptr<vmm::Vm>> gone = registry_.Release(raw->vm_name);
    if (!gone.ok()) {
      LogWarning("migration ", raw->id, ": Release: ", gone.status().ToString());
    }
    std::shared_ptr<vmm::Vm> last;
    {
      absl::MutexLock lock(&raw->mu);
      last = std::move(raw->vm);
    }
    gone = nullptr;
    last.reset();  // destroys the source copy (the engine no longer uses it)
    LogInfo("migration ", raw->id, ": handed off; source copy of ",
            raw->vm_name, " destroyed");
  };
  absl::StatusOr<std::unique_ptr<migration::OutgoingMigration>> engine =
      migration::OutgoingMigration::Start(vm->get(), std::move(o));
  if (!engine.ok()) {
    registry_.DetachMigration(request.vm_name(), id).IgnoreError();
    return engine.status();
  }
  out->engine = std::move(*engine);
  {
    absl::MutexLock lock(&mu_);
    outgoing_[id] = out;
  }
  // The record outlives its engine (a member of it), so the engine's thread
  // may use it by pointer.
  out->engine->Watch([this, raw](const v1::MigrationProgress& p) {
    if (!v1::IsTerminalPhase(p.phase())) return;
    if (p.phase() != v1::MIGRATION_PHASE_SUCCEEDED) {
      registry_.DetachMigration(raw->vm_name, raw->id).IgnoreError();
    }
    OnOutgoingTerminal(*raw);
  });
  LogInfo("migration ", id, ": started outgoing VM ", request.vm_name(), " to ",
          request.destination_endpoint());
  v1::StartOutgoingResponse response;
  response.set_migration_id(id);
  response.set_phase(out->engine->phase());
  return response;
}

void EngineMigrationHooks::OnOutgoingTerminal(Outgoing& out) {
  std::shared_ptr<vmm::Vm> drop;
  absl::MutexLock lock(&out.mu);
  if (out.cleaned) return;
  out.cleaned = true;
  out.terminal_time = absl::Now();
  drop = std::move(out.vm);  // the registry keeps its own reference
}

absl::StatusOr<v1::ConfirmOutgoingResponse> EngineMigrationHooks::ConfirmOutgoing(
    const v1::ConfirmOutgoingRequest& request) {
  if (absl::Status s = CheckMigrationId(request.migration_id()); !s.ok()) return s;
  if (request.outcome() != v1::CONFIRM_OUTCOME_HANDED_OFF &&
      request.outcome() != v1::CONFIRM_OUTCOME_ABORTED) {
    return absl::InvalidArgumentError("outcome must be HANDED_OFF or ABORTED");
  }
  std::shared_ptr<Outgoing> out = FindOutgoing(request.migration_id());
  if (out == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("no outgoing migration ", request.migration_id()));
  }
  absl::StatusOr<v1::MigrationResult> result = out->engine->Confirm(request.outcome());
  if (!result.ok()) return result.status();
  v1::ConfirmOutgoingResponse response;
  response.set_phase(result->phase());
  *response.mutable_result() = *result;
  return response;
}

// --- either side ----------------------------------------------------------------

absl::StatusOr<v1::AgentCancelMigrationResponse>
EngineMigrationHooks::CancelMigration(const v1::AgentCancelMigrationRequest& request) {
  if (absl::Status s = CheckMigrationId(request.migration_id()); !s.ok()) return s;
  const std::string reason =
      request.reason().empty() ? std::string("cancelled by the controller")
                               : request.reason();
  v1::AgentCancelMigrationResponse response;
  if (std::shared_ptr<Outgoing> out = FindOutgoing(request.migration_id())) {
    migration::OutgoingMigration& m = *out->engine;
    if (!v1::IsTerminalPhase(m.phase())) {
      absl::Status s = m.Cancel(reason);
      if (!s.ok() && !v1::IsTerminalPhase(m.phase())) return s;  // past Switchover
    }
    v1::MigrationResult r;
    if (m.WaitFor(options_.cancel_wait, &r)) {
      response.set_phase(r.phase());
    } else {
      response.set_phase(m.phase());
    }
    return response;
  }
  std::shared_ptr<Incoming> in = FindIncoming(request.migration_id());
  if (in == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("no migration ", request.migration_id(), " on this agent"));
  }
  absl::StatusOr<v1::HandoffState> handoff = incoming_->Cancel(in->id, reason);
  if (!handoff.ok()) return handoff.status();
  ReleaseShell(*in);
  response.set_handoff(*handoff);
  absl::StatusOr<migration::IncomingInfo> info = incoming_->Get(in->id);
  response.set_phase(info.ok() ? PhaseOf(*info) : v1::MIGRATION_PHASE_CANCELLED);
  return response;
}

v1::MigrationProgress EngineMigrationHooks::IncomingProgress(const Incoming& in) const {
  v1::MigrationProgress p;
  p.set_migration_id(in.id);
  const absl::Time now = absl::Now();
  ToProtoTime(now, p.mutable_sample_time());
  ToProtoDuration(now - in.create_time, p.mutable_elapsed());
  p.set_total_bytes(in.memory_bytes);
  absl::StatusOr<migration::IncomingInfo> info = incoming_->Get(in.id);
  if (!info.ok()) {  // forgotten after its retention
    p.set_phase(v1::MIGRATION_PHASE_FAILED);
    p.mutable_result()->set_phase(v1::MIGRATION_PHASE_FAILED);
    p.mutable_result()->set_message(std::string(info.status().message()));
    return p;
  }
  p.set_phase(PhaseOf(*info));
  p.set_pages_sent(info->pages_applied);
  p.set_payload_bytes(info->payload_bytes);
  if (v1::IsTerminalPhase(p.phase())) {
    v1::MigrationResult* r = p.mutable_result();
    r->set_phase(p.phase());
    r->set_failure(info->failure);
    r->set_message(info->message);
    r->set_vm_host(p.phase() == v1::MIGRATION_PHASE_SUCCEEDED ? options_.host_name
                                                              : in.source_host);
    r->set_pages_sent(info->pages_applied);
  }
  return p;
}

v1::AgentMigration EngineMigrationHooks::Describe(const Outgoing& out) const {
  v1::AgentMigration m;
  m.set_migration_id(out.id);
  m.set_role(v1::MIGRATION_ROLE_SOURCE);
  m.set_vm_name(out.vm_name);
  m.set_peer_host(out.destination_host);
  *m.mutable_policy() = out.policy;
  *m.mutable_progress() = out.engine->Progress();
  m.set_phase(m.progress().phase());
  v1::MigrationResult r;
  if (out.engine->WaitFor(absl::ZeroDuration(), &r)) *m.mutable_result() = r;
  ToProtoTime(out.create_time, m.mutable_create_time());
  return m;
}

v1::AgentMigration EngineMigrationHooks::Describe(const Incoming& in) const {
  v1::AgentMigration m;
  m.set_migration_id(in.id);
  m.set_role(v1::MIGRATION_ROLE_DESTINATION);
  m.set_vm_name(in.vm_name);
  m.set_peer_host(in.source_host);
  *m.mutable_policy() = in.policy;
  *m.mutable_progress() = IncomingProgress(in);
  m.set_phase(m.progress().phase());
  absl::StatusOr<migration::IncomingInfo> info = incoming_->Get(in.id);
  if (info.ok()) m.set_handoff(info->handoff);
  if (m.progress().has_result()) *m.mutable_result() = m.progress().result();
  ToProtoTime(in.create_time, m.mutable_create_time());
  return m;
}

absl::StatusOr<v1::AgentMigration> EngineMigrationHooks::GetMigration(
    const v1::AgentGetMigrationRequest& request) {
  if (absl::Status s = CheckMigrationId(request.migration_id()); !s.ok()) return s;
  if (std::shared_ptr<Outgoing> out = FindOutgoing(request.migration_id())) {
    return Describe(*out);
  }
  if (std::shared_ptr<Incoming> in = FindIncoming(request.migration_id())) {
    return Describe(*in);
  }
  return absl::NotFoundError(
      absl::StrCat("no migration ", request.migration_id(), " on this agent"));
}

absl::StatusOr<v1::AgentListMigrationsResponse> EngineMigrationHooks::ListMigrations(
    const v1::AgentListMigrationsRequest&) {
  std::vector<std::shared_ptr<Outgoing>> outs;
  std::vector<std::shared_ptr<Incoming>> ins;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, o] : outgoing_) outs.push_back(o);
    for (const auto& [id, i] : incoming_records_) ins.push_back(i);
  }
  v1::AgentListMigrationsResponse response;
  for (const auto& o : outs) *response.add_migrations() = Describe(*o);
  for (const auto& i : ins) *response.add_migrations() = Describe(*i);
  return response;
}

grpc::ServerWriteReactor<v1::MigrationProgress>* EngineMigrationHooks::WatchMigration(
    grpc::CallbackServerContext*, const v1::AgentWatchMigrationRequest* request) {
  if (absl::Status s = CheckMigrationId(request->migration_id()); !s.ok()) {
    return new FinishedReactor(s);
  }
  if (CheckDuration(request->min_interval(), "min_interval").ok() == false) {
    return new FinishedReactor(
        absl::InvalidArgumentError("min_interval must be a non-negative duration"));
  }
  const absl::Duration min_interval = FromProtoDuration(request->min_interval());
  std::shared_ptr<Outgoing> out = FindOutgoing(request->migration_id());
  std::shared_ptr<Incoming> in =
      out == nullptr ? FindIncoming(request->migration_id()) : nullptr;
  if (out == nullptr && in == nullptr) {
    return new FinishedReactor(absl::NotFoundError(
        absl::StrCat("no migration ", request->migration_id(), " on this agent")));
  }
  const bool source = out != nullptr;
  auto sink = std::make_shared<Sink>(
      request->migration_id(), source,
      // Destination samples are synthesized: at phase changes and every 1s.
      source ? min_interval : std::max(min_interval, absl::Seconds(1)),
      // The engine keeps the (then inert) watcher: Unwatch here could race
      // the engine's destruction at shutdown.
      [this](Sink* s) {
        std::shared_ptr<Sink> keep;
        absl::MutexLock lock(&mu_);
        auto it = sinks_.find(s);
        if (it != sinks_.end()) {
          keep = std::move(it->second);
          sinks_.erase(it);
        }
      });
  auto* reactor = new Sink::Reactor(sink);
  sink->Attach(reactor);
  {
    // Held across Watch: Shutdown destroys engines only after it set
    // shut_down_ under mu_. (Watch calls the watcher at once; Push takes
    // no hooks lock.)
    absl::MutexLock lock(&mu_);
    if (shut_down_) {
      sink->Close(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                               "the agent is shutting down"));
      return reactor;
    }
    sinks_[sink.get()] = sink;
    if (source) {
      std::weak_ptr<Sink> weak = sink;
      const int w = out->engine->Watch([weak](const v1::MigrationProgress& p) {
        if (std::shared_ptr<Sink> s = weak.lock()) s->Push(p);
      });
      sink->set_watcher(w);
    }
  }
  if (!source) sink->Push(IncomingProgress(*in));
  return reactor;
}

void EngineMigrationHooks::FillHostInfo(v1::HostInfo* info) {
  {
    absl::MutexLock lock(&mu_);
    if (!endpoint_.empty()) info->set_migration_address(endpoint_);
  }
  info->set_min_protocol_version(migration::kMinProtocolVersion);
  info->set_max_protocol_version(migration::kProtocolVersion);
}

// --- background -------------------------------------------------------------------

void EngineMigrationHooks::JanitorLoop() {
  while (!stop_.WaitForNotificationWithTimeout(options_.janitor_interval)) {
    std::vector<std::shared_ptr<Incoming>> ins;
    std::vector<std::shared_ptr<Sink>> dest_sinks;
    std::vector<std::shared_ptr<Outgoing>> expired_out;
    const absl::Time now = absl::Now();
    {
      absl::MutexLock lock(&mu_);
      for (const auto& [id, i] : incoming_records_) ins.push_back(i);
      for (const auto& [p, s] : sinks_) {
        if (!s->source()) dest_sinks.push_back(s);
      }
      for (auto it = outgoing_.begin(); it != outgoing_.end();) {
        bool expired;
        {
          absl::MutexLock olock(&it->second->mu);
          expired = it->second->cleaned &&
                    now - it->second->terminal_time >= options_.retention;
        }
        if (expired) {
          expired_out.push_back(it->second);
          it = outgoing_.erase(it);
        } else {
          ++it;
        }
      }
    }
    expired_out.clear();  // joins finished engine threads, outside mu_
    std::vector<std::string> forget;
    for (const auto& in : ins) {
      bool terminal;
      absl::Time since;
      {
        absl::MutexLock lock(&in->mu);
        terminal = in->terminal;
        since = in->terminal_time;
      }
      if (terminal) {
        if (now - since >= options_.retention) forget.push_back(in->id);
        continue;
      }
      absl::StatusOr<migration::IncomingInfo> info = incoming_->Get(in->id);
      if (!info.ok() || info->state == migration::ReceiverState::kAborted) {
        ReleaseShell(*in);
      } else if (info->state == migration::ReceiverState::kResumed) {
        absl::MutexLock lock(&in->mu);
        in->terminal = true;
        in->terminal_time = now;
      }
    }
    if (!forget.empty()) {
      absl::MutexLock lock(&mu_);
      for (const auto& id : forget) incoming_records_.erase(id);
    }
    for (const auto& s : dest_sinks) {
      std::shared_ptr<Incoming> in = FindIncoming(s->id());
      if (in == nullptr) {
        s->Close(grpc::Status(grpc::StatusCode::NOT_FOUND, "migration forgotten"));
      } else {
        s->Push(IncomingProgress(*in));
      }
    }
  }
}

void EngineMigrationHooks::Shutdown() {
  std::map<std::string, std::shared_ptr<Outgoing>> outs;
  std::map<std::string, std::shared_ptr<Incoming>> ins;
  std::vector<std::shared_ptr<Sink>> sinks;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    outs = outgoing_;
    ins = incoming_records_;
    for (const auto& [p, s] : sinks_) sinks.push_back(s);
  }
  stop_.Notify();
  if (janitor_.joinable()) janitor_.join();
  for (const auto& s : sinks) {
    s->Close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the agent is shutting down"));
  }
  // Source: before the handoff the engine cancels and the VM stays here;
  // a migration waiting for ConfirmOutgoing leaves its VM paused.
  for (auto& [id, out] : outs) {
    const bool terminal = v1::IsTerminalPhase(out->engine->phase());
    if (!terminal) LogWarning("migration ", id, ": interrupted by shutdown");
    out->engine.reset();
    {
      absl::MutexLock lock(&out->mu);
      if (!out->cleaned) {
        registry_.DetachMigration(out->vm_name, out->id).IgnoreError();
      }
      out->cleaned = true;
      out->vm.reset();
    }
  }
  {
    absl::MutexLock lock(&mu_);
    outgoing_.clear();
  }
  // Destination: everything not RESUMED is aborted and its shell dropped.
  for (auto& [id, in] : ins) {
    absl::StatusOr<migration::IncomingInfo> info = incoming_->Get(id);
    if (info.ok() && info->state != migration::ReceiverState::kResumed &&
        info->state != migration::ReceiverState::kAborted) {
      incoming_->Cancel(id, "the destination agent is shutting down").IgnoreError();
    }
    if (!info.ok() || info->state != migration::ReceiverState::kResumed) {
      ReleaseShell(*in);
    }
  }
}

}  // namespace ferry::service
