#include "agent/migration/testing/in_process_host.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "agent/vmm/soft/softmmu_port.h"

namespace ferry::migration::testing {

InProcessHost::InProcessHost(std::string name, absl::Duration prepare_ttl)
    : name_(std::move(name)), backend_(vmm::SoftMmuPortFactory()) {
  IncomingOptions o;
  o.backend = &backend_;
  o.adopt = [this](const std::string&, std::unique_ptr<vmm::Vm> vm) {
    absl::MutexLock lock(&mu_);
    vms_[vm->spec().name()] = std::move(vm);
  };
  if (prepare_ttl > absl::ZeroDuration()) o.default_ttl = prepare_ttl;
  incoming_ = std::make_unique<IncomingMigrations>(std::move(o));
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  IncomingMigrations::ConfigureServer(b);
  b.RegisterService(incoming_->service());
  server_ = b.BuildAndStart();
  endpoint_ = absl::StrCat("127.0.0.1:", port);
  incoming_->set_endpoint(endpoint_);
}

InProcessHost::~InProcessHost() {
  Kill();
  incoming_.reset();
  absl::MutexLock lock(&mu_);
  vms_.clear();
}

void InProcessHost::Kill() {
  if (server_) server_->Shutdown(absl::ToChronoTime(absl::Now()));
  server_.reset();
}

absl::StatusOr<vmm::Vm*> InProcessHost::Create(const v1::VmSpec& spec) {
  absl::StatusOr<std::unique_ptr<vmm::Vm>> vm = vmm::Vm::Create(spec, backend_);
  if (!vm.ok()) return vm.status();
  absl::MutexLock lock(&mu_);
  vmm::Vm* raw = vm->get();
  vms_[spec.name()] = std::move(*vm);
  return raw;
}

vmm::Vm* InProcessHost::Get(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = vms_.find(name);
  return it == vms_.end() ? nullptr : it->second.get();
}

void InProcessHost::Release(vmm::Vm* vm) {
  std::unique_ptr<vmm::Vm> gone;  // destroyed after the lock is released
  absl::MutexLock lock(&mu_);
  for (auto it = vms_.begin(); it != vms_.end(); ++it) {
    if (it->second.get() == vm) {
      gone = std::move(it->second);
      vms_.erase(it);
      break;
    }
  }
}

}  // namespace ferry::migration::testing
