#include "kmod/errors.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace ferry::kmod {

absl::StatusCode CodeForErrno(int err) {
  switch (err) {
    case EINVAL:
    case ERANGE:
      return absl::StatusCode::kInvalidArgument;
    case ENOENT:
    case ENODEV:
      return absl::StatusCode::kNotFound;
    case EEXIST:
      return absl::StatusCode::kAlreadyExists;
    case EPERM:
    case EACCES:
      return absl::StatusCode::kPermissionDenied;
    case ENOMEM:
    case ENOSPC:
    case EMFILE:
    case ENFILE:
      return absl::StatusCode::kResourceExhausted;
    case E2BIG:
      return absl::StatusCode::kOutOfRange;
    case ENOTTY:
    case EBADF:
    case ENXIO:
    case EBUSY:
      return absl::StatusCode::kFailedPrecondition;
    case EINTR:
    case EAGAIN:
      return absl::StatusCode::kUnavailable;
    case EOPNOTSUPP:
    case ENOSYS:
      return absl::StatusCode::kUnimplemented;
    case EFAULT:  // A bad pointer from kmod itself: our bug, not the caller's.
      return absl::StatusCode::kInternal;
    default:
      return absl::StatusCode::kUnknown;
  }
}

std::string ErrnoName(int err) {
  const char* name = ::strerrorname_np(err);
  if (name == nullptr) return absl::StrCat("errno ", err);
  return name;
}

absl::Status ErrnoError(int err, absl::string_view what,
                        absl::string_view hint) {
  const char* text = ::strerrordesc_np(err);
  std::string message =
      absl::StrCat(what, ": ", ErrnoName(err), " (",
                   text != nullptr ? text : "unknown error", ")");
  if (!hint.empty()) absl::StrAppend(&message, ": ", hint);
  return absl::Status(CodeForErrno(err), message);
}

}  // namespace ferry::kmod
