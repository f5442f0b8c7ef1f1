#include "kmod/errors.h"

#include <cerrno>

#include "gtest/gtest.h"

namespace ferry::kmod {
namespace {

TEST(ErrorsTest, MapsErrnoToCodes) {
  EXPECT_EQ(CodeForErrno(EINVAL), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CodeForErrno(ENOTTY), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CodeForErrno(EBADF), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CodeForErrno(ENXIO), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CodeForErrno(ENOMEM), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(CodeForErrno(ENOENT), absl::StatusCode::kNotFound);
  EXPECT_EQ(CodeForErrno(EEXIST), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(CodeForErrno(EACCES), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(CodeForErrno(EINTR), absl::StatusCode::kUnavailable);
  EXPECT_EQ(CodeForErrno(E2BIG), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(CodeForErrno(EFAULT), absl::StatusCode::kInternal);
}

TEST(ErrorsTest, NamesErrnos) {
  EXPECT_EQ(ErrnoName(EINVAL), "EINVAL");
  EXPECT_EQ(ErrnoName(ENOTTY), "ENOTTY");
  EXPECT_EQ(ErrnoName(4095), "errno 4095");
}

TEST(ErrorsTest, FormatsMessage) {
  absl::Status status = ErrnoError(EINVAL, "KVM_GET_DIRTY_LOG vm slot=3");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "KVM_GET_DIRTY_LOG vm slot=3: EINVAL (Invalid argument)");
  EXPECT_EQ(ErrnoError(ENOENT, "open /x", "do y").message(),
            "open /x: ENOENT (No such file or directory): do y");
}

}  // namespace
}  // namespace ferry::kmod
