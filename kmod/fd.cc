#include "kmod/fd.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kmod/errors.h"

namespace ferry::kmod {

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) {
    Reset();
    fd_ = other.Release();
  }
  return *this;
}

int Fd::Release() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

void Fd::Reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Mmap::Mmap(Mmap&& other) noexcept
    : addr_(std::exchange(other.addr_, nullptr)),
      length_(std::exchange(other.length_, 0)) {}

Mmap& Mmap::operator=(Mmap&& other) noexcept {
  if (this != &other) {
    Reset();
    addr_ = std::exchange(other.addr_, nullptr);
    length_ = std::exchange(other.length_, 0);
  }
  return *this;
}

absl::StatusOr<Mmap> Mmap::Create(int fd, size_t length, int prot, int flags,
                                  off_t offset, absl::string_view what) {
  if (length == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("mmap ", what, ": zero length"));
  }
  void* addr = ::mmap(nullptr, length, prot, flags, fd, offset);
  if (addr == MAP_FAILED) {
    return ErrnoError(
        errno, absl::StrCat("mmap ", what, " (fd=", fd, ", length=", length,
                            ", offset=", offset, ")"));
  }
  return Mmap(addr, length);
}

void Mmap::Reset() {
  if (addr_ != nullptr) ::munmap(addr_, length_);
  addr_ = nullptr;
  length_ = 0;
}

size_t HostPageSize() {
  static const size_t kPageSize = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  return kPageSize;
}

absl::StatusOr<Fd> CreateMemfd(absl::string_view name, size_t size) {
  Fd fd(::memfd_create(std::string(name).c_str(), MFD_CLOEXEC));
  if (!fd.valid()) {
    return ErrnoError(errno, absl::StrCat("memfd_create ", name));
  }
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return ErrnoError(
        errno, absl::StrCat("ftruncate memfd ", name, " to ", size, " bytes"));
  }
  return fd;
}

}  // namespace ferry::kmod
