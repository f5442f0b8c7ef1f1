// The one way ferry includes the kernel's KVM UAPI headers.
//
// Debian's headers declare trailing flexible arrays with
// __DECLARE_FLEX_ARRAY(), which expands to `struct { struct {} __empty_x;
// T x[]; }`. In C the empty struct has size 0; in C++ it has size 1, so
// compiled as C++ every such struct changes layout: sizeof(kvm_cpuid2) is 12
// instead of 8, its entries start at offset 12 instead of 8, and the ioctl
// request numbers built from those sizes (KVM_GET_SUPPORTED_CPUID,
// KVM_GET/SET_MSRS, KVM_GET_MSR_INDEX_LIST, KVM_GET/SET_CPUID2,
// KVM_GET/SET_XSAVE, KVM_GET_XSAVE2, ...) no longer match the kernel's, which
// answers EINVAL. The coalesced MMIO ring's entries would be read 8 bytes
// off. Newer kernels' <linux/stddef.h> declare a zero-length array under
// __cplusplus; do the same here before <linux/kvm.h> is seen. Every file
// that needs the KVM ABI includes this header and never <linux/kvm.h>
// directly; the static_asserts below pin the C layout.
#ifndef FERRY_KMOD_KVM_ABI_H_
#define FERRY_KMOD_KVM_ABI_H_

#if defined(_LINUX_KVM_H) && defined(__cplusplus)
#error "include kmod/kvm_abi.h instead of <linux/kvm.h> (flexible-array layout)"
#endif

#include <linux/stddef.h>

#ifdef __cplusplus
#undef __DECLARE_FLEX_ARRAY
#define __DECLARE_FLEX_ARRAY(TYPE, NAME) TYPE NAME[0]
#endif

#include <linux/kvm.h>

#ifdef __cplusplus
#include <cstddef>

// The C layout, as the kernel sees it.
static_assert(sizeof(kvm_cpuid2) == 8, "kvm_cpuid2 must have the C layout");
static_assert(offsetof(kvm_cpuid2, entries) == 8, "kvm_cpuid2.entries");
static_assert(sizeof(kvm_msrs) == 8, "kvm_msrs must have the C layout");
static_assert(offsetof(kvm_msrs, entries) == 8, "kvm_msrs.entries");
static_assert(sizeof(kvm_msr_list) == 4, "kvm_msr_list must have C layout");
static_assert(sizeof(kvm_xsave) == 4096, "kvm_xsave must have the C layout");
static_assert(sizeof(kvm_signal_mask) == 4, "kvm_signal_mask C layout");
static_assert(sizeof(kvm_coalesced_mmio_ring) == 8,
              "kvm_coalesced_mmio_ring must have the C layout");
static_assert(offsetof(kvm_coalesced_mmio_ring, coalesced_mmio) == 8,
              "kvm_coalesced_mmio_ring.coalesced_mmio");
#endif

#endif  // FERRY_KMOD_KVM_ABI_H_
