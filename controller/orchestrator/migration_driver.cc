#include "proto/phases.h"
#include "controller/orchestrator/migration_driver.h"

#include <chrono>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace ferry::controller {
namespace {

// The call may or may not have reached the agent.
bool Unknown(const grpc::Status& s) {
  switch (s.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::CANCELLED:
    case grpc::StatusCode::INTERNAL:
      return true;
    default:
      return false;
  }
}

std::string RandomId() {
  absl::BitGen gen;
  return absl::StrFormat("mig-%016x%016x", absl::Uniform<uint64_t>(gen),
                         absl::Uniform<uint64_t>(gen));
}

void SetDuration(absl::Duration d, google::protobuf::Duration* out) {
  const int64_t ns = absl::ToInt64Nanoseconds(d);
  out->set_seconds(ns / 1000000000);
  out->set_nanos(static_cast<int32_t>(ns % 1000000000));
}

absl::Duration GetDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

std::string Describe(const grpc::Status& s) {
  return absl::StrCat(s.error_code(), " ", s.error_message());
}

}  // namespace

MigrationDriver::MigrationDriver(MigrationRequest request)
    : request_(std::move(request)) {
  if (request_.migration_id.empty()) request_.migration_id = RandomId();
  if (request_.source_host.empty()) request_.source_host = request_.source_address;
  if (request_.destination_host.empty()) {
    request_.destination_host = request_.destination_address;
  }
  if (!request_.credentials) {
    request_.credentials = grpc::InsecureChannelCredentials();
  }
  source_ = v1::AgentService::NewStub(
      grpc::CreateChannel(request_.source_address, request_.credentials));
  destination_ = v1::AgentService::NewStub(
      grpc::CreateChannel(request_.destination_address, request_.credentials));
}

std::unique_ptr<grpc::ClientContext> MigrationDriver::Ctx(absl::Duration timeout) const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return ctx;
}

bool MigrationDriver::abandoned() {
  absl::MutexLock lock(&mu_);
  return abandoned_;
}

void MigrationDriver::Abandon() {
  absl::MutexLock lock(&mu_);
  abandoned_ = true;
  if (watch_ctx_ != nullptr) watch_ctx_->TryCancel();
}

v1::MigrationResult MigrationDriver::AbandonedResult(MigrationDetails* details) {
  details->abandoned = true;
  v1::MigrationResult r;
  r.set_phase(v1::MIGRATION_PHASE_FAILED);
  r.set_failure(v1::MIGRATION_FAILURE_INTERRUPTED);
  r.set_message("abandoned by the controller (shutdown); the agents keep their state");
  r.set_vm_host(request_.source_host);
  return r;
}

v1::MigrationResult MigrationDriver::FinishHandoff(MigrationDetails* details) {
  MigrationDetails scratch;
  if (details == nullptr) details = &scratch;
  details->migration_id = request_.migration_id;
  start_ = absl::Now();
  return Handoff(details);
}

void MigrationDriver::Cancel(const std::string& reason) {
  bool started;
  {
    absl::MutexLock lock(&mu_);
    if (cancel_requested_) return;
    cancel_requested_ = true;
    cancel_reason_ = reason;
    started = started_;
  }
  // Before StartOutgoing, Run() sees the flag at its next step.
  if (started) CancelSource(reason);
}

void MigrationDriver::CancelSource(const std::string& reason) {
  v1::AgentCancelMigrationRequest req;
  req.set_migration_id(request_.migration_id);
  req.set_reason(reason);
  v1::AgentCancelMigrationResponse resp;
  // FAILED_PRECONDITION past Switchover: the handoff decides now. Ignored.
  source_->CancelMigration(Ctx(request_.rpc_timeout).get(), req, &resp);
}

bool MigrationDriver::CancelDestination(const std::string& reason) {
  v1::AgentCancelMigrationRequest req;
  req.set_migration_id(request_.migration_id);
  req.set_reason(reason);
  const absl::Time end = absl::Now() + request_.agent_lost_after;
  for (;;) {
    v1::AgentCancelMigrationResponse resp;
    grpc::Status s =
        destination_->CancelMigration(Ctx(request_.rpc_timeout).get(), req, &resp);
    if (s.ok()) return resp.handoff() == v1::HANDOFF_STATE_ABORTED;
    if (s.error_code() == grpc::StatusCode::NOT_FOUND) return true;
    if (!Unknown(s) || absl::Now() >= end) return false;
    absl::SleepFor(absl::Milliseconds(200));
  }
}

v1::MigrationResult MigrationDriver::Fail(v1::MigrationFailure failure,
                                          const grpc::Status& status,
                                          const std::string& what,
                                          const std::string& vm_host) {
  v1::MigrationResult r;
  bool cancelled;
  {
    absl::MutexLock lock(&mu_);
    cancelled = cancel_requested_;
  }
  r.set_phase(cancelled ? v1::MIGRATION_PHASE_CANCELLED : v1::MIGRATION_PHASE_FAILED);
  r.set_failure(cancelled ? v1::MIGRATION_FAILURE_CANCELLED : failure);
  r.set_error_code(static_cast<int32_t>(status.error_code()));
  r.set_message(status.ok() ? what : absl::StrCat(what, ": ", status.error_message()));
  r.set_vm_host(vm_host);
  SetDuration(absl::Now() - start_, r.mutable_total_time());
  return r;
}

v1::MigrationResult RunMigration(MigrationRequest request,
                                 const ProgressCallback& progress,
                                 MigrationDetails* details) {
  MigrationDriver driver(std::move(request));
  return driver.Run(progress, details);
}

v1::MigrationResult MigrationDriver::Run(const ProgressCallback& progress,
                                         MigrationDetails* details) {
  MigrationDetails scratch;
  if (details == nullptr) details = &scratch;
  details->migration_id = request_.migration_id;
  start_ = absl::Now();
  const std::string& id = request_.migration_id;
  auto cancelled = [this] {
    absl::MutexLock lock(&mu_);
    return cancel_requested_;
  };
  const grpc::Status kCancelled(grpc::StatusCode::CANCELLED, "cancel requested");

  // 1. The VM as it runs on the source.
  v1::AgentGetVmRequest get;
  get.set_name(request_.vm_name);
  v1::Vm vm;
  grpc::Status s = source_->GetVm(Ctx(request_.rpc_timeout).get(), get, &vm);
  if (!s.ok()) {
    return Fail(v1::MIGRATION_FAILURE_SOURCE_ERROR, s, "GetVm on the source",
                request_.source_host);
  }
  if (cancelled()) {
    return Fail(v1::MIGRATION_FAILURE_CANCELLED, kCancelled, "cancelled",
                request_.source_host);
  }

  if (abandoned()) return AbandonedResult(details);
  // 2. Prepare the destination.
  v1::PrepareIncomingRequest prep;
  prep.set_migration_id(id);
  *prep.mutable_spec() = vm.spec();
  prep.set_vm_uid(vm.uid());
  *prep.mutable_policy() = request_.policy;
  prep.set_source_host(request_.source_host);
  if (request_.prepare_ttl > absl::ZeroDuration()) {
    SetDuration(request_.prepare_ttl, prep.mutable_ttl());
  }
  v1::PrepareIncomingResponse prepared;
  s = destination_->PrepareIncoming(Ctx(request_.rpc_timeout).get(), prep, &prepared);
  if (!s.ok()) {
    if (Unknown(s)) CancelDestination("PrepareIncoming failed: " + s.error_message());
    return Fail(v1::MIGRATION_FAILURE_DESTINATION_ERROR, s,
                "PrepareIncoming on the destination", request_.source_host);
  }
  if (cancelled()) {
    CancelDestination("cancelled before StartOutgoing");
    return Fail(v1::MIGRATION_FAILURE_CANCELLED, kCancelled, "cancelled",
                request_.source_host);
  }

  // 3. Start the source.
  v1::StartOutgoingRequest start;
  start.set_migration_id(id);
  start.set_vm_name(request_.vm_name);
  start.set_destination_host(request_.destination_host);
  start.set_destination_endpoint(prepared.endpoint());
  start.set_token(prepared.token());
  *start.mutable_policy() = request_.policy;
  v1::StartOutgoingResponse started;
  s = source_->StartOutgoing(Ctx(request_.rpc_timeout).get(), start, &started);
  if (!s.ok()) {
    // Before the handoff either way: cancel both (the source may have
    // accepted if the answer was lost).
    if (Unknown(s)) CancelSource("StartOutgoing failed: " + s.error_message());
    CancelDestination("StartOutgoing failed: " + s.error_message());
    return Fail(v1::MIGRATION_FAILURE_SOURCE_ERROR, s, "StartOutgoing on the source",
                request_.source_host);
  }
  details->setup_time = absl::Now() - start_;
  std::string pending_cancel;
  {
    absl::MutexLock lock(&mu_);
    started_ = true;
    if (cancel_requested_) pending_cancel = cancel_reason_;
  }
  if (!pending_cancel.empty()) CancelSource(pending_cancel);

  // 4. Watch until ARMED or terminal; re-watch after a broken stream.
  const absl::Time watch_end = absl::Now() + request_.watch_deadline;
  for (;;) {
    v1::AgentWatchMigrationRequest wreq;
    wreq.set_migration_id(id);
    SetDuration(request_.progress_interval, wreq.mutable_min_interval());
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(watch_end));
    {
      absl::MutexLock lock(&mu_);
      if (abandoned_) return AbandonedResult(details);
      watch_ctx_ = &ctx;
    }
    std::unique_ptr<grpc::ClientReader<v1::MigrationProgress>> reader =
        source_->WatchMigration(&ctx, wreq);
    v1::MigrationProgress p;
    bool armed = false, terminal = false;
    while (reader->Read(&p)) {
      details->last_progress = p;
      if (progress) progress(p);
      if (p.phase() == v1::MIGRATION_PHASE_FINISHING) {
        armed = true;
        break;
      }
      if (v1::IsTerminalPhase(p.phase())) {
        terminal = true;
        break;
      }
    }
    if (armed || terminal) {
      ctx.TryCancel();
      (void)reader->Finish();
    } else {
      s = reader->Finish();
    }
    {
      absl::MutexLock lock(&mu_);
      watch_ctx_ = nullptr;
    }
    if (abandoned()) return AbandonedResult(details);
    if (armed) return Handoff(details);
    if (terminal) {
      v1::MigrationResult r = p.result();
      if (r.phase() == v1::MIGRATION_PHASE_UNSPECIFIED) r.set_phase(p.phase());
      if (p.phase() == v1::MIGRATION_PHASE_SUCCEEDED) {  // DIRECT handoff
        if (r.vm_host().empty()) r.set_vm_host(request_.destination_host);
        return r;
      }
      // The source rolled back (it aborted the destination too; make sure).
      CancelDestination(absl::StrCat("source ended ",
                                     v1::MigrationPhase_Name(p.phase())));
      if (r.vm_host().empty()) r.set_vm_host(request_.source_host);
      return r;
    }

    // The stream broke before the end: ask the source what stands.
    const absl::Time lost_end = absl::Now() + request_.agent_lost_after;
    bool source_lost = s.error_code() == grpc::StatusCode::NOT_FOUND;
    bool rewatch = false;
    while (!source_lost && !rewatch) {
      if (abandoned()) return AbandonedResult(details);
      v1::AgentGetMigrationRequest greq;
      greq.set_migration_id(id);
      v1::AgentMigration m;
      grpc::Status gs = source_->GetMigration(Ctx(request_.rpc_timeout).get(), greq, &m);
      if (gs.ok()) {
        if (m.phase() == v1::MIGRATION_PHASE_FINISHING) return Handoff(details);
        if (v1::IsTerminalPhase(m.phase())) {
          v1::MigrationResult r = m.result();
          if (r.phase() == v1::MIGRATION_PHASE_UNSPECIFIED) r.set_phase(m.phase());
          if (m.phase() != v1::MIGRATION_PHASE_SUCCEEDED) {
            CancelDestination("source ended the migration");
          }
          return r;
        }
        rewatch = absl::Now() < watch_end;
        if (!rewatch) {
          CancelSource("watch deadline passed");
          source_lost = true;  // decide with the destination below
        }
      } else if (gs.error_code() == grpc::StatusCode::NOT_FOUND ||
                 absl::Now() >= lost_end) {
        source_lost = true;  // restarted (forgot it) or unreachable
      } else {
        absl::SleepFor(absl::Milliseconds(200));
      }
    }
    if (rewatch) continue;

    // The source agent is lost. The destination decides: before ARMED it
    // is cancelled; ARMED it may be finished (a source past Switchover
    // never resumes without an explicit ABORTED).
    v1::AgentGetMigrationRequest greq;
    greq.set_migration_id(id);
    v1::AgentMigration dm;
    grpc::Status ds = destination_->GetMigration(Ctx(request_.rpc_timeout).get(), greq, &dm);
    if (ds.ok() && (dm.handoff() == v1::HANDOFF_STATE_ARMED ||
                    dm.handoff() == v1::HANDOFF_STATE_RESUMED)) {
      return Handoff(details);
    }
    const bool aborted = CancelDestination("the source agent is lost");
    v1::MigrationResult r =
        Fail(v1::MIGRATION_FAILURE_INTERRUPTED, s,
             aborted ? "the source agent was lost before the handoff; the "
                       "destination was aborted"
                     : "the source agent was lost and the destination did not "
                       "answer",
             request_.source_host);
    if (!aborted) details->handoff_unknown = true;
    return r;
  }
}

v1::MigrationResult MigrationDriver::Handoff(MigrationDetails* details) {
  const std::string& id = request_.migration_id;
  if (abandoned()) return AbandonedResult(details);
  if (request_.before_phase) {
    absl::Status hs = request_.before_phase(v1::MIGRATION_PHASE_FINISHING);
    if (!hs.ok()) {
      details->handoff_unknown = true;
      return Fail(v1::MIGRATION_FAILURE_INTERRUPTED, grpc::Status::OK,
                  absl::StrCat("could not record FINISHING before the handoff (",
                               hs.ToString(),
                               "); the source stays paused until reconciled"),
                  request_.source_host);
    }
  }
  // FinishIncoming: the commit point, decided at the destination.
  v1::FinishIncomingRequest freq;
  freq.set_migration_id(id);
  v1::FinishIncomingResponse fin;
  bool resumed = false, aborted = false;
  grpc::Status s;
  const absl::Time end = absl::Now() + request_.agent_lost_after;
  for (;;) {
    s = destination_->FinishIncoming(Ctx(request_.rpc_timeout).get(), freq, &fin);
    if (s.ok()) {
      resumed = fin.handoff() == v1::HANDOFF_STATE_RESUMED;
      break;
    }
    if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
      // The destination restarted: an ARMED copy lives in its process
      // memory only, so it can never resume.
      aborted = true;
      break;
    }
    if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
      v1::AgentGetMigrationRequest greq;
      greq.set_migration_id(id);
      v1::AgentMigration dm;
      grpc::Status gs =
          destination_->GetMigration(Ctx(request_.rpc_timeout).get(), greq, &dm);
      if (gs.ok() && dm.handoff() == v1::HANDOFF_STATE_RESUMED) {
        resumed = true;
      } else if (gs.ok() && v1::IsTerminalPhase(dm.phase())) {
        aborted = dm.phase() != v1::MIGRATION_PHASE_SUCCEEDED;
      }
      if (resumed || aborted) break;
    }
    if (absl::Now() >= end) break;
    absl::SleepFor(absl::Milliseconds(200));
  }

  v1::ConfirmOutgoingRequest creq;
  creq.set_migration_id(id);
  v1::ConfirmOutgoingResponse conf;
  if (aborted) {
    // The destination's ABORTED is in hand: the source may resume.
    creq.set_outcome(v1::CONFIRM_OUTCOME_ABORTED);
    grpc::Status cs =
        source_->ConfirmOutgoing(Ctx(request_.confirm_timeout).get(), creq, &conf);
    if (cs.ok() && conf.result().phase() != v1::MIGRATION_PHASE_UNSPECIFIED) {
      v1::MigrationResult r = conf.result();
      if (r.vm_host().empty()) r.set_vm_host(request_.source_host);
      return r;
    }
    return Fail(v1::MIGRATION_FAILURE_DESTINATION_ERROR, s,
                absl::StrCat("the destination aborted at the handoff; "
                             "ConfirmOutgoing(ABORTED): ",
                             Describe(cs)),
                request_.source_host);
  }
  if (!resumed) {
    details->handoff_unknown = true;
    return Fail(v1::MIGRATION_FAILURE_INTERRUPTED, s,
                "handoff outcome unknown (FinishIncoming did not answer); the "
                "source copy stays paused until confirmed",
                request_.source_host);
  }
  details->destination_downtime = GetDuration(fin.downtime());
  if (request_.before_phase) {
    // The destination runs: the status cannot change what happens next.
    (void)request_.before_phase(v1::MIGRATION_PHASE_CONFIRMING);
  }

  // The destination runs and is authoritative: destroy the source copy.
  creq.set_outcome(v1::CONFIRM_OUTCOME_HANDED_OFF);
  grpc::Status cs;
  const absl::Time cend = absl::Now() + request_.agent_lost_after;
  for (;;) {
    cs = source_->ConfirmOutgoing(Ctx(request_.confirm_timeout).get(), creq, &conf);
    if (cs.ok() || !Unknown(cs) || absl::Now() >= cend) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  v1::MigrationResult r;
  if (cs.ok()) {
    r = conf.result();
    details->last_progress.set_phase(r.phase());
  } else {
    r.set_message(absl::StrCat("destination resumed; ConfirmOutgoing on the "
                               "source failed (its paused copy must be "
                               "confirmed later): ",
                               Describe(cs)));
    r.set_error_code(static_cast<int32_t>(cs.error_code()));
    SetDuration(absl::Now() - start_, r.mutable_total_time());
  }
  // Whatever the source says, the destination resumed: SUCCEEDED.
  r.set_phase(v1::MIGRATION_PHASE_SUCCEEDED);
  r.set_failure(v1::MIGRATION_FAILURE_UNSPECIFIED);
  r.set_vm_host(request_.destination_host);
  if (fin.has_downtime()) *r.mutable_downtime() = fin.downtime();
  return r;
}

}  // namespace ferry::controller
