// CollectiveWatchdog on real threads: finished collectives are released without an abort; a
// missed deadline or a reported failure aborts exactly once and is rethrown by check() with the
// collective's name and rank; stopping with collectives pending returns at once.
#include "launch/collective_watchdog.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "launch/communicator.h"

namespace difftrain::launch {
namespace {

using Clock = std::chrono::steady_clock;
using State = CollectiveWatchdog::State;

// Polls `condition` for up to 5 s.
bool eventually(const std::function<bool()>& condition) {
  const auto until = Clock::now() + std::chrono::seconds(5);
  while (Clock::now() < until) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return condition();
}

// A collective that completes when the test says so; counts the probe's copies alive.
struct Collective {
  std::atomic<bool> done{false};
  std::atomic<bool> broken{false};
  std::shared_ptr<int> held = std::make_shared<int>(0);  // what a probe keeps alive
  CollectiveWatchdog::Probe probe() {
    return [this, held = held]() -> CollectiveWatchdog::Poll {
      if (broken) return {State::kFailed, "peer reported an error"};
      return {done ? State::kDone : State::kPending, ""};
    };
  }
};

TEST(CollectiveWatchdog, FinishedCollectivesAreReleasedWithoutAbort) {
  std::atomic<int> aborts{0};
  CollectiveWatchdog watchdog(
      30.0, [&] { ++aborts; }, " on rank 0/2");
  Collective first, second;
  watchdog.watch("all_reduce_sum #0 of 1.00 MB", first.probe());
  watchdog.watch("all_reduce_sum #1 of 1.00 MB", second.probe());
  EXPECT_EQ(first.held.use_count(), 2);
  first.done = true;
  EXPECT_TRUE(eventually([&] { return first.held.use_count() == 1; }))
      << "the finished collective's probe is still held";
  EXPECT_EQ(watchdog.pending(), 1u);
  second.done = true;
  EXPECT_TRUE(eventually([&] { return watchdog.pending() == 0; }));
  EXPECT_EQ(second.held.use_count(), 1);
  EXPECT_EQ(aborts, 0);
  EXPECT_FALSE(watchdog.aborted());
  EXPECT_NO_THROW(watchdog.check());
}

TEST(CollectiveWatchdog, MissedDeadlineAbortsOnceAndCheckThrowsTimeout) {
  std::atomic<int> aborts{0};
  CollectiveWatchdog watchdog(
      0.2, [&] { ++aborts; }, " on rank 1/4");
  Collective stuck, later;
  const auto start = Clock::now();
  watchdog.watch("all_reduce_sum #7 of 4.19 MB", stuck.probe());
  watchdog.watch("all_reduce_sum #8 of 4.19 MB", later.probe());
  EXPECT_NO_THROW(watchdog.check()) << "no failure before the deadline";
  ASSERT_TRUE(eventually([&] { return watchdog.aborted(); }));
  const double waited = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_GE(waited, 0.2);
  EXPECT_LT(waited, 2.0);
  EXPECT_TRUE(eventually([&] { return aborts == 1; }));
  try {
    watchdog.check();
    ADD_FAILURE() << "check() returned after a missed deadline";
  } catch (const CollectiveTimeout& e) {
    EXPECT_EQ(std::string(e.what()),
              "all_reduce_sum #7 of 4.19 MB on rank 1/4 did not finish within 0.2 s "
              "(dist.timeout_s): another rank died, hangs, or skipped it; communicator aborted");
  }
  EXPECT_THROW(watchdog.check(), CollectiveTimeout) << "every later check() throws too";
  // Abandoned at the abort: their probes are released, and nothing aborts twice.
  EXPECT_TRUE(eventually([&] { return stuck.held.use_count() == 1; }));
  EXPECT_EQ(later.held.use_count(), 1);
  Collective after;
  watchdog.watch("all_reduce_sum #9 of 4.19 MB", after.probe());
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_EQ(aborts, 1);
}

TEST(CollectiveWatchdog, ReportedFailureAbortsWithTheBackendsWords) {
  std::atomic<int> aborts{0};
  CollectiveWatchdog watchdog(
      30.0, [&] { ++aborts; }, " on rank 0/2");
  Collective broken;
  watchdog.watch("all_reduce_sum #2 of 0.50 MB", broken.probe());
  broken.broken = true;
  ASSERT_TRUE(eventually([&] { return aborts == 1; }));
  try {
    watchdog.check();
    ADD_FAILURE() << "check() returned after a failure";
  } catch (const CollectiveTimeout& e) {
    ADD_FAILURE() << "a reported failure is not a timeout: " << e.what();
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()),
              "all_reduce_sum #2 of 0.50 MB on rank 0/2 failed: peer reported an error");
  }
}

TEST(CollectiveWatchdog, ProbeThatThrowsCountsAsAFailure) {
  std::atomic<int> aborts{0};
  CollectiveWatchdog watchdog(
      30.0, [&] { ++aborts; }, " on rank 0/1");
  watchdog.watch("broadcast #0 of 0.01 MB", []() -> CollectiveWatchdog::Poll {
    throw std::runtime_error("cudaEventQuery: an illegal memory access was encountered");
  });
  ASSERT_TRUE(eventually([&] { return aborts == 1; }));
  EXPECT_THROW(watchdog.check(), std::runtime_error);
}

TEST(CollectiveWatchdog, StopsAtOnceWithCollectivesPending) {
  Collective never;
  const auto start = Clock::now();
  {
    CollectiveWatchdog watchdog(
        60.0, [] {}, " on rank 0/2");
    watchdog.watch("all_reduce_sum #0 of 1.00 MB", never.probe());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 1.0);
  EXPECT_EQ(never.held.use_count(), 1);
}

TEST(CollectiveWatchdog, ThreadSetupRunsOnTheWatchdogThread) {
  std::atomic<bool> ran{false};
  std::thread::id setup_thread;
  const std::thread::id here = std::this_thread::get_id();
  CollectiveWatchdog watchdog(
      30.0, [] {}, " on rank 0/1",
      [&] {
        setup_thread = std::this_thread::get_id();
        ran = true;
      });
  ASSERT_TRUE(eventually([&] { return ran.load(); }));
  EXPECT_NE(setup_thread, here);
}

}  // namespace
}  // namespace difftrain::launch
