#include "common/status_macros.h"

#include <memory>
#include <string>

#include "gtest/gtest.h"

namespace ferry {
namespace {

absl::Status FailIf(bool fail) {
  if (fail) return absl::InvalidArgumentError("asked to fail");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<int>> MakeInt(int v) {
  if (v < 0) return absl::OutOfRangeError("negative");
  return std::make_unique<int>(v);
}

absl::Status Chain(bool fail, int* calls) {
  RETURN_IF_ERROR(FailIf(fail));
  ++*calls;
  return absl::OkStatus();
}

absl::StatusOr<int> Double(int v) {
  ASSIGN_OR_RETURN(auto p, MakeInt(v));  // move-only value
  int out = 0;
  ASSIGN_OR_RETURN(auto q, MakeInt(*p));  // two in one scope
  out = *p + *q;
  return out;
}

TEST(StatusMacros, ReturnIfErrorStopsOnError) {
  int calls = 0;
  EXPECT_TRUE(Chain(false, &calls).ok());
  EXPECT_EQ(calls, 1);
  absl::Status s = Chain(true, &calls);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(calls, 1);
}

TEST(StatusMacros, AssignOrReturnMovesValueAndPropagatesError) {
  auto ok = Double(21);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 42);
  auto bad = Double(-1);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(bad.status().message(), "negative");
}

}  // namespace
}  // namespace ferry
