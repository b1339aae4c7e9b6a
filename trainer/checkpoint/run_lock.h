// The run directory's lock: one `train` at a time in a run directory, for the life of the run.
// A lock file made with link(2), which is atomic on local disks and on the shared file systems
// clusters use (NFS, Lustre, GPFS), unlike flock(2), which NFS clients may keep local to a
// node. A heartbeat (the file's mtime) lets a later job take over the lock of one that died.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

namespace difftrain::trainer {

// The lock is held by a live job: its one-line message names the holder and what to do.
class RunLockError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Who holds (or wants) a run directory.
struct LockHolder {
  std::string host;
  int64_t pid = 0;
  int64_t pid_start = 0;    // the process's start, clock ticks after boot: tells a reused pid
  std::string slurm_job;    // SLURM_JOB_ID; "" outside Slurm
  std::string started_utc;  // "2026-12-03T11:40:00Z"

  // This process.
  static LockHolder self();
  // The lock file's text ("key: value" lines) and back; parse() leaves unknown fields empty.
  std::string to_text() const;
  static LockHolder parse(const std::string& text);
  // "host n1, pid 42, Slurm job 7, since 2026-12-03T11:40:00Z"
  std::string describe() const;
};

// Why `self` may take over the lock of `holder`, whose heartbeat is `heartbeat_age_s` old, or
// "" when it may not. A lock is stale when its process is gone from this host (a pid that now
// belongs to another process counts as gone), when it belongs to this Slurm job on another
// host or a process of it that is gone (a requeued job restarts while its old lock remains), or
// when its heartbeat is older than `stale_after_s` (a host that died).
std::string stale_reason(const LockHolder& holder, double heartbeat_age_s, const LockHolder& self,
                         double stale_after_s);

// Whether process `pid` runs on this host and started at `pid_start` (0: any start).
bool process_alive(int64_t pid, int64_t pid_start);

// Holds run_dir/train.lock from construction to destruction. Not copyable or movable; the
// heartbeat runs on its own thread.
class RunLock {
 public:
  static constexpr double kHeartbeatS = 30.0;
  static constexpr double kStaleAfterS = 300.0;

  // Creates run_dir if needed and takes its lock for `self`, taking over a stale lock (logged).
  // Throws RunLockError naming the holder when a live job holds it, std::runtime_error naming
  // the file when the directory cannot hold a lock (read-only, missing permissions).
  explicit RunLock(const std::string& run_dir, LockHolder self = LockHolder::self(),
                   double heartbeat_s = kHeartbeatS, double stale_after_s = kStaleAfterS);
  // Stops the heartbeat and removes the lock file if it still names this holder.
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  const std::string& path() const { return path_; }

 private:
  void heartbeat_loop(double heartbeat_s);

  std::string path_;
  LockHolder self_;
  std::mutex mutex_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread heartbeat_;
};

}  // namespace difftrain::trainer
