// Run-directory lock: link(2) of a private file onto train.lock, a heartbeat in its mtime,
// stale locks renamed aside by exactly one taker.
#include "trainer/checkpoint/run_lock.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "data/file_util.h"

namespace difftrain::trainer {
namespace {

constexpr int kAttempts = 5;

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown-host";
  return name;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

// Field 22 of /proc/<pid>/stat (after the parenthesised command, which may hold spaces); 0
// when the process does not exist or the file cannot be read.
int64_t process_start_ticks(int64_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return 0;
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  // Fields 3..21 precede the start time.
  for (int i = 3; i <= 22 && fields >> field; ++i) {
    if (i == 22) return std::strtoll(field.c_str(), nullptr, 10);
  }
  return 0;
}

std::optional<std::string> read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Seconds since the file's mtime, by this host's clock; nullopt when it is gone.
std::optional<double> age_s(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  const double mtime =
      static_cast<double>(st.st_mtim.tv_sec) + 1e-9 * static_cast<double>(st.st_mtim.tv_nsec);
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec) - mtime;
}

bool same_holder(const LockHolder& a, const LockHolder& b) {
  return a.host == b.host && a.pid == b.pid && a.pid_start == b.pid_start;
}

// Writes `text` to `path` and flushes it to the file system (so that a taker on another node
// reads the whole holder).
void write_synced(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + path + ": " + data::errno_text());
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n <= 0) {
      const std::string why = data::errno_text();
      ::close(fd);
      throw std::runtime_error("cannot write " + path + ": " + why);
    }
    written += static_cast<size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

LockHolder LockHolder::self() {
  LockHolder holder;
  holder.host = host_name();
  holder.pid = static_cast<int64_t>(::getpid());
  holder.pid_start = process_start_ticks(holder.pid);
  const char* job = std::getenv("SLURM_JOB_ID");
  holder.slurm_job = job != nullptr ? job : "";
  holder.started_utc = utc_now();
  return holder;
}

std::string LockHolder::to_text() const {
  std::ostringstream out;
  out << "host: " << host << "\npid: " << pid << "\npid_start: " << pid_start
      << "\nslurm_job: " << slurm_job << "\nstarted: " << started_utc << "\n";
  return out.str();
}

LockHolder LockHolder::parse(const std::string& text) {
  LockHolder holder;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const size_t colon = line.find(": ");
    const std::string key = line.substr(0, colon);
    const std::string value = colon == std::string::npos ? "" : line.substr(colon + 2);
    if (key == "host") holder.host = value;
    if (key == "pid") holder.pid = std::strtoll(value.c_str(), nullptr, 10);
    if (key == "pid_start") holder.pid_start = std::strtoll(value.c_str(), nullptr, 10);
    if (key == "slurm_job") holder.slurm_job = value;
    if (key == "started") holder.started_utc = value;
  }
  return holder;
}

std::string LockHolder::describe() const {
  std::string text =
      "host " + (host.empty() ? std::string("?") : host) + ", pid " + std::to_string(pid);
  if (!slurm_job.empty()) text += ", Slurm job " + slurm_job;
  if (!started_utc.empty()) text += ", since " + started_utc;
  return text;
}

bool process_alive(int64_t pid, int64_t pid_start) {
  if (pid <= 0) return false;
  if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno != EPERM) return false;
  if (pid_start == 0) return true;
  const int64_t start = process_start_ticks(pid);
  return start == 0 || start == pid_start;  // unreadable /proc: assume it is the same process
}

std::string stale_reason(const LockHolder& holder, double heartbeat_age_s, const LockHolder& self,
                         double stale_after_s) {
  const bool same_host = holder.host == self.host;
  if (same_host && !process_alive(holder.pid, holder.pid_start)) {
    return "its process is gone from this host";
  }
  if (!holder.slurm_job.empty() && holder.slurm_job == self.slurm_job && !same_host) {
    return "it belongs to this Slurm job, restarted on another host";
  }
  if (heartbeat_age_s > stale_after_s) {
    return "no heartbeat for " + std::to_string(static_cast<int64_t>(heartbeat_age_s)) + " s";
  }
  return "";
}

RunLock::RunLock(const std::string& run_dir, LockHolder self, double heartbeat_s,
                 double stale_after_s)
    : path_(run_dir + "/train.lock"), self_(std::move(self)) {
  std::error_code ec;
  std::filesystem::create_directories(run_dir, ec);
  if (ec) throw std::runtime_error("cannot create run dir " + run_dir + ": " + ec.message());
  const std::string mine = path_ + "." + self_.host + "." + std::to_string(self_.pid);
  const std::string text = self_.to_text();
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    write_synced(mine, text);
    struct stat st {};
    // On NFS a retransmitted link() can report EEXIST after it succeeded: the link count of
    // our own file tells.
    const bool linked = ::link(mine.c_str(), path_.c_str()) == 0 ||
                        (::stat(mine.c_str(), &st) == 0 && st.st_nlink == 2);
    const int link_errno = errno;
    ::unlink(mine.c_str());
    if (linked) {
      heartbeat_ = std::thread([this, heartbeat_s] { heartbeat_loop(heartbeat_s); });
      return;
    }
    if (link_errno != EEXIST) {
      throw std::runtime_error("cannot lock run dir " + run_dir + ": link " + path_ + ": " +
                               std::strerror(link_errno));
    }
    const std::optional<std::string> held = read_text(path_);
    const std::optional<double> age = age_s(path_);
    if (!held || !age) continue;  // released meanwhile: try again
    const LockHolder holder = LockHolder::parse(*held);
    const std::string reason = stale_reason(holder, *age, self_, stale_after_s);
    if (reason.empty()) {
      throw RunLockError("run dir " + run_dir + " is in use by another difftrain train (" +
                         holder.describe() + "; heartbeat " +
                         std::to_string(static_cast<int64_t>(*age)) +
                         " s ago): wait for it to end, or use another --run-dir");
    }
    // Take the stale lock aside: rename() lets exactly one taker have it. If what came aside is
    // not what was judged stale (another job locked in between), put it back.
    const std::string aside = path_ + ".stale." + self_.host + "." + std::to_string(self_.pid);
    if (::rename(path_.c_str(), aside.c_str()) != 0) continue;
    if (read_text(aside) != held) {
      ::link(aside.c_str(), path_.c_str());
      ::unlink(aside.c_str());
      continue;
    }
    ::unlink(aside.c_str());
    spdlog::warn("took over the lock of run dir {} from {} ({})", run_dir, holder.describe(),
                 reason);
  }
  throw RunLockError("run dir " + run_dir + ": could not take " + path_ + " in " +
                     std::to_string(kAttempts) + " attempts (other jobs are starting in it)");
}

RunLock::~RunLock() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (heartbeat_.joinable()) heartbeat_.join();
  const std::optional<std::string> held = read_text(path_);
  if (held && same_holder(LockHolder::parse(*held), self_)) ::unlink(path_.c_str());
}

void RunLock::heartbeat_loop(double heartbeat_s) {
  std::unique_lock<std::mutex> lock(mutex_);
  bool warned = false;
  while (!stop_cv_.wait_for(lock, std::chrono::duration<double>(heartbeat_s),
                            [this] { return stopping_; })) {
    const std::optional<std::string> held = read_text(path_);
    if (held && same_holder(LockHolder::parse(*held), self_)) {
      ::utimensat(AT_FDCWD, path_.c_str(), nullptr, 0);  // the file system's "now"
    } else if (!warned) {
      spdlog::warn("{} was removed or replaced while this run holds it", path_);
      warned = true;
    }
  }
}

}  // namespace difftrain::trainer
