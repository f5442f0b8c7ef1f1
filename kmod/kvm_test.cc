#include "kmod/kvm.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kmod/testing/kvm_test_util.h"

namespace ferry::kmod {
namespace {

using ::testing::HasSubstr;

// --- Runs everywhere ---

TEST(KvmTest, MissingDeviceIsNotFoundWithAdvice) {
  absl::StatusOr<Kvm> kvm = Kvm::Open("/nonexistent/kvm");
  ASSERT_FALSE(kvm.ok());
  EXPECT_EQ(kvm.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(kvm.status().message(), HasSubstr("open /nonexistent/kvm"));
  EXPECT_THAT(kvm.status().message(), HasSubstr("ENOENT"));
  EXPECT_THAT(kvm.status().message(), HasSubstr("software MMU"));
}

TEST(KvmTest, NonKvmDeviceIsRejected) {
  absl::StatusOr<Kvm> kvm = Kvm::Open("/dev/null");
  ASSERT_FALSE(kvm.ok());
  EXPECT_EQ(kvm.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(kvm.status().message(),
              HasSubstr("KVM_GET_API_VERSION /dev/null: ENOTTY"));
  EXPECT_THAT(kvm.status().message(), HasSubstr("not a KVM device"));
}

TEST(KvmTest, BadFdIsRejected) {
  absl::StatusOr<Kvm> kvm = Kvm::FromFd(Fd());
  ASSERT_FALSE(kvm.ok());
  EXPECT_EQ(kvm.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(kvm.status().message(), HasSubstr("KVM_GET_API_VERSION"));
  EXPECT_THAT(kvm.status().message(), HasSubstr("EBADF"));
}

// --- Needs /dev/kvm ---

TEST(KvmTest, ProbesTheSystem) {
  FERRY_OPEN_KVM_OR_SKIP(kvm);
  absl::StatusOr<int> version = kvm.GetApiVersion();
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(*version, Kvm::kApiVersion);

  absl::StatusOr<int> user_memory = kvm.CheckExtension(Cap::kUserMemory);
  ASSERT_TRUE(user_memory.ok()) << user_memory.status();
  EXPECT_GT(*user_memory, 0);

  absl::StatusOr<size_t> mmap_size = kvm.GetVcpuMmapSize();
  ASSERT_TRUE(mmap_size.ok()) << mmap_size.status();
  EXPECT_GE(*mmap_size, sizeof(kvm_run));

  absl::StatusOr<int> max_vcpus = kvm.MaxVcpus();
  ASSERT_TRUE(max_vcpus.ok()) << max_vcpus.status();
  EXPECT_GE(*max_vcpus, 1);
  absl::StatusOr<int> max_id = kvm.MaxVcpuId();
  ASSERT_TRUE(max_id.ok());
  EXPECT_GE(*max_id, *max_vcpus);
}

TEST(KvmTest, SupportedCpuidHasLongMode) {
  FERRY_OPEN_KVM_OR_SKIP(kvm);
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> cpuid = kvm.GetSupportedCpuid();
  ASSERT_TRUE(cpuid.ok()) << cpuid.status();
  auto ext = std::find_if(cpuid->begin(), cpuid->end(), [](const auto& e) {
    return e.function == 0x80000001;
  });
  ASSERT_NE(ext, cpuid->end());
  EXPECT_TRUE(ext->edx & (1u << 29)) << "CPUID.80000001H:EDX.LM";
}

TEST(KvmTest, MsrIndexListIsNotEmpty) {
  FERRY_OPEN_KVM_OR_SKIP(kvm);
  absl::StatusOr<std::vector<uint32_t>> msrs = kvm.GetMsrIndexList();
  ASSERT_TRUE(msrs.ok()) << msrs.status();
  EXPECT_FALSE(msrs->empty());
  // IA32_TSC is always migrated.
  EXPECT_NE(std::find(msrs->begin(), msrs->end(), 0x10u), msrs->end());
}

TEST(KvmTest, CreatesVms) {
  FERRY_OPEN_KVM_OR_SKIP(kvm);
  absl::StatusOr<VmFd> vm1 = kvm.CreateVm();
  ASSERT_TRUE(vm1.ok()) << vm1.status();
  absl::StatusOr<VmFd> vm2 = kvm.CreateVm();
  ASSERT_TRUE(vm2.ok()) << vm2.status();
  EXPECT_NE(vm1->fd().get(), vm2->fd().get());
}

TEST(KvmTest, UnknownCapabilityIsAbsentNotAnError) {
  FERRY_OPEN_KVM_OR_SKIP(kvm);
  absl::StatusOr<int> value = kvm.CheckExtension(static_cast<Cap>(100000));
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, 0);
}

}  // namespace
}  // namespace ferry::kmod
