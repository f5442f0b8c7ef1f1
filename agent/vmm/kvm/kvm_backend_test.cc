#include "agent/vmm/kvm/kvm_backend.h"

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "agent/vmm/tsc_calibration.h"
#include "gtest/gtest.h"

namespace ferry::vmm {
namespace {

TEST(KvmBackendTest, MissingDeviceIsAClearError) {
  KvmBackend backend("/nonexistent");
  absl::Status s = backend.Probe();
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::IsNotFound(s) || absl::IsUnavailable(s)) << s;
  EXPECT_NE(s.message().find("/nonexistent"), std::string::npos) << s;
  EXPECT_NE(s.message().find("KVM backend unavailable"), std::string::npos);
  // CreateMachine and MaxVcpus say the same, and keep saying it.
  EXPECT_EQ(backend.MaxVcpus().status(), s);
}

TEST(KvmBackendTest, DefaultDeviceProbesOrExplains) {
  KvmBackend backend;
  absl::Status s = backend.Probe();
  if (!s.ok()) GTEST_SKIP() << "no usable /dev/kvm here: " << s;
  auto max = backend.MaxVcpus();
  ASSERT_TRUE(max.ok()) << max.status();
  EXPECT_GE(*max, 1u);
}

TEST(TscCalibrationTest, PlausibleFrequency) {
  const uint64_t hz = MeasureTscHz(absl::Milliseconds(5));
  EXPECT_GT(hz, 100000000u);     // > 100 MHz
  EXPECT_LT(hz, 10000000000u);   // < 10 GHz
  EXPECT_EQ(CalibratedTscHz(), CalibratedTscHz());
}

}  // namespace
}  // namespace ferry::vmm
