#include "agent/service/host_info.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/vmm/kvm/kvm_backend.h"
#include "agent/vmm/soft/soft_backend.h"
#include "kmod/caps.h"
#include "kmod/kvm.h"
#include "kmod/vm.h"

namespace ferry::service {
namespace {

bool FileContains(const std::string& path, absl::string_view what) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  return absl::StrContains(text, what);
}

bool Exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

}  // namespace

absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text) {
  std::string s = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  absl::string_view v(s);
  struct Unit {
    const char* suffix;
    uint64_t mult;
  };
  static const Unit kUnits[] = {
      {"kib", uint64_t{1} << 10}, {"mib", uint64_t{1} << 20},
      {"gib", uint64_t{1} << 30}, {"tib", uint64_t{1} << 40},
      {"kb", 1000},               {"mb", 1000000},
      {"gb", 1000000000},         {"tb", 1000000000000},
      {"k", uint64_t{1} << 10},   {"m", uint64_t{1} << 20},
      {"g", uint64_t{1} << 30},   {"t", uint64_t{1} << 40},
      {"b", 1}};
  uint64_t mult = 1;
  for (const Unit& u : kUnits) {
    if (absl::ConsumeSuffix(&v, u.suffix)) {
      mult = u.mult;
      break;
    }
  }
  double number;
  if (v.empty() || !absl::SimpleAtod(v, &number) || !(number >= 0) ||
      number * static_cast<double>(mult) > 1.8e19) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", text, "\" is not a byte size (e.g. 4096, 512MiB, 8GiB)"));
  }
  return static_cast<uint64_t>(number * static_cast<double>(mult));
}

absl::StatusOr<std::map<std::string, std::string>> ParseLabels(
    absl::string_view text) {
  std::map<std::string, std::string> out;
  if (absl::StripAsciiWhitespace(text).empty()) return out;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    std::pair<std::string, std::string> kv =
        absl::StrSplit(item, absl::MaxSplits('=', 1));
    std::string key(absl::StripAsciiWhitespace(kv.first));
    if (key.empty() || !absl::StrContains(item, '=')) {
      return absl::InvalidArgumentError(absl::StrCat(
          "label \"", item, "\" is not key=value (--labels=k=v,k2=v2)"));
    }
    if (absl::StartsWith(key, kReservedLabelPrefix)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "label key \"", key, "\" uses the agent's reserved prefix ",
          kReservedLabelPrefix));
    }
    if (!out.emplace(key, std::string(absl::StripAsciiWhitespace(kv.second)))
             .second) {
      return absl::InvalidArgumentError(
          absl::StrCat("label key \"", key, "\" is given twice"));
    }
  }
  return out;
}

HostResourcesProbe ProbeHostResources() {
  HostResourcesProbe p;
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page_size > 0) {
    p.memory_bytes = static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size);
  }
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  p.cpus = cpus > 0 ? static_cast<uint32_t>(cpus) : 1;
  return p;
}

uint64_t DefaultMemoryCapacity(uint64_t physical_bytes) {
  const uint64_t reserve = std::min(
      std::max<uint64_t>(uint64_t{1} << 30, physical_bytes / 10),
      physical_bytes / 2);
  return physical_bytes - reserve;
}

std::string HostName() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') {
    return "localhost";
  }
  return name;
}

v1::KvmCapabilities ProbeKvmCapabilities(const std::string& path,
                                         absl::Status* why) {
  v1::KvmCapabilities caps;
  absl::StatusOr<kmod::Kvm> kvm = kmod::Kvm::Open(path);
  if (!kvm.ok()) {
    if (why != nullptr) *why = kvm.status();
    return caps;
  }
  if (why != nullptr) *why = absl::OkStatus();
  caps.set_available(true);
  caps.set_api_version(kmod::Kvm::kApiVersion);
  // The vendor module that registered /dev/kvm. kvm_pvm runs guests with
  // shadow paging and no VMX/SVM (DESIGN.md, "The kernel side").
  for (const char* module : {"kvm_intel", "kvm_amd", "kvm_pvm"}) {
    if (Exists(absl::StrCat("/sys/module/", module))) {
      caps.set_module(module);
      break;
    }
  }
  caps.set_hardware_virtualization(caps.module() == "kvm_intel" ||
                                   caps.module() == "kvm_amd");
  caps.set_tdp(
      (caps.module() == "kvm_intel" &&
       FileContains("/sys/module/kvm_intel/parameters/ept", "Y")) ||
      (caps.module() == "kvm_amd" &&
       FileContains("/sys/module/kvm_amd/parameters/npt", "1")));
  auto cap = [&](kmod::Cap c) -> int {
    absl::StatusOr<int> v = kvm->CheckExtension(c);
    return v.ok() ? *v : 0;
  };
  // Dirty-ring and XSAVE2 answers may depend on the VM: ask a VM when one
  // can be made (api.rst: KVM_CHECK_EXTENSION on a VM fd).
  absl::StatusOr<kmod::VmFd> vm = kvm->CreateVm();
  auto vm_cap = [&](kmod::Cap c) -> int {
    if (vm.ok()) {
      absl::StatusOr<int> v = vm->CheckExtension(c);
      if (v.ok()) return *v;
    }
    return cap(c);
  };
  caps.set_manual_dirty_log_protect2(cap(kmod::Cap::kManualDirtyLogProtect2) != 0);
  caps.set_dirty_ring_max_bytes(static_cast<uint32_t>(std::max(
      vm_cap(kmod::Cap::kDirtyLogRingAcqRel), vm_cap(kmod::Cap::kDirtyLogRing))));
  caps.set_xsave2(vm_cap(kmod::Cap::kXsave2) != 0);
  caps.set_sregs2(cap(kmod::Cap::kSregs2) != 0);
  absl::StatusOr<int> max_vcpus = kvm->MaxVcpus();
  caps.set_max_vcpus(max_vcpus.ok() ? static_cast<uint32_t>(*max_vcpus) : 0);
  caps.set_max_memslots(static_cast<uint32_t>(cap(kmod::Cap::kNrMemslots)));
  caps.add_tracking_modes(v1::DIRTY_TRACKING_MODE_BITMAP);
  if (caps.manual_dirty_log_protect2()) {
    caps.add_tracking_modes(v1::DIRTY_TRACKING_MODE_CLEAR_LOG);
  }
  if (caps.dirty_ring_max_bytes() != 0) {
    caps.add_tracking_modes(v1::DIRTY_TRACKING_MODE_RING);
  }
  return caps;
}

absl::StatusOr<BackendChoice> ChooseBackends(
    absl::string_view mode, const std::string& kvm_device,
    vmm::SoftMemoryPortFactory soft_factory) {
  if (mode != "auto" && mode != "kvm" && mode != "soft") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--backend=", mode, " is not one of auto, kvm, soft"));
  }
  BackendChoice c;
  if (mode != "soft") {
    auto kvm = std::make_unique<vmm::KvmBackend>(kvm_device);
    c.kvm_status = kvm->Probe();
    if (c.kvm_status.ok()) c.kvm = std::move(kvm);
  } else {
    c.kvm_status = absl::UnavailableError("KVM not used (--backend=soft)");
  }
  if (mode == "kvm" && c.kvm == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--backend=kvm but ", kvm_device, " is not usable: ",
        c.kvm_status.ToString(),
        "; fix KVM or run with --backend=auto/soft"));
  }
  if (mode != "kvm") {
    c.soft = std::make_unique<vmm::SoftBackend>(std::move(soft_factory));
  }
  if (c.kvm != nullptr) {
    c.preferred = v1::VM_BACKEND_KVM;
    c.summary = absl::StrCat("kvm (", kvm_device, " usable; --backend=", mode,
                             ")");
  } else {
    c.preferred = v1::VM_BACKEND_SOFT;
    c.summary = mode == "soft"
                    ? std::string("soft (--backend=soft)")
                    : absl::StrCat("soft (", kvm_device, " unusable: ",
                                   c.kvm_status.ToString(), ")");
  }
  return c;
}

}  // namespace ferry::service
