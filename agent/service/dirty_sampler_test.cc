#include "agent/service/dirty_sampler.h"

#include <cstring>
#include <memory>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "mmu/guest_memory.h"

namespace ferry::service {
namespace {

constexpr uint64_t kMemory = 64ull << 20;  // 16384 pages

class DirtySamplerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto layout = mmu::DefaultLayout(kMemory);
    ASSERT_TRUE(layout.ok()) << layout.status();
    auto memory = mmu::GuestMemory::Create(*layout);
    ASSERT_TRUE(memory.ok()) << memory.status();
    memory_ = std::move(*memory);
  }

  std::unique_ptr<VmDirtySampler> MakeSampler(DirtySamplerOptions options = {}) {
    options.seed = 42;  // hermetic (STYLE.md); printed on failure below
    auto s = VmDirtySampler::Create(memory_->slots(), options,
                                    [this] { return now_ns_; });
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }

  // Changes every page whose index % stride == offset.
  void Touch(uint64_t stride, uint64_t offset, uint8_t value) {
    for (uint64_t p = offset; p < memory_->total_pages(); p += stride) {
      auto hva = memory_->GpaToHva(p * mmu::kPageSize, 8);
      ASSERT_TRUE(hva.ok());
      std::memset(*hva, value, 8);
    }
  }

  void Advance(absl::Duration d) { now_ns_ += absl::ToInt64Nanoseconds(d); }

  std::unique_ptr<mmu::GuestMemory> memory_;
  int64_t now_ns_ = 1000000000;
};

TEST_F(DirtySamplerTest, IdleMemoryHasNoDirtyRate) {
  auto sampler = MakeSampler();
  EXPECT_FALSE(sampler->Estimate(absl::ZeroDuration()).valid);
  Advance(absl::Seconds(1));
  ASSERT_TRUE(sampler->Tick().ok());
  DirtyEstimate e = sampler->Estimate(absl::ZeroDuration());
  EXPECT_TRUE(e.valid);
  EXPECT_EQ(e.pages_per_sec, 0);
  EXPECT_EQ(e.working_set_bytes, 0u);
  EXPECT_EQ(e.sampled_pages, 4096u) << "seed " << e.seed;
}

TEST_F(DirtySamplerTest, QuarterOfThePagesPerSecond) {
  auto sampler = MakeSampler();
  Touch(4, 0, 1);
  Advance(absl::Seconds(1));
  ASSERT_TRUE(sampler->Tick().ok());
  DirtyEstimate e = sampler->Estimate(absl::ZeroDuration());
  // 4096 samples, f = 0.25: standard error ~0.7 percentage points.
  EXPECT_NEAR(e.pages_per_sec, 4096, 4096 * 0.1) << "seed " << e.seed;
  EXPECT_NEAR(e.bytes_per_sec, 4096.0 * 4096, 4096.0 * 4096 * 0.1);
  EXPECT_EQ(e.window_ns, 1000000000);
}

TEST_F(DirtySamplerTest, LongerWindowsAverageSeveralTicks) {
  auto sampler = MakeSampler();
  Touch(4, 0, 1);  // window 1: a quarter
  Advance(absl::Seconds(1));
  ASSERT_TRUE(sampler->Tick().ok());
  Advance(absl::Seconds(1));  // window 2: nothing
  ASSERT_TRUE(sampler->Tick().ok());
  EXPECT_EQ(sampler->Estimate(absl::ZeroDuration()).pages_per_sec, 0);
  DirtyEstimate two = sampler->Estimate(absl::Seconds(2));
  EXPECT_EQ(two.window_ns, 2000000000);
  EXPECT_NEAR(two.pages_per_sec, 2048, 2048 * 0.1) << "seed " << two.seed;
}

TEST_F(DirtySamplerTest, WorkingSetIsTheUnionOverTheHorizon) {
  DirtySamplerOptions options;
  options.horizon_windows = 3;
  auto sampler = MakeSampler(options);
  // Three windows each dirty a different quarter: per-window rate stays a
  // quarter, the working set grows to three quarters.
  for (uint64_t w = 0; w < 3; ++w) {
    Touch(4, w, 2);
    Advance(absl::Seconds(1));
    ASSERT_TRUE(sampler->Tick().ok());
  }
  DirtyEstimate e = sampler->Estimate(absl::ZeroDuration());
  const double total = static_cast<double>(kMemory);
  EXPECT_NEAR(e.working_set_bytes, 0.75 * total, 0.06 * total)
      << "seed " << e.seed;
  // The completed horizon's figure stands while the next one starts.
  Advance(absl::Seconds(1));
  ASSERT_TRUE(sampler->Tick().ok());
  EXPECT_NEAR(sampler->Estimate(absl::ZeroDuration()).working_set_bytes,
              0.75 * total, 0.06 * total);
}

TEST_F(DirtySamplerTest, ZeroLengthWindowIsRefusedAndKeepsNothing) {
  auto sampler = MakeSampler();
  EXPECT_EQ(sampler->Tick().status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(sampler->Estimate(absl::ZeroDuration()).valid);
}

TEST_F(DirtySamplerTest, BadOptionsAreInvalidArgument) {
  DirtySamplerOptions options;
  options.horizon_windows = 0;
  auto s = VmDirtySampler::Create(memory_->slots(), options,
                                  [] { return int64_t{0}; });
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ferry::service
