// gtest helpers for tests that need a real /dev/kvm: they skip, with the
// reason, where there is none (such as PVM guests, whose kvm_pvm refuses to
// bind) instead of failing.
#ifndef FERRY_KMOD_TESTING_KVM_TEST_UTIL_H_
#define FERRY_KMOD_TESTING_KVM_TEST_UTIL_H_

#include "gtest/gtest.h"
#include "kmod/caps.h"
#include "kmod/kvm.h"

// Declares `Kvm& var` opened from /dev/kvm, or skips the test.
#define FERRY_OPEN_KVM_OR_SKIP(var)                                         \
  absl::StatusOr<::ferry::kmod::Kvm> var##_or = ::ferry::kmod::Kvm::Open(); \
  if (!var##_or.ok()) {                                                     \
    GTEST_SKIP() << "needs /dev/kvm: " << var##_or.status();                \
  }                                                                         \
  ::ferry::kmod::Kvm& var = *var##_or

// Skips unless `vm_or_kvm.CheckExtension(cap)` reports the capability.
#define FERRY_REQUIRE_CAP_OR_SKIP(vm_or_kvm, cap)                          \
  do {                                                                     \
    absl::StatusOr<int> ferry_cap_ = (vm_or_kvm).CheckExtension(cap);      \
    ASSERT_TRUE(ferry_cap_.ok()) << ferry_cap_.status();                   \
    if (*ferry_cap_ <= 0) {                                                \
      GTEST_SKIP() << "this kernel lacks " << ::ferry::kmod::CapName(cap); \
    }                                                                      \
  } while (0)

#endif  // FERRY_KMOD_TESTING_KVM_TEST_UTIL_H_
