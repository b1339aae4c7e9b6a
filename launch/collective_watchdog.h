// Watches collectives in flight from a thread of its own, so that the thread that launched them
// does not have to wait for them to enforce the deadline (NCCL's all-reduce: the host goes on
// queueing the optimizer step behind it instead of waiting for the GPU).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace difftrain::launch {

// Each watched collective has a probe, polled on the watchdog thread until it says the
// collective is done. The first one that fails, or is still pending at its deadline, makes the
// watchdog call `abort` once (for NCCL, ncclCommAbort: every collective in flight then ends,
// so that a thread blocked on the device returns) and remember why; check() then throws that
// on the calling thread, and every later check() too. Thread-safe.
class CollectiveWatchdog {
 public:
  enum class State { kPending, kDone, kFailed };
  struct Poll {
    State state = State::kPending;
    std::string detail;  // for kFailed: what the backend reported
  };
  using Probe = std::function<Poll()>;

  // `describe_rank`: " on rank R/N", appended to the collective's name in errors.
  // `thread_setup` runs first on the watchdog thread (e.g. to select the CUDA device).
  CollectiveWatchdog(double timeout_s, std::function<void()> abort, std::string describe_rank,
                     std::function<void()> thread_setup = {});
  // Stops the thread; collectives still pending are no longer watched.
  ~CollectiveWatchdog();
  CollectiveWatchdog(const CollectiveWatchdog&) = delete;
  CollectiveWatchdog& operator=(const CollectiveWatchdog&) = delete;

  // Watches a collective launched now, named `what` ("all_reduce_sum #3 of 4.19 MB"); its
  // deadline is timeout_s from now. The probe (and what it holds) is released on the watchdog
  // thread once the collective is done, failed, or abandoned by the destructor.
  void watch(std::string what, Probe probe);

  // Throws CollectiveTimeout (a deadline passed) or std::runtime_error (a probe reported a
  // failure) once the watchdog has aborted; returns at once otherwise.
  void check() const;
  bool aborted() const;
  // Collectives still watched.
  size_t pending() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Entry {
    std::string what;
    Probe probe;
    Clock::time_point deadline;
  };
  void run();
  // Decides the failure (under mutex_), then calls abort_ outside it.
  void fail(std::string message, bool timeout, std::unique_lock<std::mutex>& lock);

  const double timeout_s_;
  const std::function<void()> abort_;
  const std::string describe_rank_;
  const std::function<void()> thread_setup_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<Entry> entries_;
  bool stopping_ = false;
  bool aborted_ = false;
  bool timed_out_ = false;
  std::string failure_;
  std::thread thread_;  // last: starts after every member above exists
};

}  // namespace difftrain::launch
