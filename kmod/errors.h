// errno → absl::Status, in one place, so every kmod error reads the same:
//   "<what>: EINVAL (Invalid argument): <hint>"
#ifndef FERRY_KMOD_ERRORS_H_
#define FERRY_KMOD_ERRORS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace ferry::kmod {

// The absl code a caller should see for a failed syscall. The choice follows
// what the caller can do about it: EINVAL = fix the arguments; ENOTTY/EBADF/
// ENXIO = wrong object or wrong state (FailedPrecondition); ENOMEM/ENOSPC =
// ResourceExhausted; EINTR/EAGAIN = retry (Unavailable).
absl::StatusCode CodeForErrno(int err);

// "EINVAL"; "errno 4095" for numbers glibc has no name for.
std::string ErrnoName(int err);

// A status for `err` whose message is "<what>: ENAME (strerror)[: hint]".
absl::Status ErrnoError(int err, absl::string_view what,
                        absl::string_view hint = {});

}  // namespace ferry::kmod

#endif  // FERRY_KMOD_ERRORS_H_
