// DirtyRing's harvest protocol, checked against a fake kernel: a memfd laid
// out like a vCPU fd, whose ring pages the test writes through a second
// mapping exactly as KVM would (slot/offset first, then flags = DIRTY).
#include "kmod/dirty_ring.h"

#include "kmod/kvm_abi.h"
#include <sys/mman.h>

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::kmod {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr uint32_t kRingBytes = 4096;  // 256 entries
constexpr uint32_t kEntries = kRingBytes / sizeof(kvm_dirty_gfn);

class FakeKernelRing {
 public:
  FakeKernelRing() {
    const size_t offset = KVM_DIRTY_LOG_PAGE_OFFSET * HostPageSize();
    absl::StatusOr<Fd> fd = CreateMemfd("fake-vcpu", offset + kRingBytes);
    EXPECT_TRUE(fd.ok());
    fd_ = *std::move(fd);
    absl::StatusOr<Mmap> map =
        Mmap::Create(fd_.get(), kRingBytes, PROT_READ | PROT_WRITE, MAP_SHARED,
                     offset, "fake kernel view");
    EXPECT_TRUE(map.ok()) << map.status();
    kernel_view_ = *std::move(map);
  }

  const Fd& fd() const { return fd_; }
  kvm_dirty_gfn& at(uint32_t index) {
    return static_cast<kvm_dirty_gfn*>(kernel_view_.data())[index % kEntries];
  }
  // kvm_dirty_ring_push(): fill the entry, then publish it.
  void Push(uint32_t slot, uint64_t offset) {
    kvm_dirty_gfn& gfn = at(dirty_index_++);
    gfn.slot = slot;
    gfn.offset = offset;
    __atomic_store_n(&gfn.flags, uint32_t{KVM_DIRTY_GFN_F_DIRTY},
                     __ATOMIC_RELEASE);
  }
  // kvm_dirty_ring_reset(): consume RESET entries in order, zero them.
  uint32_t Reset() {
    uint32_t count = 0;
    while (reset_index_ != dirty_index_ &&
           (at(reset_index_).flags & KVM_DIRTY_GFN_F_RESET)) {
      at(reset_index_++).flags = 0;
      ++count;
    }
    return count;
  }

 private:
  Fd fd_;
  Mmap kernel_view_;
  uint32_t dirty_index_ = 0;
  uint32_t reset_index_ = 0;
};

TEST(DirtyRingTest, HarvestsInOrderAndMarksReset) {
  FakeKernelRing kernel;
  absl::StatusOr<DirtyRing> ring =
      DirtyRing::Create(kernel.fd(), kRingBytes, "vcpu 0");
  ASSERT_TRUE(ring.ok()) << ring.status();
  EXPECT_EQ(ring->entries(), kEntries);

  std::vector<DirtyGfn> out;
  EXPECT_EQ(ring->Harvest(&out), 0u);

  kernel.Push(1, 10);
  kernel.Push(1, 11);
  kernel.Push((1 << 16) | 2, 5);  // address space 1, slot 2
  EXPECT_EQ(ring->Harvest(&out), 3u);
  EXPECT_THAT(out, ElementsAre(DirtyGfn{1, 10}, DirtyGfn{1, 11},
                               DirtyGfn{(1 << 16) | 2, 5}));
  EXPECT_EQ(ring->fetch_index(), 3u);
  EXPECT_EQ(ring->harvested_since_reset(), 3u);
  for (uint32_t i = 0; i < 3; ++i) {
    EXPECT_EQ(kernel.at(i).flags, uint32_t{KVM_DIRTY_GFN_F_RESET});
  }
  // Nothing new: nothing harvested, and the RESET marks are not re-read.
  EXPECT_EQ(ring->Harvest(&out), 0u);
  EXPECT_EQ(kernel.Reset(), ring->harvested_since_reset());
  ring->MarkReset();
  EXPECT_EQ(ring->harvested_since_reset(), 0u);
}

TEST(DirtyRingTest, RespectsMaxEntries) {
  FakeKernelRing kernel;
  absl::StatusOr<DirtyRing> ring =
      DirtyRing::Create(kernel.fd(), kRingBytes, "vcpu 0");
  ASSERT_TRUE(ring.ok());
  for (uint64_t i = 0; i < 10; ++i) kernel.Push(0, i);
  std::vector<DirtyGfn> out;
  EXPECT_EQ(ring->Harvest(&out, 4), 4u);
  EXPECT_EQ(ring->Harvest(&out), 6u);
  ASSERT_EQ(out.size(), 10u);
  for (uint64_t i = 0; i < 10; ++i) EXPECT_EQ(out[i].offset, i);
}

TEST(DirtyRingTest, WrapsAroundAcrossResets) {
  FakeKernelRing kernel;
  absl::StatusOr<DirtyRing> ring =
      DirtyRing::Create(kernel.fd(), kRingBytes, "vcpu 0");
  ASSERT_TRUE(ring.ok());
  uint64_t next = 0;
  uint64_t seen = 0;
  // Three laps in uneven batches; every batch harvested, then reset.
  for (int batch = 0; batch < 7; ++batch) {
    const uint32_t n = 100 + batch * 7;
    for (uint32_t i = 0; i < n; ++i) kernel.Push(3, next++);
    size_t got = ring->Harvest([&](const DirtyGfn& gfn) {
      EXPECT_EQ(gfn.slot, 3u);
      EXPECT_EQ(gfn.offset, seen++);
    });
    EXPECT_EQ(got, n);
    EXPECT_EQ(kernel.Reset(), n);
    ring->MarkReset();
  }
  EXPECT_EQ(seen, next);
  EXPECT_GT(next, 2u * kEntries);
}

TEST(DirtyRingTest, NeverReadsPastOneLapWithoutAReset) {
  FakeKernelRing kernel;
  absl::StatusOr<DirtyRing> ring =
      DirtyRing::Create(kernel.fd(), kRingBytes, "vcpu 0");
  ASSERT_TRUE(ring.ok());
  for (uint32_t i = 0; i < kEntries; ++i) kernel.Push(0, i);
  std::vector<DirtyGfn> out;
  EXPECT_EQ(ring->Harvest(&out), kEntries);
  // A (buggy) DIRTY flag in an entry we have not had reset must not be read.
  kernel.at(0).flags = KVM_DIRTY_GFN_F_DIRTY;
  EXPECT_EQ(ring->Harvest(&out), 0u);
}

TEST(DirtyRingTest, SizeMustBeAPowerOfTwo) {
  FakeKernelRing kernel;
  absl::StatusOr<DirtyRing> ring =
      DirtyRing::Create(kernel.fd(), 3 * 4096, "vcpu 1");
  EXPECT_EQ(ring.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ring.status().message(), HasSubstr("dirty ring vcpu 1"));
}

TEST(DirtyRingTest, BadFdCannotBeMapped) {
  absl::StatusOr<DirtyRing> ring = DirtyRing::Create(Fd(), 4096, "vcpu 2");
  EXPECT_EQ(ring.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(ring.status().message(), HasSubstr("mmap dirty ring vcpu 2"));
  EXPECT_THAT(ring.status().message(), HasSubstr("EBADF"));
}

}  // namespace
}  // namespace ferry::kmod
