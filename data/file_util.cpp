// Crash-safe file publishing: write to a temporary name, fsync, rename, fsync the directory.
#include "data/file_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "data/data_error.h"

namespace difftrain::data {

std::string errno_text() { return std::strerror(errno); }

std::string temp_path_for(const std::string& path) {
  return path + ".tmp-" + std::to_string(static_cast<long>(::getpid()));
}

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw DataError(path + ": cannot open for fsync: " + errno_text());
  const int result = ::fsync(fd);
  const std::string error = result != 0 ? errno_text() : "";
  ::close(fd);
  if (result != 0) throw DataError(path + ": fsync failed: " + error);
}

void publish_file(const std::string& temp_path, const std::string& path) {
  try {
    fsync_path(temp_path);
    if (std::rename(temp_path.c_str(), path.c_str()) != 0) {
      throw DataError(path + ": cannot rename " + temp_path + " onto it: " + errno_text());
    }
  } catch (...) {
    std::remove(temp_path.c_str());
    throw;
  }
  // The rename is durable only once the directory entry is on disk.
  std::string parent = std::filesystem::path(path).parent_path().string();
  fsync_path(parent.empty() ? "." : parent);
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  const std::string temp = temp_path_for(path);
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw DataError(path + ": cannot create " + temp + ": " + errno_text());
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string error = errno_text();
      ::close(fd);
      std::remove(temp.c_str());
      throw DataError(path + ": write to " + temp + " failed: " + error);
    }
    written += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) {
    const std::string error = errno_text();
    std::remove(temp.c_str());
    throw DataError(path + ": close of " + temp + " failed: " + error);
  }
  publish_file(temp, path);
}

}  // namespace difftrain::data
