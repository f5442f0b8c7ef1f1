// The KVM system object: an open /dev/kvm. Probes what the kernel offers and
// creates VMs. Everything here is read-only with respect to kernel state, so
// a Kvm may be shared by threads.
#ifndef FERRY_KMOD_KVM_H_
#define FERRY_KMOD_KVM_H_

#include "kmod/kvm_abi.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kmod/caps.h"
#include "kmod/fd.h"
#include "kmod/vm.h"

namespace ferry::kmod {

class Kvm {
 public:
  static constexpr char kDefaultPath[] = "/dev/kvm";
  // KVM_GET_API_VERSION has returned 12 since Linux 2.6.22; anything else is
  // an ABI we do not speak.
  static constexpr int kApiVersion = 12;

  // Opens the device and checks the API version. A missing device is
  // NotFound, a device with no driver behind it Unavailable, a permission
  // problem PermissionDenied; each message says what to do. The path is
  // injectable so tests and the no-KVM fallback can point elsewhere.
  static absl::StatusOr<Kvm> Open(std::string path = kDefaultPath);
  // Adopts an already-open /dev/kvm fd (e.g. passed by a privileged helper)
  // and checks the API version.
  static absl::StatusOr<Kvm> FromFd(Fd fd, std::string path = "<fd>");

  Kvm(Kvm&&) = default;
  Kvm& operator=(Kvm&&) = default;

  const Fd& fd() const { return fd_; }
  const std::string& path() const { return path_; }

  absl::StatusOr<int> GetApiVersion() const;
  // KVM_CHECK_EXTENSION on /dev/kvm: 0 = absent, else a cap-specific value.
  // Caps whose answer depends on the VM (dirty ring, XSAVE2) are better
  // asked of the VM: VmFd::CheckExtension.
  absl::StatusOr<int> CheckExtension(Cap cap) const;
  // Size of the per-vCPU mmap (kvm_run plus the pages after it).
  absl::StatusOr<size_t> GetVcpuMmapSize() const;
  // The CPUID entries this host's KVM can present to a guest.
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> GetSupportedCpuid() const;
  // The MSRs KVM saves/restores for a guest (what migration must carry).
  absl::StatusOr<std::vector<uint32_t>> GetMsrIndexList() const;
  // Hard limit of vCPUs per VM: KVM_CAP_MAX_VCPUS, else KVM_CAP_NR_VCPUS,
  // else 4 (api.rst, KVM_CREATE_VCPU).
  absl::StatusOr<int> MaxVcpus() const;
  // Largest vCPU id + 1: KVM_CAP_MAX_VCPU_ID, else MaxVcpus().
  absl::StatusOr<int> MaxVcpuId() const;

  // KVM_CREATE_VM with the default machine type.
  absl::StatusOr<VmFd> CreateVm() const;

 private:
  Kvm(Fd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}

  Fd fd_;
  std::string path_;
};

}  // namespace ferry::kmod

#endif  // FERRY_KMOD_KVM_H_
