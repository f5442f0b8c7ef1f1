#include "kmod/fd.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <utility>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::kmod {
namespace {

using ::testing::HasSubstr;

bool IsOpen(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

TEST(FdTest, ClosesOnDestructionAndMove) {
  int raw;
  {
    absl::StatusOr<Fd> fd = CreateMemfd("fd-test", 4096);
    ASSERT_TRUE(fd.ok()) << fd.status();
    raw = fd->get();
    Fd moved = *std::move(fd);
    EXPECT_FALSE(fd->valid());
    EXPECT_EQ(moved.get(), raw);
    EXPECT_TRUE(IsOpen(raw));
  }
  EXPECT_FALSE(IsOpen(raw));
}

TEST(FdTest, ReleaseGivesUpOwnership) {
  absl::StatusOr<Fd> fd = CreateMemfd("fd-test", 0);
  ASSERT_TRUE(fd.ok());
  int raw = fd->Release();
  EXPECT_FALSE(fd->valid());
  EXPECT_TRUE(IsOpen(raw));
  ::close(raw);
}

TEST(FdTest, DefaultIsEmpty) {
  Fd fd;
  EXPECT_EQ(fd.get(), -1);
  EXPECT_FALSE(fd.valid());
}

TEST(MmapTest, MapsAndUnmaps) {
  absl::StatusOr<Fd> fd = CreateMemfd("mmap-test", 8192);
  ASSERT_TRUE(fd.ok());
  absl::StatusOr<Mmap> map = Mmap::Create(
      fd->get(), 8192, PROT_READ | PROT_WRITE, MAP_SHARED, 4096, "test");
  ASSERT_TRUE(map.ok()) << map.status();
  map->bytes()[0] = 42;
  Mmap moved = *std::move(map);
  EXPECT_FALSE(map->valid());
  EXPECT_EQ(moved.bytes()[0], 42);
  EXPECT_EQ(moved.size(), 8192u);
}

TEST(MmapTest, BadFdNamesTheMapping) {
  absl::StatusOr<Mmap> map =
      Mmap::Create(-1, 4096, PROT_READ, MAP_SHARED, 0, "kvm_run vcpu 7");
  ASSERT_FALSE(map.ok());
  EXPECT_EQ(map.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(map.status().message(), HasSubstr("mmap kvm_run vcpu 7"));
  EXPECT_THAT(map.status().message(), HasSubstr("EBADF"));
}

TEST(MmapTest, ZeroLengthIsInvalid) {
  absl::StatusOr<Mmap> map = Mmap::Create(-1, 0, PROT_READ, MAP_SHARED, 0, "x");
  EXPECT_EQ(map.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(HostPageSizeTest, IsAPowerOfTwo) {
  size_t page = HostPageSize();
  EXPECT_GE(page, 4096u);
  EXPECT_EQ(page & (page - 1), 0u);
}

}  // namespace
}  // namespace ferry::kmod
