#include "controller/cluster/host_registry.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controller/orchestrator/proto_time.h"

namespace ferry::controller {

v1::Event HostEvent(const std::string& host, v1::EventSeverity severity,
                    const std::string& reason, const std::string& message) {
  v1::Event e;
  e.set_severity(severity);
  e.set_object_kind(v1::OBJECT_KIND_HOST);
  e.set_object_name(host);
  e.set_reason(reason);
  e.set_message(message);
  return e;
}

HostRegistry::HostRegistry(Store* store, HostRegistryOptions options)
    : store_(store), options_(std::move(options)), start_(options_.clock()) {}

HostRegistry::~HostRegistry() { Shutdown(); }

void HostRegistry::Start() {
  monitor_ = std::thread([this] {
    absl::MutexLock lock(&mu_);
    for (;;) {
      auto stop = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_; };
      mu_.AwaitWithTimeout(absl::Condition(&stop), options_.heartbeat_interval / 2);
      if (stopping_) return;
      mu_.Unlock();
      CheckHeartbeats();
      mu_.Lock();
    }
  });
}

void HostRegistry::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (monitor_.joinable()) monitor_.join();
}

void HostRegistry::Changed() {
  if (options_.on_change) options_.on_change();
}

absl::StatusOr<v1::Host> HostRegistry::UpdateHost(const std::string& name,
                                                   const HostFn& fn) {
  for (int attempt = 0; attempt < 20; ++attempt) {
    absl::StatusOr<v1::Host> h = store_->Get<v1::Host>(name);
    if (absl::IsNotFound(h.status())) {
      return absl::NotFoundError(absl::StrCat("host '", name,
                                              "' is not registered (ListHosts shows the hosts)"));
    }
    RETURN_IF_ERROR(h.status());
    v1::Event event;
    bool skip = false;
    RETURN_IF_ERROR(fn(&*h, &event, &skip));
    if (skip) return h;
    absl::StatusOr<v1::Host> r =
        store_->Update(*h, event.reason().empty() ? nullptr : &event);
    if (r.ok() || r.status().code() != absl::StatusCode::kAborted) return r;
  }
  return absl::AbortedError(absl::StrCat("host ", name, " kept changing; retry"));
}

void HostRegistry::Overlay(v1::Host* host) {
  absl::MutexLock lock(&mu_);
  auto it = last_seen_.find(host->name());
  if (it != last_seen_.end() && it->second > FromProto(host->last_heartbeat_time())) {
    ToProto(it->second, host->mutable_last_heartbeat_time());
  }
}

absl::StatusOr<v1::RegisterHostResponse> HostRegistry::Register(
    const v1::RegisterHostRequest& req) {
  const v1::HostInfo& info = req.info();
  if (info.name().empty() || info.instance_id().empty() ||
      info.agent_address().empty()) {
    return absl::InvalidArgumentError(
        "info.name, info.instance_id and info.agent_address are required");
  }
  const absl::Time now = options_.clock();
  for (int attempt = 0; attempt < 20; ++attempt) {
    absl::StatusOr<v1::Host> old = store_->Get<v1::Host>(info.name());
    if (!old.ok() && !absl::IsNotFound(old.status())) return old.status();
    v1::Host host;
    if (old.ok()) host = *old;
    const bool restarted = old.ok() && old->info().instance_id() != info.instance_id();
    host.set_name(info.name());
    *host.mutable_info() = info;
    host.set_readiness(v1::HOST_READINESS_READY);
    ToProto(now, host.mutable_last_heartbeat_time());
    ToProto(now, host.mutable_register_time());

    WriteTxn txn;
    if (old.ok()) {
      txn.Update(host);
    } else {
      txn.Create(host);
    }
    txn.AppendEvent(HostEvent(
        info.name(), v1::EVENT_SEVERITY_INFO,
        old.ok() ? (restarted ? "HostRestarted" : "HostReregistered") : "HostRegistered",
        absl::StrCat("agent ", info.agent_address(), " instance ", info.instance_id(),
                     restarted ? absl::StrCat(" (was ", old->info().instance_id(),
                                              "): its VMs are gone")
                               : "")));
    if (restarted) {
      // Everything the old agent process ran died with it. VMs in a
      // migration are left to the migration's driver/reconcile, which asks
      // both agents.
      ListOptions<v1::Vm> opts;
      opts.page_size = kMaxPageSize;
      opts.filter = [&](const v1::Vm& v) { return v.status().host() == info.name(); };
      for (;;) {
        ASSIGN_OR_RETURN(ListPage<v1::Vm> page, store_->List<v1::Vm>(opts));
        for (v1::Vm& vm : page.items) {
          const v1::VmPhase p = vm.status().phase();
          if (!vm.status().migration_id().empty() || p == v1::VM_PHASE_FAILED ||
              p == v1::VM_PHASE_STOPPED) {
            continue;
          }
          vm.mutable_status()->set_phase(v1::VM_PHASE_FAILED);
          vm.mutable_status()->set_message(absl::StrCat(
              "lost: the agent on ", info.name(),
              " restarted and its VMs are gone; delete and re-create the VM"));
          v1::Event e;
          e.set_severity(v1::EVENT_SEVERITY_ERROR);
          e.set_object_kind(v1::OBJECT_KIND_VM);
          e.set_object_name(vm.spec().name());
          e.set_reason("VmLost");
          e.set_message(vm.status().message());
          txn.Update(vm);
          txn.AppendEvent(std::move(e));
        }
        if (page.next_page_token.empty()) break;
        opts.page_token = page.next_page_token;
      }
    }
    absl::StatusOr<CommitResult> r = store_->Commit(txn);
    if (!r.ok()) {
      if (r.status().code() == absl::StatusCode::kAborted ||
          r.status().code() == absl::StatusCode::kAlreadyExists) {
        continue;
      }
      return r.status();
    }
    host.set_resource_version(r->revision);
    {
      absl::MutexLock lock(&mu_);
      last_seen_[info.name()] = now;
    }
    Changed();
    v1::RegisterHostResponse resp;
    *resp.mutable_host() = host;
    ToProto(options_.heartbeat_interval, resp.mutable_heartbeat_interval());
    return resp;
  }
  return absl::AbortedError("host record kept changing; retry RegisterHost");
}

absl::StatusOr<v1::HeartbeatResponse> HostRegistry::Heartbeat(
    const v1::HeartbeatRequest& req) {
  if (req.host_name().empty()) {
    return absl::InvalidArgumentError("host_name is required");
  }
  const absl::Time now = options_.clock();
  bool readiness_changed = false;
  absl::StatusOr<v1::Host> host = UpdateHost(
      req.host_name(), [&](v1::Host* h, v1::Event* event, bool* skip) {
        if (h->info().instance_id() != req.instance_id()) {
          return absl::FailedPreconditionError(absl::StrCat(
              "host '", req.host_name(), "' is registered with instance ",
              h->info().instance_id(), ", not ", req.instance_id(),
              "; call RegisterHost again"));
        }
        const v1::HostReadiness want =
            req.healthy() ? v1::HOST_READINESS_READY : v1::HOST_READINESS_NOT_READY;
        readiness_changed = h->readiness() != want;
        if (readiness_changed) {
          *event = HostEvent(h->name(),
                             req.healthy() ? v1::EVENT_SEVERITY_INFO
                                           : v1::EVENT_SEVERITY_WARNING,
                             req.healthy() ? "HostReady" : "HostNotReady",
                             req.healthy() ? std::string("heartbeats arrive again")
                                           : absl::StrCat("agent reports unhealthy: ",
                                                          req.unhealthy_reason()));
          (*event->mutable_attributes())["from"] = v1::HostReadiness_Name(h->readiness());
        }
        const bool allocated_changed =
            h->info().allocated().SerializeAsString() != req.allocated().SerializeAsString();
        const bool stale = now - FromProto(h->last_heartbeat_time()) >
                           options_.heartbeat_interval * kPersistEvery;
        if (!readiness_changed && !allocated_changed && !stale) {
          *skip = true;  // nothing new worth an fsync
          return absl::OkStatus();
        }
        h->set_readiness(want);
        *h->mutable_info()->mutable_allocated() = req.allocated();
        ToProto(now, h->mutable_last_heartbeat_time());
        return absl::OkStatus();
      });
  if (absl::IsNotFound(host.status())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "host '", req.host_name(), "' is not registered; call RegisterHost first"));
  }
  RETURN_IF_ERROR(host.status());
  if (readiness_changed) Changed();
  {
    absl::MutexLock lock(&mu_);
    last_seen_[req.host_name()] = now;
  }
  v1::HeartbeatResponse resp;
  ToProto(options_.heartbeat_interval, resp.mutable_heartbeat_interval());
  resp.set_cordoned(host->cordoned());
  return resp;
}

absl::StatusOr<v1::Host> HostRegistry::Cordon(const std::string& name,
                                              const std::string& reason) {
  if (name.empty()) return absl::InvalidArgumentError("name is required");
  const std::string why = reason.empty() ? "cordoned by request" : reason;
  bool changed = false;
  ASSIGN_OR_RETURN(
      v1::Host h, UpdateHost(name, [&](v1::Host* h, v1::Event* e, bool* skip) {
        changed = !h->cordoned() || h->cordon_reason() != why;
        *skip = !changed;
        *e = HostEvent(name, v1::EVENT_SEVERITY_INFO, "HostCordoned", why);
        h->set_cordoned(true);
        h->set_cordon_reason(why);
        return absl::OkStatus();
      }));
  if (changed) Changed();
  return h;
}

absl::StatusOr<v1::Host> HostRegistry::Uncordon(const std::string& name) {
  if (name.empty()) return absl::InvalidArgumentError("name is required");
  ASSIGN_OR_RETURN(
      v1::Host h, UpdateHost(name, [&](v1::Host* h, v1::Event* e, bool* skip) {
        *skip = !h->cordoned();
        *e = HostEvent(name, v1::EVENT_SEVERITY_INFO, "HostUncordoned",
                       "new VMs and migrations may land here again");
        h->set_cordoned(false);
        h->clear_cordon_reason();
        return absl::OkStatus();
      }));
  Changed();
  return h;
}

void HostRegistry::CheckHeartbeats() {
  const absl::Time now = options_.clock();
  const absl::Duration limit = options_.heartbeat_interval * options_.missed_heartbeats;
  ListOptions<v1::Host> opts;
  opts.page_size = kMaxPageSize;
  opts.filter = [](const v1::Host& h) {
    return h.readiness() != v1::HOST_READINESS_UNKNOWN;
  };
  std::vector<std::string> silent;
  for (;;) {
    absl::StatusOr<ListPage<v1::Host>> page = store_->List<v1::Host>(opts);
    if (!page.ok()) return;
    absl::MutexLock lock(&mu_);
    for (const v1::Host& h : page->items) {
      auto it = last_seen_.find(h.name());
      const absl::Time seen = it == last_seen_.end() ? start_ : std::max(it->second, start_);
      if (now - seen > limit) silent.push_back(h.name());
    }
    if (page->next_page_token.empty()) break;
    opts.page_token = page->next_page_token;
  }
  for (const std::string& name : silent) {
    const v1::Event e = HostEvent(
        name, v1::EVENT_SEVERITY_WARNING, "HostUnknown",
        absl::StrCat("no heartbeat for more than ", absl::FormatDuration(limit),
                     "; nothing new is scheduled here and its VMs are not "
                     "moved automatically (they may still run)"));
    (void)UpdateHost(name, [&](v1::Host* h, v1::Event* event, bool* skip) {
      *skip = h->readiness() == v1::HOST_READINESS_UNKNOWN;
      *event = e;
      h->set_readiness(v1::HOST_READINESS_UNKNOWN);
      return absl::OkStatus();
    });
  }
  if (!silent.empty()) Changed();
}

}  // namespace ferry::controller
