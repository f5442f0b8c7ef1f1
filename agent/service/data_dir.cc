#include "agent/service/data_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace ferry::service {
namespace {

constexpr char kLockName[] = "ferry-agent.lock";

absl::Status Errno(absl::string_view what, int err) {
  return absl::Status(err == EACCES || err == EPERM
                          ? absl::StatusCode::kPermissionDenied
                          : absl::StatusCode::kFailedPrecondition,
                      absl::StrCat(what, ": ", std::strerror(err)));
}

absl::Status MakeDirs(const std::string& dir) {
  for (size_t i = 1; i <= dir.size(); ++i) {
    if (i != dir.size() && dir[i] != '/') continue;
    const std::string prefix = dir.substr(0, i);
    if (mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
      return Errno(absl::StrCat("--data_dir: mkdir ", prefix), errno);
    }
  }
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) {
    return Errno(absl::StrCat("--data_dir: stat ", dir), errno);
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("--data_dir ", dir, " exists and is not a directory"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DataDirLock> DataDirLock::Acquire(const std::string& dir) {
  if (dir.empty()) return absl::InvalidArgumentError("--data_dir is empty");
  if (absl::Status s = MakeDirs(dir); !s.ok()) return s;
  const std::string path = absl::StrCat(dir, "/", kLockName);
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Errno(absl::StrCat("open ", path), errno);
  DataDirLock lock(dir, fd);  // owns fd from here on
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err != EWOULDBLOCK) return Errno(absl::StrCat("flock ", path), err);
    char buf[32] = {};
    const ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    int pid = 0;
    const bool known =
        n > 0 && absl::SimpleAtoi(absl::StripAsciiWhitespace(buf), &pid);
    return absl::FailedPreconditionError(absl::StrCat(
        "data dir ", dir, " is in use by another ferry-agent",
        known ? absl::StrCat(" (pid ", pid, ")") : std::string(),
        " holding ", path, "; stop it or pass another --data_dir"));
  }
  lock.locked_ = true;
  const std::string pid = absl::StrCat(getpid(), "\n");
  if (ftruncate(fd, 0) != 0 ||
      pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    return Errno(absl::StrCat("write pid to ", path), errno);
  }
  return lock;
}

DataDirLock::DataDirLock(DataDirLock&& other) noexcept
    : dir_(std::move(other.dir_)),
      fd_(std::exchange(other.fd_, -1)),
      locked_(std::exchange(other.locked_, false)) {}

DataDirLock& DataDirLock::operator=(DataDirLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    dir_ = std::move(other.dir_);
    fd_ = std::exchange(other.fd_, -1);
    locked_ = std::exchange(other.locked_, false);
  }
  return *this;
}

DataDirLock::~DataDirLock() {
  if (fd_ < 0) return;
  if (locked_ && ftruncate(fd_, 0) != 0) {
    // Nothing useful to do: the lock still goes away with the fd.
  }
  close(fd_);
}

std::string DataDirLock::lock_path() const {
  return absl::StrCat(dir_, "/", kLockName);
}

absl::Status WriteFileAtomically(const std::string& path,
                                 const std::string& contents) {
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno(absl::StrCat("open ", tmp), errno);
  const ssize_t n = write(fd, contents.data(), contents.size());
  const int write_errno = errno;
  if (close(fd) != 0 || n != static_cast<ssize_t>(contents.size())) {
    unlink(tmp.c_str());
    return Errno(absl::StrCat("write ", tmp), write_errno);
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    unlink(tmp.c_str());
    return Errno(absl::StrCat("rename ", tmp, " -> ", path), err);
  }
  return absl::OkStatus();
}

}  // namespace ferry::service
