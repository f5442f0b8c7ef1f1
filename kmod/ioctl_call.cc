#include "kmod/ioctl_call.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "kmod/errors.h"

namespace ferry::kmod::internal {
namespace {

absl::string_view KindName(FdKind kind) {
  switch (kind) {
    case FdKind::kSystem:
      return "/dev/kvm";
    case FdKind::kVm:
      return "VM";
    case FdKind::kVcpu:
      return "vCPU";
  }
  return "?";
}

std::string DefaultHint(const IoctlSpec& spec, int err) {
  switch (err) {
    case ENOTTY:
      return absl::StrCat("the fd is not a KVM ", KindName(spec.fd),
                          " fd, or this kernel lacks the ioctl (needs ",
                          CapName(spec.cap), ")");
    case EBADF:
      return "the fd is closed (or its owner was moved from)";
    case ENOMEM:
      return "the host is out of memory";
    default:
      return "";
  }
}

}  // namespace

absl::Status IoctlError(const IoctlSpec& spec, absl::string_view object,
                        int err, absl::string_view hint) {
  std::string what = absl::StrCat(spec.name, " ", object);
  if (!hint.empty()) return ErrnoError(err, what, hint);
  return ErrnoError(err, what, DefaultHint(spec, err));
}

}  // namespace ferry::kmod::internal
