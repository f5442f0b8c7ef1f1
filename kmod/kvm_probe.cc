// kvm_probe: prints what this host's KVM offers, or why there is none.
//   bazel run //kmod:kvm_probe [-- /dev/kvm]
// Exit status: 0 = KVM usable, 2 = no KVM (the reason is printed).
#include <cstdio>
#include <string>

#include "kmod/caps.h"
#include "kmod/kvm.h"
#include "kmod/vm.h"

namespace {

using ferry::kmod::Cap;
using ferry::kmod::CapName;

template <typename T>
void PrintValue(const char* what, const absl::StatusOr<T>& value) {
  if (value.ok()) {
    std::printf("%-36s %lld\n", what, static_cast<long long>(*value));
  } else {
    std::printf("%-36s error: %s\n", what, value.status().ToString().c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string path = argc > 1 ? argv[1] : ferry::kmod::Kvm::kDefaultPath;
  absl::StatusOr<ferry::kmod::Kvm> kvm = ferry::kmod::Kvm::Open(path);
  if (!kvm.ok()) {
    std::printf("no KVM: %s\n", kvm.status().ToString().c_str());
    return 2;
  }
  std::printf("%s: API version %d\n", path.c_str(),
              ferry::kmod::Kvm::kApiVersion);
  PrintValue("vCPU mmap size", kvm->GetVcpuMmapSize());
  PrintValue("max vCPUs", kvm->MaxVcpus());
  PrintValue("max vCPU id", kvm->MaxVcpuId());
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> cpuid =
      kvm->GetSupportedCpuid();
  PrintValue("supported CPUID entries",
             cpuid.ok() ? absl::StatusOr<size_t>(cpuid->size())
                        : absl::StatusOr<size_t>(cpuid.status()));
  absl::StatusOr<std::vector<uint32_t>> msrs = kvm->GetMsrIndexList();
  PrintValue("MSRs to migrate", msrs.ok()
                                    ? absl::StatusOr<size_t>(msrs->size())
                                    : absl::StatusOr<size_t>(msrs.status()));

  absl::StatusOr<ferry::kmod::VmFd> vm = kvm->CreateVm();
  if (!vm.ok()) {
    std::printf("KVM_CREATE_VM failed: %s\n", vm.status().ToString().c_str());
  }
  std::printf("\n%-36s %8s %8s\n", "capability", "system", "vm");
  for (Cap cap : ferry::kmod::AllCaps()) {
    absl::StatusOr<int> system = kvm->CheckExtension(cap);
    std::string vm_value = "-";
    if (vm.ok()) {
      absl::StatusOr<int> value = vm->CheckExtension(cap);
      vm_value = value.ok() ? std::to_string(*value) : "error";
    }
    std::printf("%-36s %8s %8s\n", std::string(CapName(cap)).c_str(),
                system.ok() ? std::to_string(*system).c_str() : "error",
                vm_value.c_str());
  }
  return 0;
}
