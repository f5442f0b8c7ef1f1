#include "controller/orchestrator/orchestrator.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controller/orchestrator/orchestrator_internal.h"
#include "controller/orchestrator/proto_time.h"
#include "controller/scheduler/queue.h"

namespace ferry::controller {
namespace {

using scheduler::IsInFlight;
using scheduler::IsTerminal;
using internal::MigrationEvent;

// Order of the forward phases, to never move a record backwards on a late
// progress sample.
int Rank(v1::MigrationPhase p) {
  switch (p) {
    case v1::MIGRATION_PHASE_PENDING: return 1;
    case v1::MIGRATION_PHASE_PREPARING: return 2;
    case v1::MIGRATION_PHASE_TRANSFERRING:
    case v1::MIGRATION_PHASE_THROTTLING: return 3;
    case v1::MIGRATION_PHASE_SWITCHOVER: return 4;
    case v1::MIGRATION_PHASE_FINISHING: return 5;
    case v1::MIGRATION_PHASE_CONFIRMING: return 6;
    case v1::MIGRATION_PHASE_ROLLING_BACK: return 7;
    default: return 8;
  }
}

void Transition(v1::Migration* m, v1::MigrationPhase phase, absl::Time now,
                std::vector<v1::Event>* events, const std::string& message) {
  if (m->phase() == phase) return;
  v1::Event e = MigrationEvent(*m, v1::EVENT_SEVERITY_INFO, "MigrationPhaseChanged",
                               message.empty()
                                   ? absl::StrCat("phase ", v1::MigrationPhase_Name(phase))
                                   : message);
  (*e.mutable_attributes())["from"] = v1::MigrationPhase_Name(m->phase());
  (*e.mutable_attributes())["to"] = v1::MigrationPhase_Name(phase);
  events->push_back(std::move(e));
  m->set_phase(phase);
  v1::PhaseTransition* t = m->add_transitions();
  t->set_phase(phase);
  ToProto(now, t->mutable_time());
}

template <typename T>
absl::StatusOr<std::vector<T>> ListAll(const Store& store) {
  std::vector<T> out;
  ListOptions<T> opts;
  opts.page_size = kMaxPageSize;
  for (;;) {
    ASSIGN_OR_RETURN(ListPage<T> page, store.List<T>(opts));
    for (T& t : page.items) out.push_back(std::move(t));
    if (page.next_page_token.empty()) return out;
    opts.page_token = page.next_page_token;
  }
}

}  // namespace

void AddProgressSample(const v1::MigrationProgress& p, v1::Migration* m) {
  auto* samples = m->mutable_progress_samples();
  const int n = samples->size();
  if (n > 0 && samples->at(n - 1).round() != p.round()) {
    // A round ended: keep only its last sample.
    const uint32_t ended = samples->at(n - 1).round();
    int first = n - 1;
    while (first > 0 && samples->at(first - 1).round() == ended) --first;
    if (first < n - 1) samples->DeleteSubrange(first, n - 1 - first);
  } else if (n >= 2 && samples->at(n - 2).round() == p.round() &&
             FromProto(p.sample_time()) - FromProto(samples->at(n - 2).sample_time()) <
                 absl::Seconds(1)) {
    // The newest sample is provisional until a second has passed since the
    // one kept before it: replacing it keeps one per second and the round's
    // latest.
    *samples->Mutable(n - 1) = p;
    return;
  }
  *samples->Add() = p;
  if (samples->size() > kMaxProgressSamples) {
    samples->DeleteSubrange(0, samples->size() - kMaxProgressSamples);
  }
}

Orchestrator::Orchestrator(Store* store, OrchestratorOptions options)
    : store_(store), options_(std::move(options)) {}

Orchestrator::~Orchestrator() { Shutdown(); }

absl::Status Orchestrator::Start() {
  started_at_ = options_.clock();
  // Drain caps of an earlier controller, before the first pass admits
  // anything.
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> caps =
      store_->ListAux("drain/");
  if (!caps.ok()) return caps.status();
  {
    absl::MutexLock lock(&mu_);
    if (started_) return absl::FailedPreconditionError("orchestrator already started");
    started_ = true;
  }
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [key, value] : *caps) {
      uint32_t n = 0;
      // An unreadable cap is skipped: the drain then runs at the limits.
      if (absl::SimpleAtoi(value, &n) && n > 0) {
        drain_parallel_[key.substr(std::string("drain/").size())] = n;
      }
    }
  }
  // A migration or VM commit may change what the queue can do (a
  // migration ended, a VM became RUNNING); the listener only sets a flag.
  // Host changes that matter (readiness, cordons) are signalled by the host
  // registry; heartbeats rewrite host records constantly and must not each
  // cost a scheduling pass.
  listener_id_ = store_->AddListener([this](const CommitInfo& info) {
    for (const auto& [kind, key] : info.changed) {
      if (kind == RecordKind::kMigration || kind == RecordKind::kVm) {
        Kick();
        return;
      }
    }
  });
  loop_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

void Orchestrator::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    for (auto& [id, r] : runners_) {
      if (r->driver) r->driver->Abandon();
    }
  }
  if (listener_id_ != 0) store_->RemoveListener(listener_id_);
  if (loop_.joinable()) loop_.join();
  std::map<std::string, std::unique_ptr<Runner>> runners;
  {
    absl::MutexLock lock(&mu_);
    runners.swap(runners_);
  }
  for (auto& [id, r] : runners) {
    if (r->thread.joinable()) r->thread.join();
  }
}

bool Orchestrator::stopping() {
  absl::MutexLock lock(&mu_);
  return stopping_;
}

void Orchestrator::Kick() {
  absl::MutexLock lock(&mu_);
  kicked_ = true;
}

absl::Status Orchestrator::SetDrainParallelism(const std::string& host, uint32_t n) {
  const std::string key = absl::StrCat("drain/", host);
  absl::Status s = n == 0 ? store_->DeleteAux(key) : store_->PutAux(key, absl::StrCat(n));
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat("cannot record the drain's max_parallel: ",
                                               s.message()));
  }
  absl::MutexLock lock(&mu_);
  if (n == 0) {
    drain_parallel_.erase(host);
  } else {
    drain_parallel_[host] = n;
  }
  return absl::OkStatus();
}

int Orchestrator::ActiveRunners() {
  absl::MutexLock lock(&mu_);
  int n = 0;
  for (auto& [id, r] : runners_) n += r->done ? 0 : 1;
  return n;
}

void Orchestrator::Loop() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto woken = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return kicked_ || stopping_;
      };
      mu_.AwaitWithTimeout(absl::Condition(&woken), options_.schedule_interval);
      if (stopping_) return;
      kicked_ = false;
    }
    ReapRunners();
    if (absl::Status s = SchedulePass(); !s.ok()) {
      // Store trouble: try again next period; nothing was half-done since
      // every change is one commit.
      absl::SleepFor(absl::Milliseconds(200));
    }
  }
}

void Orchestrator::ReapRunners() {
  std::vector<std::unique_ptr<Runner>> done;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = runners_.begin(); it != runners_.end();) {
      if (it->second->done) {
        done.push_back(std::move(it->second));
        it = runners_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& r : done) r->thread.join();
}

absl::StatusOr<scheduler::ClusterSnapshot> Orchestrator::Snapshot() const {
  scheduler::ClusterSnapshot s;
  ASSIGN_OR_RETURN(s.hosts, ListAll<v1::Host>(*store_));
  ASSIGN_OR_RETURN(s.vms, ListAll<v1::Vm>(*store_));
  ASSIGN_OR_RETURN(s.migrations, ListAll<v1::Migration>(*store_));
  return s;
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

absl::StatusOr<v1::Migration> Orchestrator::Mutate(const std::string& id,
                                                   const MutateFn& fn) {
  for (int attempt = 0; attempt < 50; ++attempt) {
    ASSIGN_OR_RETURN(v1::Migration m, store_->Get<v1::Migration>(id));
    absl::StatusOr<v1::Vm> vm = store_->Get<v1::Vm>(m.vm_name());
    if (!vm.ok() && !absl::IsNotFound(vm.status())) return vm.status();
    v1::Vm* vmp = vm.ok() ? &*vm : nullptr;
    const std::string vm_before = vmp != nullptr ? vmp->SerializeAsString() : "";
    const std::string m_before = m.SerializeAsString();
    std::vector<v1::Event> events;
    RETURN_IF_ERROR(fn(&m, vmp, &events));
    const bool vm_changed = vmp != nullptr && vmp->SerializeAsString() != vm_before;
    if (!vm_changed && events.empty() && m.SerializeAsString() == m_before) return m;
    WriteTxn txn;
    txn.Update(m);
    if (vm_changed) txn.Update(*vmp);
    for (v1::Event& e : events) txn.AppendEvent(std::move(e));
    absl::StatusOr<CommitResult> r = store_->Commit(txn);
    if (r.ok()) {
      m.set_resource_version(r->revision);
      return m;
    }
    // ABORTED = someone else wrote one of the records in between: re-read.
    if (r.status().code() != absl::StatusCode::kAborted) return r.status();
  }
  return absl::AbortedError(absl::StrCat("migration ", id,
                                         ": too many concurrent updates; retry"));
}

absl::Status Orchestrator::SetPhase(const std::string& id, v1::MigrationPhase phase,
                                    const std::string& message) {
  const absl::Time now = options_.clock();
  return Mutate(id, [&](v1::Migration* m, v1::Vm* vm, std::vector<v1::Event>* ev) {
           if (IsTerminal(m->phase())) {
             return absl::FailedPreconditionError(absl::StrCat(
                 "migration ", id, " is already ",
                 v1::MigrationPhase_Name(m->phase())));
           }
           Transition(m, phase, now, ev, message);
           if (phase == v1::MIGRATION_PHASE_CONFIRMING && vm != nullptr) {
             // The destination runs the VM from here on: the record follows
             // before the source copy is destroyed.
             vm->mutable_status()->set_host(m->target_host());
           }
           return absl::OkStatus();
         })
      .status();
}

absl::Status Orchestrator::Finish(const std::string& id, v1::MigrationResult result,
                                  const v1::MigrationProgress* last,
                                  v1::MigrationPhase only_from) {
  const absl::Time now = options_.clock();
  absl::Status s =
      Mutate(id, [&](v1::Migration* m, v1::Vm* vm, std::vector<v1::Event>* ev) {
        if (IsTerminal(m->phase())) return absl::OkStatus();
        if (only_from != v1::MIGRATION_PHASE_UNSPECIFIED && m->phase() != only_from) {
          return absl::AbortedError("the migration moved on");
        }
        if (result.vm_host().empty()) {
          result.set_vm_host(result.phase() == v1::MIGRATION_PHASE_SUCCEEDED
                                 ? m->target_host()
                                 : m->source_host());
        }
        if (last != nullptr && last->has_sample_time()) {
          *m->mutable_progress() = *last;
          AddProgressSample(*last, m);
        }
        Transition(m, result.phase(), now, ev, result.message());
        *m->mutable_result() = result;
        ToProto(now, m->mutable_end_time());
        m->set_pending_reason(v1::PENDING_REASON_UNSPECIFIED);
        m->clear_pending_message();
        const bool ok = result.phase() == v1::MIGRATION_PHASE_SUCCEEDED;
        ev->push_back(MigrationEvent(
            *m,
            result.phase() == v1::MIGRATION_PHASE_FAILED ? v1::EVENT_SEVERITY_WARNING
                                                         : v1::EVENT_SEVERITY_INFO,
            ok ? "MigrationSucceeded"
               : (result.phase() == v1::MIGRATION_PHASE_CANCELLED ? "MigrationCancelled"
                                                                  : "MigrationFailed"),
            absl::StrCat("vm ", m->vm_name(), " on ", result.vm_host(),
                         result.message().empty() ? "" : ": ", result.message())));
        if (vm != nullptr && vm->uid() == m->vm_uid()) {
          if (vm->status().migration_id() == m->id()) {
            vm->mutable_status()->clear_migration_id();
          }
          vm->mutable_status()->set_host(result.vm_host());
        }
        return absl::OkStatus();
      }).status();
  return s;
}

void Orchestrator::RecordProgress(const std::string& id, const v1::MigrationProgress& p,
                                  absl::Time* last_write) {
  const absl::Time now = options_.clock();
  const v1::MigrationPhase observed = p.phase();
  const bool phase_sample = observed == v1::MIGRATION_PHASE_TRANSFERRING ||
                            observed == v1::MIGRATION_PHASE_THROTTLING ||
                            observed == v1::MIGRATION_PHASE_SWITCHOVER;
  absl::StatusOr<v1::Migration> cur = store_->Get<v1::Migration>(id);
  if (!cur.ok()) return;
  const bool phase_change = phase_sample && observed != cur->phase() &&
                            Rank(observed) >= Rank(cur->phase());
  // Progress alone is written at most once a second (each commit is an
  // fsync); phase changes at once.
  if (!phase_change && now - *last_write < absl::Seconds(1)) return;
  *last_write = now;
  (void)Mutate(id, [&](v1::Migration* m, v1::Vm*, std::vector<v1::Event>* ev) {
    if (IsTerminal(m->phase())) return absl::OkStatus();
    *m->mutable_progress() = p;
    AddProgressSample(p, m);
    if (phase_sample && observed != m->phase() && Rank(observed) >= Rank(m->phase())) {
      Transition(m, observed, now, ev, "");
    }
    return absl::OkStatus();
  });
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

absl::StatusOr<v1::Migration> Orchestrator::CreateMigration(
    const v1::CreateMigrationRequest& req, const std::string& drain_host) {
  if (req.vm_name().empty()) {
    return absl::InvalidArgumentError("vm_name is required");
  }
  RETURN_IF_ERROR(ValidateMigrationPolicy(req.policy()));
  for (int attempt = 0; attempt < 20; ++attempt) {
    absl::StatusOr<v1::Vm> vm = store_->Get<v1::Vm>(req.vm_name());
    if (absl::IsNotFound(vm.status())) {
      return absl::NotFoundError(absl::StrCat("vm '", req.vm_name(),
                                              "' does not exist (ListVms shows the VMs)"));
    }
    RETURN_IF_ERROR(vm.status());
    if (!vm->status().migration_id().empty()) {
      absl::StatusOr<v1::Migration> other =
          store_->Get<v1::Migration>(vm->status().migration_id());
      if (other.ok() && !IsTerminal(other->phase())) {
        return absl::FailedPreconditionError(absl::StrCat(
            "vm '", req.vm_name(), "' is already migrating (migration ", other->id(),
            ", ", v1::MigrationPhase_Name(other->phase()),
            "); cancel it or wait for it to end"));
      }
    }
    if (vm->status().phase() != v1::VM_PHASE_RUNNING) {
      return absl::FailedPreconditionError(absl::StrCat(
          "vm '", req.vm_name(), "' is ", v1::VmPhase_Name(vm->status().phase()),
          "; only a RUNNING VM migrates live"));
    }
    const std::string source = vm->status().host();
    absl::StatusOr<v1::Host> src = store_->Get<v1::Host>(source);
    if (!src.ok() || src->readiness() != v1::HOST_READINESS_READY) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the VM's host '", source, "' is ",
          src.ok() ? v1::HostReadiness_Name(src->readiness()) : "not registered",
          "; a migration needs a READY source agent"));
    }
    if (!req.target_host().empty()) {
      if (req.target_host() == source) {
        return absl::InvalidArgumentError(absl::StrCat(
            "target_host '", source, "' is the VM's current host; pick another "
            "host or leave it empty for the scheduler"));
      }
      absl::StatusOr<v1::Host> dst = store_->Get<v1::Host>(req.target_host());
      if (absl::IsNotFound(dst.status())) {
        return absl::NotFoundError(absl::StrCat("target host '", req.target_host(),
                                                "' is not registered"));
      }
      RETURN_IF_ERROR(dst.status());
      if (dst->readiness() != v1::HOST_READINESS_READY) {
        return absl::FailedPreconditionError(absl::StrCat(
            "target host '", req.target_host(), "' is ",
            v1::HostReadiness_Name(dst->readiness()), "; it must be READY"));
      }
      if (dst->cordoned()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "target host '", req.target_host(), "' is cordoned (",
            dst->cordon_reason(), "); uncordon it or pick another"));
      }
    }

    const absl::Time now = options_.clock();
    v1::Migration m;
    m.set_id(NewUuid());
    m.set_vm_name(req.vm_name());
    m.set_vm_uid(vm->uid());
    m.set_source_host(source);
    m.set_requested_target_host(req.target_host());
    *m.mutable_requested_policy() = req.policy();
    *m.mutable_policy() = MergeMigrationPolicy(options_.defaults, req.policy());
    m.set_phase(v1::MIGRATION_PHASE_PENDING);
    m.set_drain_host(drain_host);
    ToProto(now, m.mutable_create_time());
    v1::PhaseTransition* t = m.add_transitions();
    t->set_phase(v1::MIGRATION_PHASE_PENDING);
    ToProto(now, t->mutable_time());
    vm->mutable_status()->set_migration_id(m.id());

    WriteTxn txn;
    txn.Create(m);
    txn.Update(*vm);  // CAS: a concurrent create for this VM loses here
    txn.AppendEvent(MigrationEvent(
        m, v1::EVENT_SEVERITY_INFO, "MigrationCreated",
        absl::StrCat("migrate vm ", m.vm_name(), " from ", source, " to ",
                     req.target_host().empty() ? "(scheduler's choice)"
                                               : req.target_host(),
                     drain_host.empty() ? "" : absl::StrCat(" (drain of ", drain_host, ")"))));
    absl::StatusOr<CommitResult> r = store_->Commit(txn);
    if (r.ok()) {
      m.set_resource_version(r->revision);
      Kick();
      return m;
    }
    if (r.status().code() != absl::StatusCode::kAborted) return r.status();
  }
  return absl::AbortedError("the VM record kept changing; retry");
}

absl::StatusOr<v1::Migration> Orchestrator::CancelMigration(const std::string& id,
                                                            const std::string& reason) {
  if (id.empty()) return absl::InvalidArgumentError("id is required");
  const std::string why = reason.empty() ? "cancelled by request" : reason;
  absl::StatusOr<v1::Migration> m =
      Mutate(id, [&](v1::Migration* m, v1::Vm*, std::vector<v1::Event>* ev) {
        if (IsTerminal(m->phase())) {
          return absl::FailedPreconditionError(absl::StrCat(
              "migration ", id, " already ended (",
              v1::MigrationPhase_Name(m->phase()), "); nothing to cancel"));
        }
        if (m->phase() == v1::MIGRATION_PHASE_CONFIRMING) {
          return absl::FailedPreconditionError(absl::StrCat(
              "migration ", id, " is past the handoff (the VM runs on ",
              m->target_host(), "); it can no longer be cancelled"));
        }
        if (m->cancel_requested()) return absl::OkStatus();
        m->set_cancel_requested(true);
        m->set_cancel_reason(why);
        ev->push_back(MigrationEvent(*m, v1::EVENT_SEVERITY_INFO, "MigrationCancelRequested",
                                     why));
        return absl::OkStatus();
      });
  if (absl::IsNotFound(m.status())) {
    return absl::NotFoundError(absl::StrCat("migration '", id, "' does not exist"));
  }
  RETURN_IF_ERROR(m.status());
  if (m->phase() == v1::MIGRATION_PHASE_PENDING) {
    v1::MigrationResult r;
    r.set_phase(v1::MIGRATION_PHASE_CANCELLED);
    r.set_failure(v1::MIGRATION_FAILURE_CANCELLED);
    r.set_message(why);
    r.set_vm_host(m->source_host());
    // The loop may have admitted it meanwhile; then the driver cancels.
    if (Finish(id, r, nullptr, v1::MIGRATION_PHASE_PENDING).ok()) {
      return store_->Get<v1::Migration>(id);
    }
  }
  // Cancel talks to the source agent: never under mu_, which the store's
  // commit listener takes.
  std::shared_ptr<MigrationDriver> driver;
  {
    absl::MutexLock lock(&mu_);
    auto it = runners_.find(id);
    if (it != runners_.end()) driver = it->second->driver;
  }
  if (driver) driver->Cancel(why);
  return store_->Get<v1::Migration>(id);
}

// ---------------------------------------------------------------------------
// The loop
// ---------------------------------------------------------------------------

absl::Status Orchestrator::SchedulePass() {
  absl::MutexLock placement(&placement_mu_);
  ASSIGN_OR_RETURN(scheduler::ClusterSnapshot snap, Snapshot());
  const absl::Time now = options_.clock();
  std::map<std::string, const v1::Host*> hosts;
  for (const v1::Host& h : snap.hosts) hosts[h.name()] = &h;
  std::set<std::string> vms;
  for (const v1::Vm& v : snap.vms) vms.insert(v.spec().name());

  auto fail = [&](const v1::Migration& m, v1::MigrationPhase phase,
                  v1::MigrationFailure failure, const std::string& message) {
    v1::MigrationResult r;
    r.set_phase(phase);
    r.set_failure(failure);
    r.set_message(message);
    r.set_vm_host(m.source_host());
    (void)Finish(m.id(), r, nullptr, v1::MIGRATION_PHASE_PENDING);
  };

  // Pending migrations that can never start now.
  std::set<std::string> ended;
  std::map<std::string, int> drain_in_flight;
  for (const v1::Migration& m : snap.migrations) {
    if (IsInFlight(m.phase()) && !m.drain_host().empty()) ++drain_in_flight[m.drain_host()];
    if (m.phase() != v1::MIGRATION_PHASE_PENDING) continue;
    auto src = hosts.find(m.source_host());
    if (m.cancel_requested()) {
      fail(m, v1::MIGRATION_PHASE_CANCELLED, v1::MIGRATION_FAILURE_CANCELLED,
           m.cancel_reason());
    } else if (vms.count(m.vm_name()) == 0) {
      fail(m, v1::MIGRATION_PHASE_FAILED, v1::MIGRATION_FAILURE_UNSCHEDULABLE,
           absl::StrCat("vm ", m.vm_name(), " was deleted"));
    } else if (src == hosts.end() ||
               src->second->readiness() != v1::HOST_READINESS_READY) {
      const absl::Time since = std::max(FromProto(m.create_time()), started_at_);
      if (src != hosts.end() && now - since < options_.source_host_grace) {
        continue;  // stays PENDING: the host may be about to check in
      }
      fail(m, v1::MIGRATION_PHASE_FAILED, v1::MIGRATION_FAILURE_INTERRUPTED,
           absl::StrCat("source host ", m.source_host(), " is ",
                        src == hosts.end()
                            ? "gone"
                            : v1::HostReadiness_Name(src->second->readiness()),
                        "; nothing is moved off a host the controller cannot reach"));
    } else if (!m.requested_target_host().empty()) {
      auto dst = hosts.find(m.requested_target_host());
      if (dst == hosts.end() ||
          dst->second->readiness() != v1::HOST_READINESS_READY) {
        fail(m, v1::MIGRATION_PHASE_FAILED, v1::MIGRATION_FAILURE_UNSCHEDULABLE,
             absl::StrCat("requested target host ", m.requested_target_host(),
                          " is no longer READY"));
      } else {
        continue;
      }
    } else {
      continue;
    }
    ended.insert(m.id());
  }

  std::map<std::string, uint32_t> drain_caps;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [h, n] : drain_parallel_) drain_caps[h] = n;
  }
  std::map<std::string, const v1::Migration*> by_id;
  for (const v1::Migration& m : snap.migrations) by_id[m.id()] = &m;
  for (const scheduler::Decision& d :
       scheduler::ScheduleMigrations(snap, options_.limits)) {
    if (ended.count(d.migration_id) != 0) continue;
    const v1::Migration& cur = *by_id[d.migration_id];
    v1::PendingReason reason = d.reason;
    std::string message = d.message;
    bool admit = d.admitted;
    if (admit && !cur.drain_host().empty()) {
      auto cap = drain_caps.find(cur.drain_host());
      if (cap != drain_caps.end() &&
          drain_in_flight[cur.drain_host()] >= static_cast<int>(cap->second)) {
        admit = false;
        reason = v1::PENDING_REASON_CONCURRENCY_LIMIT;
        message = absl::StrCat("drain of ", cur.drain_host(), " runs at most ",
                               cap->second, " migrations at once");
      }
    }
    if (admit) {
      if (options_.test_before_phase) options_.test_before_phase(v1::MIGRATION_PHASE_PENDING);
      absl::StatusOr<v1::Migration> m =
          Mutate(d.migration_id, [&](v1::Migration* m, v1::Vm*, std::vector<v1::Event>* ev) {
            if (m->phase() != v1::MIGRATION_PHASE_PENDING || m->cancel_requested()) {
              return absl::AbortedError("changed");
            }
            m->set_target_host(d.target_host);
            m->set_pending_reason(v1::PENDING_REASON_UNSPECIFIED);
            m->clear_pending_message();
            ToProto(now, m->mutable_start_time());
            Transition(m, v1::MIGRATION_PHASE_PREPARING, now, ev,
                       absl::StrCat("scheduled: ", m->source_host(), " -> ",
                                    d.target_host));
            return absl::OkStatus();
          });
      if (m.ok()) {
        if (!cur.drain_host().empty()) ++drain_in_flight[cur.drain_host()];
        StartRunner(d.migration_id, /*reconcile=*/false);
      }
      continue;
    }
    if (cur.pending_reason() == reason && cur.pending_message() == message) continue;
    (void)Mutate(d.migration_id, [&](v1::Migration* m, v1::Vm*, std::vector<v1::Event>*) {
      if (m->phase() != v1::MIGRATION_PHASE_PENDING) return absl::OkStatus();
      m->set_pending_reason(reason);
      m->set_pending_message(message);
      return absl::OkStatus();
    });
  }

  // In-flight migrations nobody drives: left by an earlier controller, or a
  // driver that could not learn the handoff's outcome. Reconcile them.
  std::vector<std::string> orphans;
  std::vector<std::pair<std::shared_ptr<MigrationDriver>, std::string>> timed_out;
  {
    absl::MutexLock lock(&mu_);
    for (const v1::Migration& m : snap.migrations) {
      if (!IsInFlight(m.phase()) || runners_.count(m.id()) != 0) continue;
      auto retry = retry_after_.find(m.id());
      if (retry != retry_after_.end() && now < retry->second) continue;
      orphans.push_back(m.id());
    }
    // The completion backstop.
    for (auto& [id, r] : runners_) {
      if (r->done || !r->driver || r->forced_failure != v1::MIGRATION_FAILURE_UNSPECIFIED) {
        continue;
      }
      auto it = by_id.find(id);
      if (it == by_id.end()) continue;
      const v1::Migration& m = *it->second;
      if (Rank(m.phase()) >= Rank(v1::MIGRATION_PHASE_SWITCHOVER)) continue;
      uint64_t memory = m.progress().total_bytes();
      absl::Duration deadline = CompletionDeadline(m.policy(), memory);
      if (deadline == absl::InfiniteDuration()) continue;
      deadline = deadline * options_.completion_backstop_factor +
                 options_.completion_backstop_slack;
      if (now - r->started > deadline) {
        r->forced_failure = v1::MIGRATION_FAILURE_COMPLETION_TIMEOUT;
        timed_out.emplace_back(r->driver,
                               absl::StrCat("completion deadline passed (",
                                            absl::FormatDuration(deadline),
                                            " with the controller's backstop)"));
      }
    }
  }
  for (auto& [driver, why] : timed_out) driver->Cancel(why);  // RPCs: not under mu_
  for (const std::string& id : orphans) StartRunner(id, /*reconcile=*/true);
  return absl::OkStatus();
}

bool Orchestrator::StartRunner(const std::string& id, bool reconcile) {
  absl::MutexLock lock(&mu_);
  if (stopping_ || runners_.count(id) != 0) return false;
  auto runner = std::make_unique<Runner>();
  runner->started = options_.clock();
  Runner* r = runner.get();
  runners_[id] = std::move(runner);
  r->thread = std::thread([this, id, reconcile, r] {
    if (reconcile) {
      if (!Reconcile(id)) {
        absl::MutexLock lock(&mu_);
        retry_after_[id] = options_.clock() + options_.reconcile_retry;
      }
    } else {
      Drive(id);
    }
    absl::MutexLock lock(&mu_);
    r->done = true;
    kicked_ = true;
  });
  return true;
}

// ---------------------------------------------------------------------------
// Runners
// ---------------------------------------------------------------------------

std::string Orchestrator::AgentAddress(const std::string& host) {
  absl::StatusOr<v1::Host> h = store_->Get<v1::Host>(host);
  return h.ok() ? h->info().agent_address() : std::string();
}

void Orchestrator::Drive(const std::string& id) {
  absl::StatusOr<v1::Migration> m = store_->Get<v1::Migration>(id);
  if (!m.ok() || IsTerminal(m->phase())) return;
  const std::string src = AgentAddress(m->source_host());
  const std::string dst = AgentAddress(m->target_host());
  if (src.empty() || dst.empty()) {
    v1::MigrationResult r;
    r.set_phase(v1::MIGRATION_PHASE_FAILED);
    r.set_failure(v1::MIGRATION_FAILURE_UNSCHEDULABLE);
    r.set_message("a host of the migration has no agent address; it must register");
    (void)Finish(id, r, nullptr);
    return;
  }
  MigrationRequest req;
  req.migration_id = id;
  req.vm_name = m->vm_name();
  req.source_address = src;
  req.destination_address = dst;
  req.source_host = m->source_host();
  req.destination_host = m->target_host();
  req.policy = m->policy();
  req.rpc_timeout = options_.rpc_timeout;
  req.agent_lost_after = options_.agent_lost_after;
  absl::StatusOr<v1::Vm> vm = store_->Get<v1::Vm>(m->vm_name());
  const absl::Duration deadline =
      CompletionDeadline(m->policy(), vm.ok() ? vm->spec().memory_bytes() : 0);
  // The loop's backstop cancels cleanly (FAILED, COMPLETION_TIMEOUT); the
  // driver's own watch deadline is only a last resort a minute later.
  req.watch_deadline = deadline == absl::InfiniteDuration()
                           ? absl::Hours(24)
                           : deadline * options_.completion_backstop_factor +
                                 options_.completion_backstop_slack + absl::Minutes(1);
  req.before_phase = [this, id](v1::MigrationPhase phase) {
    absl::Status s = SetPhase(id, phase, "");
    if (s.ok() && options_.test_before_phase) options_.test_before_phase(phase);
    return s;
  };
  auto driver = std::make_shared<MigrationDriver>(std::move(req));
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    runners_[id]->driver = driver;
  }
  if (m->cancel_requested()) driver->Cancel(m->cancel_reason());
  // A cancel that raced with the admission.
  if (absl::StatusOr<v1::Migration> again = store_->Get<v1::Migration>(id);
      again.ok() && again->cancel_requested()) {
    driver->Cancel(again->cancel_reason());
  }

  if (options_.test_before_phase) options_.test_before_phase(v1::MIGRATION_PHASE_PREPARING);
  absl::Time last_write = absl::InfinitePast();
  MigrationDetails details;
  v1::MigrationResult result = driver->Run(
      [&](const v1::MigrationProgress& p) { RecordProgress(id, p, &last_write); },
      &details);
  if (details.abandoned) return;
  if (details.handoff_unknown) {
    // Leave the record where it is; the loop reconciles it with both agents.
    absl::MutexLock lock(&mu_);
    retry_after_[id] = options_.clock() + options_.reconcile_retry;
    return;
  }
  v1::MigrationFailure forced;
  {
    absl::MutexLock lock(&mu_);
    forced = runners_[id]->forced_failure;
  }
  if (forced != v1::MIGRATION_FAILURE_UNSPECIFIED &&
      result.phase() == v1::MIGRATION_PHASE_CANCELLED) {
    result.set_phase(v1::MIGRATION_PHASE_FAILED);
    result.set_failure(forced);
  }
  (void)Finish(id, result, &details.last_progress);
}

}  // namespace ferry::controller
