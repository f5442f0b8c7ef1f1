#include "agent/service/status_conversion.h"

#include "gtest/gtest.h"

namespace ferry::service {
namespace {

TEST(StatusConversionTest, EveryCanonicalCodeRoundTrips) {
  for (int c = 0; c <= 16; ++c) {
    const auto code = static_cast<absl::StatusCode>(c);
    EXPECT_EQ(static_cast<int>(ToGrpcCode(code)), c);
    EXPECT_EQ(FromGrpcCode(ToGrpcCode(code)), code);
  }
}

TEST(StatusConversionTest, KeepsTheMessageWithoutTheCodePrefix) {
  grpc::Status g = ToGrpcStatus(absl::NotFoundError("no VM named \"x\""));
  EXPECT_EQ(g.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(g.error_message(), "no VM named \"x\"");
  absl::Status back = FromGrpcStatus(g);
  EXPECT_EQ(back, absl::NotFoundError("no VM named \"x\""));
}

TEST(StatusConversionTest, OkIsOk) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
}

TEST(StatusConversionTest, UnknownNumbersBecomeUnknown) {
  EXPECT_EQ(ToGrpcCode(static_cast<absl::StatusCode>(999)),
            grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(FromGrpcCode(static_cast<grpc::StatusCode>(999)),
            absl::StatusCode::kUnknown);
}

}  // namespace
}  // namespace ferry::service
