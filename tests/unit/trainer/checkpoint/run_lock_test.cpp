#include "trainer/checkpoint/run_lock.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace difftrain::trainer {
namespace {

namespace fs = std::filesystem;

class RunLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("difftrain-run-lock-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string lock_file() const { return (dir_ / "train.lock").string(); }
  std::string read_lock() const {
    std::ifstream in(lock_file());
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
  }
  // A lock file as another job left it, its heartbeat `age_s` old.
  void plant(const LockHolder& holder, int age_s = 0) const {
    fs::create_directories(dir_);
    std::ofstream(lock_file()) << holder.to_text();
    const auto when = fs::file_time_type::clock::now() - std::chrono::seconds(age_s);
    fs::last_write_time(lock_file(), when);
  }
  std::string error_of(const LockHolder& self) const {
    try {
      RunLock lock(dir_.string(), self);
    } catch (const RunLockError& e) {
      return e.what();
    }
    return "";
  }

  fs::path dir_;
};

LockHolder other_host(const std::string& job = "") {
  LockHolder holder;
  holder.host = "node-b";
  holder.pid = 4242;
  holder.pid_start = 77;
  holder.slurm_job = job;
  holder.started_utc = "2026-12-03T10:00:00Z";
  return holder;
}

// The pid of a process that has exited (and been reaped).
int64_t dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  return child;
}

TEST_F(RunLockTest, HeldForItsLifeAndReleasedAfter) {
  {
    RunLock lock(dir_.string());
    EXPECT_TRUE(fs::exists(lock_file()));
    const LockHolder holder = LockHolder::parse(read_lock());
    EXPECT_EQ(holder.pid, ::getpid());
    EXPECT_EQ(holder.host, LockHolder::self().host);
    EXPECT_GT(holder.pid_start, 0);
    // Only the lock file is left in the directory: no private link files.
    EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
  }
  EXPECT_FALSE(fs::exists(lock_file()));
}

TEST_F(RunLockTest, ALiveHolderOnAnotherHostIsRefusedByName) {
  plant(other_host("991"));
  const std::string error = error_of(LockHolder::self());
  EXPECT_NE(error.find("is in use by another difftrain train (host node-b, pid 4242, Slurm job "
                       "991, since 2026-12-03T10:00:00Z"),
            std::string::npos)
      << error;
  EXPECT_EQ(error.find('\n'), std::string::npos);
  EXPECT_EQ(LockHolder::parse(read_lock()).host, "node-b") << "the holder's lock is untouched";
}

TEST_F(RunLockTest, ALiveProcessOnThisHostIsRefused) {
  LockHolder self = LockHolder::self();
  LockHolder parent = self;
  parent.pid = ::getppid();
  parent.pid_start = 0;
  plant(parent);
  EXPECT_NE(error_of(self).find("pid " + std::to_string(::getppid())), std::string::npos);
}

TEST_F(RunLockTest, TheLockOfAProcessGoneFromThisHostIsTakenOver) {
  LockHolder gone = LockHolder::self();
  gone.pid = dead_pid();
  plant(gone);
  RunLock lock(dir_.string());
  EXPECT_EQ(LockHolder::parse(read_lock()).pid, ::getpid());
}

TEST_F(RunLockTest, AReusedPidDoesNotKeepTheLock) {
  // The holder's pid is alive (this process) but started at another time.
  LockHolder reused = LockHolder::self();
  reused.pid_start += 1;
  plant(reused);
  EXPECT_NE(stale_reason(reused, 0, LockHolder::self(), 300), "");
}

TEST_F(RunLockTest, TheSameSlurmJobOnAnotherHostTakesOver) {
  plant(other_host("991"));
  LockHolder self = LockHolder::self();
  self.slurm_job = "991";  // requeued onto this host
  RunLock lock(dir_.string(), self);
  EXPECT_EQ(LockHolder::parse(read_lock()).slurm_job, "991");
  EXPECT_EQ(LockHolder::parse(read_lock()).host, self.host);
  self.slurm_job = "992";
  EXPECT_EQ(stale_reason(other_host("991"), 0, self, 300), "") << "another job must wait";
}

TEST_F(RunLockTest, ASilentHeartbeatFreesTheLock) {
  plant(other_host(), 301);
  RunLock lock(dir_.string());
  EXPECT_EQ(LockHolder::parse(read_lock()).host, LockHolder::self().host);
}

TEST_F(RunLockTest, TheHeartbeatKeepsTheFileFresh) {
  RunLock lock(dir_.string(), LockHolder::self(), 0.05);
  fs::last_write_time(lock_file(), fs::file_time_type::clock::now() - std::chrono::hours(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto age = fs::file_time_type::clock::now() - fs::last_write_time(lock_file());
  EXPECT_LT(std::chrono::duration<double>(age).count(), 10.0);
}

TEST_F(RunLockTest, AReplacedLockIsNotRemovedByTheOldHolder) {
  {
    RunLock lock(dir_.string());
    std::ofstream(lock_file()) << other_host().to_text();
  }
  ASSERT_TRUE(fs::exists(lock_file()));
  EXPECT_EQ(LockHolder::parse(read_lock()).host, "node-b");
}

TEST_F(RunLockTest, AReadOnlyDirectoryIsReportedWithThePath) {
  if (::geteuid() == 0) {
    // root writes anywhere: a file in the way of the directory stands in.
    fs::create_directories(dir_.parent_path());
    std::ofstream((dir_.string() + "-file")) << "x";
    try {
      RunLock lock(dir_.string() + "-file/run");
      ADD_FAILURE() << "locked a run dir under a file";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(dir_.string() + "-file/run"), std::string::npos)
          << e.what();
    }
    fs::remove(dir_.string() + "-file");
    return;
  }
  fs::create_directories(dir_);
  fs::permissions(dir_, fs::perms::owner_read | fs::perms::owner_exec);
  EXPECT_THROW(RunLock lock(dir_.string()), std::runtime_error);
  fs::permissions(dir_, fs::perms::owner_all);
}

TEST(LockHolderTest, TextRoundTrips) {
  const LockHolder holder = other_host("17");
  const LockHolder back = LockHolder::parse(holder.to_text());
  EXPECT_EQ(back.host, holder.host);
  EXPECT_EQ(back.pid, holder.pid);
  EXPECT_EQ(back.pid_start, holder.pid_start);
  EXPECT_EQ(back.slurm_job, holder.slurm_job);
  EXPECT_EQ(back.started_utc, holder.started_utc);
  EXPECT_TRUE(process_alive(::getpid(), LockHolder::self().pid_start));
  EXPECT_FALSE(process_alive(dead_pid(), 0));
}

}  // namespace
}  // namespace difftrain::trainer
