// RAII owners for the two kinds of kernel resource kmod hands around: a file
// descriptor (`Fd`) and a memory mapping (`Mmap`). Every raw fd or mapping the
// kernel returns is wrapped the moment it exists, before the next call that
// can fail, so no error path leaks one.
#ifndef FERRY_KMOD_FD_H_
#define FERRY_KMOD_FD_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::kmod {

// Owns one file descriptor; closes it on destruction. Move-only.
// An empty Fd holds -1; ioctls on it fail with EBADF, never touch fd 0.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { Reset(); }

  Fd(Fd&& other) noexcept : fd_(other.Release()) {}
  Fd& operator=(Fd&& other) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

  // Gives up ownership without closing.
  int Release();
  // Closes the fd (if any). close() errors are ignored: for KVM fds they
  // cannot happen, and Linux releases the descriptor even when close fails.
  void Reset();

 private:
  int fd_ = -1;
};

// Owns one mmap()ed range; munmaps it on destruction. Move-only.
class Mmap {
 public:
  Mmap() = default;
  ~Mmap() { Reset(); }

  Mmap(Mmap&& other) noexcept;
  Mmap& operator=(Mmap&& other) noexcept;
  Mmap(const Mmap&) = delete;
  Mmap& operator=(const Mmap&) = delete;

  // mmap(nullptr, length, prot, flags, fd, offset). `what` names the mapping
  // in error messages ("kvm_run vcpu 0").
  static absl::StatusOr<Mmap> Create(int fd, size_t length, int prot, int flags,
                                     off_t offset, absl::string_view what);

  void* data() const { return addr_; }
  uint8_t* bytes() const { return static_cast<uint8_t*>(addr_); }
  size_t size() const { return length_; }
  bool valid() const { return addr_ != nullptr; }

  void Reset();

 private:
  Mmap(void* addr, size_t length) : addr_(addr), length_(length) {}

  void* addr_ = nullptr;
  size_t length_ = 0;
};

// The host page size (what KVM calls PAGE_SIZE; mmap offsets are in these).
size_t HostPageSize();

// Creates an anonymous memfd of `size` bytes (MFD_CLOEXEC). Guest memory in
// tests, and a harmless non-KVM fd for bad-fd tests.
absl::StatusOr<Fd> CreateMemfd(absl::string_view name, size_t size);

}  // namespace ferry::kmod

#endif  // FERRY_KMOD_FD_H_
