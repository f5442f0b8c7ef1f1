#include "kmod/kvm.h"

#include <fcntl.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kmod/errors.h"
#include "kmod/flex_buffer.h"
#include "kmod/ioctl_call.h"

namespace ferry::kmod {
namespace {

using internal::Ioctl;
using internal::IoctlError;
using internal::IoctlValue;

absl::Status OpenError(int err, const std::string& path) {
  std::string what = absl::StrCat("open ", path);
  switch (err) {
    case ENOENT:
      return ErrnoError(err, what,
                        "KVM is not available on this host (kvm module not "
                        "loaded, or no hardware/nested virtualization); use "
                        "the software MMU backend");
    case ENXIO:
    case ENODEV:
      // The node exists but no driver is bound (e.g. kvm_pvm refusing to
      // load inside a PVM guest).
      return absl::UnavailableError(absl::StrCat(
          ErrnoError(err, what).message(),
          ": the device node exists but no KVM driver is bound to it; use "
          "the software MMU backend"));
    case EACCES:
    case EPERM:
      return ErrnoError(err, what,
                        "add this user to the group owning the device "
                        "(usually 'kvm')");
    default:
      return ErrnoError(err, what);
  }
}

}  // namespace

absl::StatusOr<Kvm> Kvm::Open(std::string path) {
  Fd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return OpenError(errno, path);
  return FromFd(std::move(fd), std::move(path));
}

absl::StatusOr<Kvm> Kvm::FromFd(Fd fd, std::string path) {
  Kvm kvm(std::move(fd), std::move(path));
  int version = IoctlValue<kGetApiVersion>(kvm.fd_);
  if (version < 0) {
    return IoctlError(kGetApiVersion, kvm.path_, -version,
                      version == -ENOTTY ? "this is not a KVM device" : "");
  }
  if (version != kApiVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("KVM_GET_API_VERSION ", kvm.path_, ": got ", version,
                     ", need ", kApiVersion));
  }
  return kvm;
}

absl::StatusOr<int> Kvm::GetApiVersion() const {
  int r = IoctlValue<kGetApiVersion>(fd_);
  if (r < 0) return IoctlError(kGetApiVersion, path_, -r);
  return r;
}

absl::StatusOr<int> Kvm::CheckExtension(Cap cap) const {
  int r = IoctlValue<kCheckExtension>(fd_, static_cast<unsigned long>(cap));
  if (r < 0) return IoctlError(kCheckExtension, CapName(cap), -r);
  return r;
}

absl::StatusOr<size_t> Kvm::GetVcpuMmapSize() const {
  int r = IoctlValue<kGetVcpuMmapSize>(fd_);
  if (r < 0) return IoctlError(kGetVcpuMmapSize, path_, -r);
  if (static_cast<size_t>(r) < sizeof(kvm_run)) {
    return absl::InternalError(absl::StrCat(
        "KVM_GET_VCPU_MMAP_SIZE ", path_, ": ", r,
        " bytes is smaller than struct kvm_run (", sizeof(kvm_run), ")"));
  }
  return static_cast<size_t>(r);
}

absl::StatusOr<std::vector<kvm_cpuid_entry2>> Kvm::GetSupportedCpuid() const {
  // The kernel caps nent at KVM_MAX_CPUID_ENTRIES (256 today) and answers
  // E2BIG when the buffer is too small; grow in case a future kernel has more.
  for (size_t capacity = 256; capacity <= 4096; capacity *= 2) {
    internal::FlexBuffer<kvm_cpuid2, kvm_cpuid_entry2> buffer(capacity);
    buffer.header()->nent = static_cast<uint32_t>(capacity);
    int r = Ioctl<kGetSupportedCpuid>(fd_, buffer.header());
    if (r == -E2BIG) continue;
    if (r < 0) return IoctlError(kGetSupportedCpuid, path_, -r);
    const kvm_cpuid_entry2* entries = buffer.entries();
    return std::vector<kvm_cpuid_entry2>(entries,
                                         entries + buffer.header()->nent);
  }
  return absl::OutOfRangeError(absl::StrCat("KVM_GET_SUPPORTED_CPUID ", path_,
                                            ": more than 4096 entries"));
}

absl::StatusOr<std::vector<uint32_t>> Kvm::GetMsrIndexList() const {
  // First call with nmsrs = 0: the kernel answers E2BIG and fills in the
  // count. Retry if the list grew in between (it does not, but be exact).
  uint32_t count = 0;
  for (int attempt = 0; attempt < 3; ++attempt) {
    internal::FlexBuffer<kvm_msr_list, uint32_t> buffer(count);
    buffer.header()->nmsrs = count;
    int r = Ioctl<kGetMsrIndexList>(fd_, buffer.header());
    if (r == -E2BIG) {
      count = buffer.header()->nmsrs;
      continue;
    }
    if (r < 0) return IoctlError(kGetMsrIndexList, path_, -r);
    const uint32_t* indices = buffer.entries();
    return std::vector<uint32_t>(indices, indices + buffer.header()->nmsrs);
  }
  return absl::InternalError(
      absl::StrCat("KVM_GET_MSR_INDEX_LIST ", path_, ": count kept changing"));
}

absl::StatusOr<int> Kvm::MaxVcpus() const {
  ASSIGN_OR_RETURN(int max, CheckExtension(Cap::kMaxVcpus));
  if (max > 0) return max;
  ASSIGN_OR_RETURN(int recommended, CheckExtension(Cap::kNrVcpus));
  return recommended > 0 ? recommended : 4;
}

absl::StatusOr<int> Kvm::MaxVcpuId() const {
  ASSIGN_OR_RETURN(int max_id, CheckExtension(Cap::kMaxVcpuId));
  if (max_id > 0) return max_id;
  return MaxVcpus();
}

absl::StatusOr<VmFd> Kvm::CreateVm() const {
  ASSIGN_OR_RETURN(size_t mmap_size, GetVcpuMmapSize());
  int r;
  // QEMU retries too: VM creation can be interrupted while the kernel sets
  // up the MMU notifier.
  do {
    r = IoctlValue<kCreateVm>(fd_, 0);
  } while (r == -EINTR);
  if (r < 0) return IoctlError(kCreateVm, path_, -r);
  return VmFd::FromFd(Fd(r), mmap_size);
}

}  // namespace ferry::kmod
