// The watchdog thread: polls each watched collective's probe, aborts once at the first failure
// or missed deadline, and keeps the reason for check().
#include "launch/collective_watchdog.h"

#include <cstdio>
#include <exception>
#include <iterator>
#include <utility>

#include "launch/communicator.h"

namespace difftrain::launch {
namespace {

// Between polls. Completion needs no quick notice (nobody waits for it); a deadline is seconds.
constexpr auto kPollInterval = std::chrono::milliseconds(2);

}  // namespace

CollectiveWatchdog::CollectiveWatchdog(double timeout_s, std::function<void()> abort,
                                       std::string describe_rank,
                                       std::function<void()> thread_setup)
    : timeout_s_(timeout_s),
      abort_(std::move(abort)),
      describe_rank_(std::move(describe_rank)),
      thread_setup_(std::move(thread_setup)),
      thread_([this] { run(); }) {}

CollectiveWatchdog::~CollectiveWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void CollectiveWatchdog::watch(std::string what, Probe probe) {
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(timeout_s_));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    entries_.push_back({std::move(what), std::move(probe), deadline});
  }
  wake_.notify_all();
}

void CollectiveWatchdog::check() const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!aborted_) return;
  if (timed_out_) throw CollectiveTimeout(failure_);
  throw std::runtime_error(failure_);
}

bool CollectiveWatchdog::aborted() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return aborted_;
}

size_t CollectiveWatchdog::pending() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return entries_.size();
}

void CollectiveWatchdog::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (thread_setup_) {
    lock.unlock();
    std::string problem;
    try {
      thread_setup_();
    } catch (const std::exception& e) {
      problem = e.what();
    }
    lock.lock();
    if (!problem.empty())
      fail("collective watchdog" + describe_rank_ + ": " + problem, false, lock);
  }
  while (!stopping_) {
    if (entries_.empty() || aborted_) {
      wake_.wait(lock, [this] { return stopping_ || (!entries_.empty() && !aborted_); });
      continue;
    }
    // Poll outside the lock, so that watch() and check() never wait for a probe.
    std::vector<Entry> batch;
    batch.swap(entries_);
    lock.unlock();
    std::vector<Entry> still;
    std::string failure;
    bool timeout = false;
    const auto now = Clock::now();
    for (auto& entry : batch) {
      if (!failure.empty()) {
        still.push_back(std::move(entry));
        continue;
      }
      Poll poll;
      try {
        poll = entry.probe();
      } catch (const std::exception& e) {
        poll = {State::kFailed, e.what()};
      }
      if (poll.state == State::kDone) continue;  // released with `batch`, below
      if (poll.state == State::kFailed) {
        failure = entry.what + describe_rank_ + " failed: " + poll.detail;
      } else if (now > entry.deadline) {
        char seconds[32];
        std::snprintf(seconds, sizeof(seconds), "%g", timeout_s_);
        failure = entry.what + describe_rank_ + " did not finish within " + seconds +
                  " s (dist.timeout_s): another rank died, hangs, or skipped it; communicator "
                  "aborted";
        timeout = true;
      }
      still.push_back(std::move(entry));
    }
    batch.clear();  // the probes of finished collectives, and what they hold
    lock.lock();
    still.insert(still.end(), std::make_move_iterator(entries_.begin()),
                 std::make_move_iterator(entries_.end()));
    entries_.swap(still);
    if (!failure.empty()) {
      fail(std::move(failure), timeout, lock);
      continue;
    }
    wake_.wait_for(lock, kPollInterval, [this] { return stopping_; });
  }
}

void CollectiveWatchdog::fail(std::string message, bool timeout,
                              std::unique_lock<std::mutex>& lock) {
  aborted_ = true;
  timed_out_ = timeout;
  failure_ = std::move(message);
  std::vector<Entry> abandoned;
  abandoned.swap(entries_);
  lock.unlock();
  try {
    abort_();
  } catch (...) {
    // The reason is recorded; an abort that fails leaves nothing better to do.
  }
  abandoned.clear();
  lock.lock();
}

}  // namespace difftrain::launch
