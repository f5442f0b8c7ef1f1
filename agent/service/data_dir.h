// The agent's data directory: created if missing, and locked for the life
// of the process with flock(2) on <dir>/ferry-agent.lock (which also holds
// the pid), so two agents can never share one directory. The kernel drops
// the lock when the process dies, however it dies: no stale-lock cleanup.
#ifndef FERRY_AGENT_SERVICE_DATA_DIR_H_
#define FERRY_AGENT_SERVICE_DATA_DIR_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ferry::service {

class DataDirLock {
 public:
  // Creates `dir` (and parents) with mode 0700 if needed and takes the lock.
  // FAILED_PRECONDITION naming the holder's pid if another process has it.
  static absl::StatusOr<DataDirLock> Acquire(const std::string& dir);

  DataDirLock(DataDirLock&& other) noexcept;
  DataDirLock& operator=(DataDirLock&& other) noexcept;
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;
  ~DataDirLock();  // truncates the pid and releases the lock

  const std::string& dir() const { return dir_; }
  std::string lock_path() const;

 private:
  DataDirLock(std::string dir, int fd) : dir_(std::move(dir)), fd_(fd) {}
  std::string dir_;
  int fd_ = -1;
  bool locked_ = false;  // only the holder truncates the pid on release
};

// Writes `contents` to `path` atomically (temp file + rename), so a reader
// polling for the file never sees it half written.
absl::Status WriteFileAtomically(const std::string& path,
                                 const std::string& contents);

}  // namespace ferry::service

#endif  // FERRY_AGENT_SERVICE_DATA_DIR_H_
