// The private lower tier under Kvm/VmFd/VcpuFd: typed ioctl calls that return
// the kernel's convention (>= 0 result, or -errno), and the one formatter for
// their errors: "KVM_GET_DIRTY_LOG vm slot=3: EINVAL (Invalid argument)".
// Only kmod's .cc files include this.
#ifndef FERRY_KMOD_IOCTL_CALL_H_
#define FERRY_KMOD_IOCTL_CALL_H_

#include <sys/ioctl.h>

#include <cerrno>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "kmod/fd.h"
#include "kmod/ioctls.h"

namespace ferry::kmod::internal {

// An ioctl whose argument is a pointer to T. For structs ending in a flexible
// array (kvm_msrs, kvm_cpuid2, kvm_xsave with XSAVE2) T is the header and the
// caller's buffer extends past it.
template <const IoctlSpec& kSpec, typename T>
int Ioctl(const Fd& fd, T* arg) {
  static_assert(_IOC_DIR(kSpec.request) != _IOC_NONE,
                "an _IO ioctl takes no pointer: use IoctlValue");
  static_assert(_IOC_SIZE(kSpec.request) == sizeof(T),
                "argument type does not match the size in the request number");
  static_assert(std::is_trivially_copyable_v<T>,
                "kernel ABI structs are plain data");
  // _IOC_READ means the kernel writes the struct back.
  static_assert(!(_IOC_DIR(kSpec.request) & _IOC_READ) || !std::is_const_v<T>,
                "the kernel writes this argument; it cannot be const");
  // SAFETY: `arg` points at a live T (checked above to be the size the kernel
  // copies for this request), or a larger buffer that starts with one.
  int r = ::ioctl(fd.get(), kSpec.request,
                  const_cast<std::remove_const_t<T>*>(arg));
  return r < 0 ? -errno : r;
}

// An _IO ioctl whose argument, if any, is an integer passed by value
// (KVM_CHECK_EXTENSION, KVM_CREATE_VCPU, KVM_SET_TSS_ADDR, KVM_RUN, ...).
template <const IoctlSpec& kSpec>
int IoctlValue(const Fd& fd, unsigned long value = 0) {
  static_assert(
      _IOC_DIR(kSpec.request) == _IOC_NONE && _IOC_SIZE(kSpec.request) == 0,
      "this ioctl takes a struct pointer: use Ioctl");
  int r = ::ioctl(fd.get(), kSpec.request, value);
  return r < 0 ? -errno : r;
}

// The status for a failed call: "<NAME> <object>: ENAME (text)[: hint]".
// `object` names the target and the interesting argument ("vm slot=3",
// "vcpu 0"). Without a hint, common errnos get a default one (e.g. ENOTTY
// explains the fd is not a KVM object of this kind).
absl::Status IoctlError(const IoctlSpec& spec, absl::string_view object,
                        int err, absl::string_view hint = {});

}  // namespace ferry::kmod::internal

#endif  // FERRY_KMOD_IOCTL_CALL_H_
