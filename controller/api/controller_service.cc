#include "controller/api/controller_service.h"

#include <algorithm>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "controller/orchestrator/proto_time.h"
#include "controller/scheduler/drain.h"
#include "controller/scheduler/ledger.h"

namespace ferry::controller {
namespace {

using scheduler::IsTerminal;

bool Unreachable(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE ||
         s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
         s.error_code() == grpc::StatusCode::UNKNOWN ||
         s.error_code() == grpc::StatusCode::CANCELLED;
}

std::unique_ptr<v1::AgentService::Stub> AgentStub(const std::string& address) {
  return v1::AgentService::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return ctx;
}

v1::Event VmEvent(const std::string& vm, v1::EventSeverity severity,
                  const std::string& reason, const std::string& message) {
  v1::Event e;
  e.set_severity(severity);
  e.set_object_kind(v1::OBJECT_KIND_VM);
  e.set_object_name(vm);
  e.set_reason(reason);
  e.set_message(message);
  return e;
}

void BasicView(v1::Migration* m) { m->clear_progress_samples(); }

absl::Status CheckPageSize(int32_t page_size) {
  if (page_size < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size must be >= 0, got ", page_size));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateName(const std::string& field, const std::string& name) {
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is required"));
  bool ok = name.size() <= 63 && name.front() != '-' && name.back() != '-';
  for (char c : name) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-');
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, " '", name, "' is not a DNS label: use [a-z0-9-], at most 63 "
        "characters, starting and ending with a letter or digit"));
  }
  return absl::OkStatus();
}

ControllerServiceImpl::ControllerServiceImpl(Store* store, HostRegistry* hosts,
                                             Orchestrator* orchestrator,
                                             ControllerServiceOptions options)
    : store_(store), hosts_(hosts), orchestrator_(orchestrator), options_(options) {}

namespace {

// Stable across processes (absl::Hash is seeded per process): FNV-1a 64 of
// the deterministic serialization of the request without its request_id.
template <typename Request>
std::string RequestFingerprint(const Request& request) {
  Request copy = request;
  copy.clear_request_id();
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream raw(&bytes);
    google::protobuf::io::CodedOutputStream out(&raw);
    out.SetSerializationDeterministic(true);
    copy.SerializeToCodedStream(&out);
  }
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return absl::StrFormat("%016x", h);
}

std::string RequestAuxKey(const std::string& kind, const std::string& request_id) {
  return absl::StrCat("request/", kind, "/", request_id);
}

// Value: "<expiry unix seconds> <fingerprint> <result key>".
struct RequestRecord {
  int64_t expire_unix = 0;
  std::string fingerprint;
  std::string key;
};

bool ParseRequestRecord(const std::string& value, RequestRecord* out) {
  std::vector<std::string> parts = absl::StrSplit(value, absl::MaxSplits(' ', 2));
  return parts.size() == 3 && absl::SimpleAtoi(parts[0], &out->expire_unix) &&
         (out->fingerprint = parts[1], out->key = parts[2], !out->key.empty());
}

}  // namespace

absl::StatusOr<std::string> ControllerServiceImpl::LookupRequest(
    const std::string& kind, const std::string& request_id,
    const std::string& fingerprint) {
  if (request_id.empty()) return std::string();
  if (request_id.size() > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("request_id is ", request_id.size(), " bytes; at most 256"));
  }
  const absl::Time now = absl::Now();
  bool prune = false;
  {
    absl::MutexLock lock(&requests_mu_);
    if (now - last_request_prune_ > absl::Minutes(1)) {
      last_request_prune_ = now;
      prune = true;
    }
  }
  if (prune) {
    absl::StatusOr<std::vector<std::pair<std::string, std::string>>> all =
        store_->ListAux("request/");
    if (all.ok()) {
      for (const auto& [key, value] : *all) {
        RequestRecord r;
        // Unparsable records are dropped too: they can never match.
        if (!ParseRequestRecord(value, &r) || absl::FromUnixSeconds(r.expire_unix) < now) {
          (void)store_->DeleteAux(key);
        }
      }
    }
  }
  absl::StatusOr<std::string> value = store_->GetAux(RequestAuxKey(kind, request_id));
  if (absl::IsNotFound(value.status())) return std::string();
  if (!value.ok()) return value.status();
  RequestRecord r;
  if (!ParseRequestRecord(*value, &r) || absl::FromUnixSeconds(r.expire_unix) < now) {
    return std::string();  // expired: a new request
  }
  if (r.fingerprint != fingerprint) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request_id '", request_id, "' was already used for a different ", kind,
        " request (its result: ", r.key,
        "); a retry must repeat the request exactly, a new request needs a new "
        "request_id"));
  }
  return r.key;
}

void ControllerServiceImpl::RememberRequest(const std::string& kind,
                                            const std::string& request_id,
                                            const std::string& fingerprint,
                                            const std::string& key) {
  if (request_id.empty()) return;
  const int64_t expire = absl::ToUnixSeconds(absl::Now() + options_.request_id_ttl);
  // Best effort: the create itself is committed; failing to record the id
  // only makes a later retry behave as without one.
  (void)store_->PutAux(RequestAuxKey(kind, request_id),
                       absl::StrCat(expire, " ", fingerprint, " ", key));
}

// ---------------------------------------------------------------------------
// Hosts
// ---------------------------------------------------------------------------

grpc::Status ControllerServiceImpl::RegisterHost(grpc::ServerContext*,
                                                 const v1::RegisterHostRequest* req,
                                                 v1::RegisterHostResponse* resp) {
  if (!req->info().name().empty()) {
    if (absl::Status s = ValidateName("info.name", req->info().name()); !s.ok()) {
      return ToGrpc(s);
    }
  }
  absl::StatusOr<v1::RegisterHostResponse> r = hosts_->Register(*req);
  if (!r.ok()) return ToGrpc(r.status());
  *resp = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status ControllerServiceImpl::Heartbeat(grpc::ServerContext*,
                                              const v1::HeartbeatRequest* req,
                                              v1::HeartbeatResponse* resp) {
  absl::StatusOr<v1::HeartbeatResponse> r = hosts_->Heartbeat(*req);
  if (!r.ok()) return ToGrpc(r.status());
  RecordLive(*req);
  ReconcileVms(*req);
  *resp = *std::move(r);
  return grpc::Status::OK;
}

void ControllerServiceImpl::RecordLive(const v1::HeartbeatRequest& req) {
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&live_mu_);
  for (const v1::VmSummary& s : req.vms()) {
    // A copy that is arriving or already handed off is not the VM's truth.
    if (s.phase() == v1::VM_PHASE_INCOMING || s.phase() == v1::VM_PHASE_MIGRATED) {
      continue;
    }
    live_[s.name()] = LiveSample{s.uid(), req.host_name(), s, now};
  }
}

void ControllerServiceImpl::OverlayLive(v1::Vm* vm) {
  const absl::Duration max_age = hosts_->heartbeat_interval() * 3;
  absl::MutexLock lock(&live_mu_);
  auto it = live_.find(vm->spec().name());
  if (it == live_.end()) return;
  const LiveSample& l = it->second;
  if (l.uid != vm->uid() || l.host != vm->status().host() ||
      absl::Now() - l.time > max_age) {
    return;
  }
  v1::VmStatus* st = vm->mutable_status();
  st->set_dirty_rate_bytes_per_s(l.summary.dirty_rate_bytes_per_s());
  if (l.summary.has_guest()) *st->mutable_guest() = l.summary.guest();
  st->set_selfcheck_errors(
      std::max(st->selfcheck_errors(), l.summary.selfcheck_errors()));
}

void ControllerServiceImpl::ReconcileVms(const v1::HeartbeatRequest& req) {
  for (const v1::VmSummary& s : req.vms()) {
    absl::StatusOr<v1::Vm> vm = store_->Get<v1::Vm>(s.name());
    if (!vm.ok() || vm->uid() != s.uid() || vm->status().host() != req.host_name() ||
        !vm->status().migration_id().empty()) {
      continue;
    }
    // A migrating/incoming/migrated copy is the migration's business.
    if (s.phase() == v1::VM_PHASE_INCOMING || s.phase() == v1::VM_PHASE_MIGRATED) {
      continue;
    }
    const bool phase_changed = vm->status().phase() != s.phase();
    if (!phase_changed && vm->status().selfcheck_errors() == s.selfcheck_errors()) {
      continue;
    }
    v1::Event e = VmEvent(s.name(),
                          s.selfcheck_errors() > vm->status().selfcheck_errors()
                              ? v1::EVENT_SEVERITY_ERROR
                              : v1::EVENT_SEVERITY_INFO,
                          s.selfcheck_errors() > vm->status().selfcheck_errors()
                              ? "SelfcheckFailed"
                              : "VmPhaseChanged",
                          absl::StrCat("agent on ", req.host_name(), " reports ",
                                       v1::VmPhase_Name(s.phase()), ", ",
                                       s.selfcheck_errors(), " self-check errors"));
    vm->mutable_status()->set_phase(s.phase());
    vm->mutable_status()->set_selfcheck_errors(s.selfcheck_errors());
    vm->mutable_status()->set_dirty_rate_bytes_per_s(s.dirty_rate_bytes_per_s());
    if (phase_changed) vm->mutable_status()->clear_message();
    (void)store_->Update(*vm, &e);  // a CAS conflict: the next heartbeat retries
  }

  std::set<std::string> reported;
  for (const v1::VmSummary& s : req.vms()) reported.insert(s.name());
  ListOptions<v1::Vm> opts;
  opts.page_size = kMaxPageSize;
  const std::string host = req.host_name();
  opts.filter = [&host](const v1::Vm& v) {
    return v.status().host() == host && v.status().migration_id().empty() &&
           (v.status().phase() == v1::VM_PHASE_RUNNING ||
            v.status().phase() == v1::VM_PHASE_PAUSED);
  };
  const absl::Time now = absl::Now();
  const absl::Duration grace = hosts_->heartbeat_interval() * 3;
  for (;;) {
    absl::StatusOr<ListPage<v1::Vm>> page = store_->List<v1::Vm>(opts);
    if (!page.ok()) return;
    for (v1::Vm& vm : page->items) {
      const std::string key = absl::StrCat(host, "/", vm.spec().name());
      bool lost = false;
      {
        absl::MutexLock lock(&missing_mu_);
        if (reported.count(vm.spec().name()) != 0) {
          missing_.erase(key);
          continue;
        }
        auto it = missing_.find(key);
        if (it == missing_.end() || it->second.resource_version != vm.resource_version()) {
          missing_[key] = Missing{vm.resource_version(), now};
          continue;
        }
        lost = now - it->second.since >= grace;
        if (lost) missing_.erase(it);
      }
      if (!lost) continue;
      vm.mutable_status()->set_phase(v1::VM_PHASE_FAILED);
      vm.mutable_status()->set_message(absl::StrCat(
          "lost: the agent on ", host,
          " no longer reports this VM; delete and re-create it"));
      v1::Event e = VmEvent(vm.spec().name(), v1::EVENT_SEVERITY_ERROR, "VmLost",
                            vm.status().message());
      (void)store_->Update(vm, &e);
    }
    if (page->next_page_token.empty()) return;
    opts.page_token = page->next_page_token;
  }
}

grpc::Status ControllerServiceImpl::ListHosts(grpc::ServerContext*,
                                              const v1::ListHostsRequest* req,
                                              v1::ListHostsResponse* resp) {
  if (absl::Status s = CheckPageSize(req->page_size()); !s.ok()) return ToGrpc(s);
  ListOptions<v1::Host> opts;
  opts.page_size = req->page_size();
  opts.page_token = req->page_token();
  opts.label_selector = req->label_selector();
  absl::StatusOr<ListPage<v1::Host>> page = store_->List<v1::Host>(opts);
  if (!page.ok()) return ToGrpc(page.status());
  for (v1::Host& h : page->items) {
    hosts_->Overlay(&h);
    *resp->add_hosts() = std::move(h);
  }
  resp->set_next_page_token(page->next_page_token);
  return grpc::Status::OK;
}

grpc::Status ControllerServiceImpl::GetHost(grpc::ServerContext*,
                                            const v1::GetHostRequest* req, v1::Host* resp) {
  if (req->name().empty()) return ToGrpc(absl::InvalidArgumentError("name is required"));
  absl::StatusOr<v1::Host> h = store_->Get<v1::Host>(req->name());
  if (absl::IsNotFound(h.status())) {
    return ToGrpc(absl::NotFoundError(absl::StrCat("host '", req->name(),
                                                   "' is not registered")));
  }
  if (!h.ok()) return ToGrpc(h.status());
  hosts_->Overlay(&*h);
  *resp = *std::move(h);
  return grpc::Status::OK;
}

grpc::Status ControllerServiceImpl::CordonHost(grpc::ServerContext*,
                                               const v1::CordonHostRequest* req,
                                               v1::Host* resp) {
  absl::StatusOr<v1::Host> h = hosts_->Cordon(req->name(), req->reason());
  if (!h.ok()) return ToGrpc(h.status());
  *resp = *std::move(h);
  return grpc::Status::OK;
}

grpc::Status ControllerServiceImpl::UncordonHost(grpc::ServerContext*,
                                                 const v1::UncordonHostRequest* req,
                                                 v1::Host* resp) {
  absl::StatusOr<v1::Host> h = hosts_->Uncordon(req->name());
  if (!h.ok()) return ToGrpc(h.status());
  *resp = *std::move(h);
  return grpc::Status::OK;
}

grpc::Status ControllerServiceImpl::DrainHost(grpc::ServerContext* ctx,
                                              const v1::DrainHostRequest* req,
                                              grpc::ServerWriter<v1::DrainHostUpdate>* writer) {
  // Validate everything before the cordon: bad input changes nothing.
  if (req->name().empty()) return ToGrpc(absl::InvalidArgumentError("name is required"));
  if (absl::Status s = ValidateMigrationPolicy(req->policy()); !s.ok()) return ToGrpc(s);
  absl::StatusOr<v1::Host> host = store_->Get<v1::Host>(req->name());
  if (absl::IsNotFound(host.status())) {
    return ToGrpc(absl::NotFoundError(absl::StrCat("host '", req->name(),
                                                   "' is not registered")));
  }
  if (!host.ok()) return ToGrpc(host.status());
  if (!host->cordoned() || host->cordon_reason().rfind("drain", 0) != 0) {
    absl::StatusOr<v1::Host> c = hosts_->Cordon(req->name(), "drain");
    if (!c.ok()) return ToGrpc(c.status());
  }
  if (absl::Status s = orchestrator_->SetDrainParallelism(req->name(), req->max_parallel());
      !s.ok()) {
    return ToGrpc(s);
  }

  // vm -> migration id being tracked; outcomes already final.
  std::map<std::string, std::string> tracking;
  std::set<std::string> finished;
  uint32_t total = 0;
  auto send = [&](const std::string& vm, const std::string& id, v1::DrainOutcome o,
                  const std::string& message) {
    if (o != v1::DRAIN_OUTCOME_STARTED) finished.insert(vm);
    v1::DrainHostUpdate u;
    u.set_vm_name(vm);
    u.set_migration_id(id);
    u.set_outcome(o);
    u.set_message(message);
    u.set_vms_remaining(total - static_cast<uint32_t>(finished.size()));
    return writer->Write(u);
  };

  absl::StatusOr<scheduler::DrainPlan> plan;
  {
    absl::MutexLock placement(orchestrator_->placement_mu());
    absl::StatusOr<scheduler::ClusterSnapshot> snap = orchestrator_->Snapshot();
    if (!snap.ok()) return ToGrpc(snap.status());
    plan = scheduler::PlanDrain(*snap, req->name(), orchestrator_->options().limits,
                                req->max_parallel());
  }
  if (!plan.ok()) return ToGrpc(plan.status());
  total = plan->items.size();
  for (const scheduler::DrainItem& item : plan->items) {
    switch (item.action) {
      case scheduler::DrainAction::kAlreadyMigrating:
        tracking[item.vm_name] = item.migration_id;
        if (!send(item.vm_name, item.migration_id, v1::DRAIN_OUTCOME_STARTED,
                  "already migrating; following that migration")) {
          return grpc::Status::OK;
        }
        break;
      case scheduler::DrainAction::kSkip:
        if (!send(item.vm_name, "", v1::DRAIN_OUTCOME_SKIPPED, item.message)) {
          return grpc::Status::OK;
        }
        break;
      case scheduler::DrainAction::kUnplaceable:
        if (!send(item.vm_name, "", v1::DRAIN_OUTCOME_FAILED,
                  absl::StrCat("no host can take it: ", item.message))) {
          return grpc::Status::OK;
        }
        break;
      case scheduler::DrainAction::kMigrate: {
        v1::CreateMigrationRequest creq;
        creq.set_vm_name(item.vm_name);
        *creq.mutable_policy() = req->policy();
        absl::StatusOr<v1::Migration> m =
            orchestrator_->CreateMigration(creq, req->name());
        const bool ok = m.ok();
        if (ok) tracking[item.vm_name] = m->id();
        if (!send(item.vm_name, ok ? m->id() : "",
                  ok ? v1::DRAIN_OUTCOME_STARTED : v1::DRAIN_OUTCOME_FAILED,
                  ok ? absl::StrCat("planned target ", item.target_host, " (wave ",
                                    item.wave, ")")
                     : std::string(m.status().message()))) {
          return grpc::Status::OK;
        }
        break;
      }
    }
  }

  // Follow the migrations until every one ended. The drain itself lives in
  // the store: a client that goes away stops only this stream.
  uint64_t revision = store_->revision();
  while (finished.size() < total) {
    if (ctx->IsCancelled()) return grpc::Status::OK;
    for (const auto& [vm, id] : tracking) {
      if (finished.count(vm) != 0) continue;
      absl::StatusOr<v1::Migration> m = store_->Get<v1::Migration>(id);
      if (!m.ok()) {
        if (!send(vm, id, v1::DRAIN_OUTCOME_FAILED, "migration record is gone")) {
          return grpc::Status::OK;
        }
        continue;
      }
      if (!IsTerminal(m->phase())) continue;
      const bool ok = m->phase() == v1::MIGRATION_PHASE_SUCCEEDED;
      if (!send(vm, id, ok ? v1::DRAIN_OUTCOME_MIGRATED : v1::DRAIN_OUTCOME_FAILED,
                ok ? absl::StrCat("now on ", m->result().vm_host())
                   : absl::StrCat(v1::MigrationPhase_Name(m->phase()), ": ",
                                  m->result().message()))) {
        return grpc::Status::OK;
      }
    }
    if (finished.size() >= total) break;
    revision = store_->WaitForRevision(revision, options_.stream_poll);
  }
  return grpc::Status::OK;
}

// ---------------------------------------------------------------------------
// VMs
// ---------------------------------------------------------------------------

grpc::Status ControllerServiceImpl::CreateVm(grpc::ServerContext*,
                                             const v1::CreateVmRequest* req, v1::Vm* resp) {
  const std::string fingerprint = RequestFingerprint(*req);
  absl::StatusOr<std::string> seen = LookupRequest("vm", req->request_id(), fingerprint);
  if (!seen.ok()) return ToGrpc(seen.status());
  if (!seen->empty()) {
    absl::StatusOr<v1::Vm> vm = store_->Get<v1::Vm>(*seen);
    if (vm.ok()) {
      *resp = *std::move(vm);
      return grpc::Status::OK;
    }
  }
  absl::StatusOr<v1::Vm> vm = DoCreateVm(*req);
  if (!vm.ok()) return ToGrpc(vm.status());
  RememberRequest("vm", req->request_id(), fingerprint, vm->spec().name());
  *resp = *std::move(vm);
  return grpc::Status::OK;
}

absl::StatusOr<v1::Vm> ControllerServiceImpl::DoCreateVm(const v1::CreateVmRequest& req) {
  const v1::VmSpec& spec = req.spec();
  RETURN_IF_ERROR(ValidateName("spec.name", spec.name()));
  if (spec.memory_bytes() == 0 || spec.memory_bytes() % 4096 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "spec.memory_bytes must be a positive multiple of 4096, got ",
        spec.memory_bytes()));
  }
  if (spec.vcpu_count() == 0) {
    return absl::InvalidArgumentError("spec.vcpu_count must be >= 1");
  }
  v1::Vm vm;
  std::string address;
  {
    absl::MutexLock placement(orchestrator_->placement_mu());
    if (store_->Get<v1::Vm>(spec.name()).ok()) {
      return absl::AlreadyExistsError(absl::StrCat(
          "vm '", spec.name(), "' already exists; delete it first or pick another name"));
    }
    if (!req.host().empty()) {
      absl::StatusOr<v1::Host> h = store_->Get<v1::Host>(req.host());
      if (absl::IsNotFound(h.status())) {
        return absl::NotFoundError(absl::StrCat("host '", req.host(),
                                                "' is not registered"));
      }
      RETURN_IF_ERROR(h.status());
    }
    ASSIGN_OR_RETURN(scheduler::ClusterSnapshot snap, orchestrator_->Snapshot());
    scheduler::Ledger ledger(snap, orchestrator_->options().limits);
    scheduler::PlacementRequest preq;
    preq.vm_name = spec.name();
    preq.spec = &spec;
    preq.requested_host = req.host();
    scheduler::Placement p = ledger.Choose(preq);
    if (!p.ok()) {
      const std::string msg = absl::StrCat("cannot place vm '", spec.name(), "': ",
                                           p.message);
      return p.reason == v1::PENDING_REASON_NO_CAPACITY
                 ? absl::ResourceExhaustedError(msg)
                 : absl::FailedPreconditionError(msg);
    }
    for (const v1::Host& h : snap.hosts) {
      if (h.name() == p.host) address = h.info().agent_address();
    }
    *vm.mutable_spec() = spec;
    vm.set_uid(NewUuid());
    ToProto(absl::Now(), vm.mutable_create_time());
    vm.mutable_status()->set_phase(v1::VM_PHASE_CREATING);
    vm.mutable_status()->set_host(p.host);
    v1::Event e = VmEvent(spec.name(), v1::EVENT_SEVERITY_INFO, "VmScheduled",
                          absl::StrCat("placed on ", p.host));
    ASSIGN_OR_RETURN(vm, store_->Create(vm, &e));
  }

  v1::AgentCreateVmRequest areq;
  *areq.mutable_spec() = spec;
  areq.set_uid(vm.uid());
  v1::Vm created;
  grpc::Status s =
      AgentStub(address)->CreateVm(Ctx(options_.agent_timeout).get(), areq, &created);
  if (s.ok()) {
    const std::string uid = vm.uid();
    for (int attempt = 0; attempt < 10; ++attempt) {
      v1::Vm updated = vm;
      *updated.mutable_status() = created.status();
      updated.mutable_status()->set_host(vm.status().host());
      updated.mutable_status()->clear_migration_id();
      v1::Event e = VmEvent(spec.name(), v1::EVENT_SEVERITY_INFO, "VmCreated",
                            absl::StrCat("running on ", vm.status().host()));
      absl::StatusOr<v1::Vm> r = store_->Update(updated, &e);
      if (r.ok()) return r;
      if (r.status().code() != absl::StatusCode::kAborted &&
          !absl::IsNotFound(r.status())) {
        return r;
      }
      absl::StatusOr<v1::Vm> cur = store_->Get<v1::Vm>(spec.name());
      if (absl::IsNotFound(cur.status()) || (cur.ok() && cur->uid() != uid)) {
        // A DeleteVm ran while the agent was creating (it found nothing to
        // delete there yet, then dropped the record): what the agent just
        // started would run with no record. Remove it.
        return RemoveOrphan(spec.name(), uid, vm.status().host(), address);
      }
      RETURN_IF_ERROR(cur.status());
      vm = *std::move(cur);
    }
    return absl::AbortedError("vm record kept changing; GetVm shows it");
  }
  if (!Unreachable(s)) {
    // The agent refused: nothing runs; forget the VM.
    v1::Event e = VmEvent(spec.name(), v1::EVENT_SEVERITY_WARNING, "VmCreateFailed",
                          absl::StrCat("agent on ", vm.status().host(), ": ",
                                       s.error_message()));
    (void)store_->Delete<v1::Vm>(spec.name(), 0, &e);
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                        absl::StrCat("agent on ", vm.status().host(),
                                     " refused to create the VM: ", s.error_message()));
  }
  v1::Vm failed = vm;
  failed.mutable_status()->set_phase(v1::VM_PHASE_FAILED);
  failed.mutable_status()->set_message(absl::StrCat(
      "the agent on ", vm.status().host(), " did not answer CreateVm (",
      s.error_message(), "); the next heartbeat corrects this if it runs"));
  v1::Event e = VmEvent(spec.name(), v1::EVENT_SEVERITY_WARNING, "VmCreateUnknown",
                        failed.status().message());
  (void)store_->Update(failed, &e);
  return absl::UnavailableError(failed.status().message());
}

absl::Status ControllerServiceImpl::RemoveOrphan(const std::string& name,
                                                const std::string& uid,
                                                const std::string& host,
                                                const std::string& address) {
  auto stub = AgentStub(address);
  // Only our incarnation: a re-created VM of the same name is left alone.
  v1::AgentGetVmRequest greq;
  greq.set_name(name);
  v1::Vm there;
  grpc::Status gs = stub->GetVm(Ctx(options_.agent_timeout).get(), greq, &there);
  grpc::Status ds = gs;
  if (gs.ok() && there.uid() == uid) {
    v1::AgentDeleteVmRequest dreq;
    dreq.set_name(name);
    dreq.set_force(true);
    v1::AgentDeleteVmResponse dresp;
    ds = stub->DeleteVm(Ctx(options_.agent_timeout).get(), dreq, &dresp);
  }
  const bool removed =
      (gs.ok() && there.uid() != uid) || gs.error_code() == grpc::StatusCode::NOT_FOUND ||
      ds.ok() || ds.error_code() == grpc::StatusCode::NOT_FOUND;
  v1::Event e = VmEvent(
      name, removed ? v1::EVENT_SEVERITY_INFO : v1::EVENT_SEVERITY_WARNING,
      removed ? "VmCreateAbandoned" : "VmOrphaned",
      removed ? absl::StrCat("deleted while being created; the copy started on ", host,
                             " was removed")
              : absl::StrCat("deleted while being created; removing the copy started on ",
                             host, " failed (", ds.error_message(),
                             "): delete it on the agent"));
  WriteTxn txn;
  txn.AppendEvent(e);
  (void)store_->Commit(txn);
  return absl::AbortedError(absl::StrCat("vm '", name, "' was deleted while it was being created; ",
                                         removed ? "the copy the agent had started was removed"
                                                 : e.message()));
}

grpc::Status ControllerServiceImpl::GetVm(grpc::ServerContext*,
                                          const v1::GetVmRequest* req, v1::Vm* resp) {
  if (req->name().empty()) return ToGrpc(absl::InvalidArgumentError("name is required"));
  absl::StatusOr<v1::Vm> vm = store_->Get<v1::Vm>(req->name());
  if (absl::IsNotFound(vm.status())) {
    return ToGrpc(absl::NotFoundError(absl::StrCat("vm '", req->name(),
                                                   "' does not exist")));
  }
  if (!vm.ok()) return ToGrpc(vm.status());
  *resp = *std::move(vm);
  OverlayLive(resp);
  return grpc::Status::OK;
}

grpc::Status ControllerServiceImpl::ListVms(grpc::ServerContext*,
                                            const v1::ListVmsRequest* req,
                                            v1::ListVmsResponse* resp) {
  if (absl::Status s = CheckPageSize(req->page_size()); !s.ok()) return ToGrpc(s);
  ListOptions<v1::Vm> opts;
  opts.page_size = req->page_size();
  opts.page_token = req->page_token();
  opts.label_selector = req->label_selector();
  const std::string host = req->host();
  if (!host.empty()) {
    opts.filter = [host](const v1::Vm& v) { return v.status().host() == host; };
  }
  absl::StatusOr<ListPage<v1::Vm>> page = store_->List<v1::Vm>(opts);
  if (!page.ok()) return ToGrpc(page.status());
  for (v1::Vm& v : page->items) {
    v1::Vm* out = resp->add_vms();
    *out = std::move(v);
    OverlayLive(out);
  }
  resp->set_next_page_token(page->next_page_token);
  return grpc::Status::OK;
}

grpc::Status ControllerServiceImpl::DeleteVm(grpc::ServerContext*,
                                             const v1::DeleteVmRequest* req,
                                             v1::DeleteVmResponse*) {
  return ToGrpc(DoDeleteVm(*req));
}

absl::Status ControllerServiceImpl::DoDeleteVm(const v1::DeleteVmRequest& req) {
  if (req.name().empty()) return absl::InvalidArgumentError("name is required");
  absl::StatusOr<v1::Vm> vm = store_->Get<v1::Vm>(req.name());
  if (absl::IsNotFound(vm.status())) {
    return absl::NotFoundError(absl::StrCat("vm '", req.name(), "' does not exist"));
  }
  RETURN_IF_ERROR(vm.status());
  if (req.resource_version() != 0 && req.resource_version() != vm->resource_version()) {
    return absl::AbortedError(absl::StrCat(
        "vm '", req.name(), "' changed: resource_version is ", vm->resource_version(),
        ", not ", req.resource_version(), "; read it again"));
  }
  if (!vm->status().migration_id().empty()) {
    absl::StatusOr<v1::Migration> m = store_->Get<v1::Migration>(vm->status().migration_id());
    if (m.ok() && !IsTerminal(m->phase())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "vm '", req.name(), "' is migrating (", m->id(),
          "); cancel the migration or wait for it to end"));
    }
  }
  const bool lost = vm->status().phase() == v1::VM_PHASE_FAILED;
  absl::StatusOr<v1::Host> host = store_->Get<v1::Host>(vm->status().host());
  if (host.ok()) {
    v1::AgentDeleteVmRequest areq;
    areq.set_name(req.name());
    v1::AgentDeleteVmResponse aresp;
    grpc::Status s = AgentStub(host->info().agent_address())
                         ->DeleteVm(Ctx(options_.agent_timeout).get(), areq, &aresp);
    if (!s.ok() && s.error_code() != grpc::StatusCode::NOT_FOUND &&
        !(lost && Unreachable(s))) {
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                          absl::StrCat("agent on ", host->name(),
                                       " could not delete the VM: ", s.error_message(),
                                       "; nothing was changed, retry"));
    }
  }
  v1::Event e = VmEvent(req.name(), v1::EVENT_SEVERITY_INFO, "VmDeleted",
                        absl::StrCat("deleted from ", vm->status().host()));
  for (int attempt = 0;; ++attempt) {
    absl::Status d = store_->Delete<v1::Vm>(req.name(), vm->resource_version(), &e);
    if (!absl::IsAborted(d) || attempt >= 10) return d;
    // The record changed after the agent deleted the VM, typically a
    // heartbeat refreshing its status. The copy is gone, so the record of
    // that same incarnation on that host must go too (keeping it would
    // name a VM that no longer runs); anything else changed is refused.
    absl::StatusOr<v1::Vm> cur = store_->Get<v1::Vm>(req.name());
    if (absl::IsNotFound(cur.status())) return absl::OkStatus();
    RETURN_IF_ERROR(cur.status());
    if (cur->uid() != vm->uid() || cur->status().host() != vm->status().host() ||
        cur->status().migration_id() != vm->status().migration_id()) {
      return absl::AbortedError(absl::StrCat(
          "vm '", req.name(), "' changed while it was being deleted (now on ",
          cur->status().host(), "); read it again and retry"));
    }
    vm = *std::move(cur);
  }
}

// ---------------------------------------------------------------------------
// Migrations
// ---------------------------------------------------------------------------

grpc::Status ControllerServiceImpl::CreateMigration(grpc::ServerContext*,
                                                    const v1::CreateMigrationRequest* req,
                                                    v1::Migration* resp) {
  const std::string fingerprint = RequestFingerprint(*req);
  absl::StatusOr<std::string> seen =
      LookupRequest("migration", req->request_id(), fingerprint);
  if (!seen.ok()) return ToGrpc(seen.status());
  if (!seen->empty()) {
    absl::StatusOr<v1::Migration> m = store_->Get<v1::Migration>(*seen);
    if (m.ok()) {
      *resp = *std::move(m);
      return grpc::Status::OK;
    }
  }
  absl::StatusOr<v1::Migration> m = orchestrator_->CreateMigration(*req);
  if (!m.ok()) return ToGrpc(m.status());
  RememberRequest("migration", req->request_id(), fingerprint, m->id());
  *resp = *std::move(m);
  return grpc::Status::OK;
}

grpc::Status ControllerServiceImpl::GetMigration(grpc::ServerContext*,
                                                 const v1::GetMigrationRequest* req,
                                                 v1::Migration* resp) {
  if (req->id().empty()) return ToGrpc(absl::InvalidArgumentError("id is required"));
  absl::StatusOr<v1::Migration> m = store_->Get<v1::Migration>(req->id());
  if (absl::IsNotFound(m.status())) {
    return ToGrpc(absl::NotFoundError(absl::StrCat("migration '", req->id(),
                                                   "' does not exist")));
  }
  if (!m.ok()) return ToGrpc(m.status());
  if (req->view() == v1::MIGRATION_VIEW_BASIC) BasicView(&*m);
  *resp = *std::move(m);
  return grpc::Status::OK;
}

grpc::Status ControllerServiceImpl::ListMigrations(grpc::ServerContext*,
                                                   const v1::ListMigrationsRequest* req,
                                                   v1::ListMigrationsResponse* resp) {
  if (absl::Status s = CheckPageSize(req->page_size()); !s.ok()) return ToGrpc(s);
  ListOptions<v1::Migration> opts;
  opts.page_size = req->page_size();
  opts.page_token = req->page_token();
  const std::string vm = req->vm_name();
  const std::string host = req->host();
  std::set<int> phases(req->phases().begin(), req->phases().end());
  opts.filter = [vm, host, phases](const v1::Migration& m) {
    if (!vm.empty() && m.vm_name() != vm) return false;
    if (!host.empty() && m.source_host() != host && m.target_host() != host) return false;
    return phases.empty() || phases.count(m.phase()) != 0;
  };
  absl::StatusOr<ListPage<v1::Migration>> page = store_->List<v1::Migration>(opts);
  if (!page.ok()) return ToGrpc(page.status());
  for (v1::Migration& m : page->items) {
    if (req->view() != v1::MIGRATION_VIEW_FULL) BasicView(&m);
    *resp->add_migrations() = std::move(m);
  }
  resp->set_next_page_token(page->next_page_token);
  return grpc::Status::OK;
}

grpc::Status ControllerServiceImpl::WatchMigration(grpc::ServerContext* ctx,
                                                   const v1::WatchMigrationRequest* req,
                                                   grpc::ServerWriter<v1::Migration>* writer) {
  if (req->id().empty()) return ToGrpc(absl::InvalidArgumentError("id is required"));
  uint64_t sent_version = 0;
  uint64_t revision = store_->revision();
  for (;;) {
    absl::StatusOr<v1::Migration> m = store_->Get<v1::Migration>(req->id());
    if (absl::IsNotFound(m.status())) {
      return ToGrpc(absl::NotFoundError(absl::StrCat("migration '", req->id(),
                                                     "' does not exist")));
    }
    if (!m.ok()) return ToGrpc(m.status());
    if (m->resource_version() != sent_version) {
      sent_version = m->resource_version();
      BasicView(&*m);
      if (!writer->Write(*m)) return grpc::Status::OK;  // client gone
      if (IsTerminal(m->phase())) return grpc::Status::OK;
    }
    if (ctx->IsCancelled()) return grpc::Status::OK;
    revision = store_->WaitForRevision(revision, options_.stream_poll);
  }
}

grpc::Status ControllerServiceImpl::CancelMigration(grpc::ServerContext*,
                                                    const v1::CancelMigrationRequest* req,
                                                    v1::Migration* resp) {
  absl::StatusOr<v1::Migration> m = orchestrator_->CancelMigration(req->id(), req->reason());
  if (!m.ok()) return ToGrpc(m.status());
  *resp = *std::move(m);
  return grpc::Status::OK;
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

grpc::Status ControllerServiceImpl::ListEvents(grpc::ServerContext*,
                                               const v1::ListEventsRequest* req,
                                               v1::ListEventsResponse* resp) {
  if (absl::Status s = CheckPageSize(req->page_size()); !s.ok()) return ToGrpc(s);
  EventQuery q;
  q.after_sequence = req->after_sequence();
  if (!req->page_token().empty()) {
    uint64_t after = 0;
    if (!absl::SimpleAtoi(req->page_token(), &after)) {
      return ToGrpc(absl::InvalidArgumentError(
          "page_token is not one this server returned; start without it"));
    }
    q.after_sequence = std::max(q.after_sequence, after);
  }
  q.limit = req->page_size();
  q.object_kind = req->object_kind();
  q.object_name = req->object_name();
  q.min_severity = req->min_severity();
  absl::StatusOr<EventPage> page = store_->ListEvents(q);
  if (!page.ok()) return ToGrpc(page.status());
  for (v1::Event& e : page->events) *resp->add_events() = std::move(e);
  if (page->more) resp->set_next_page_token(absl::StrCat(page->last_scanned_sequence));
  return grpc::Status::OK;
}

}  // namespace ferry::controller
