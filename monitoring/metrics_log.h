// MetricsLog: the run folder's metrics.jsonl, one JSON object per line, for plotting and
// post-mortems without a Prometheus.
#pragma once

#include <cstdio>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

namespace difftrain::monitoring {

// Appends to `path` (created if missing, never truncated, so a resumed run continues the
// file). Each append writes one line and flushes it to the OS, so a crash loses at most the
// line being written. Thread safety: append may be called from several threads; lines never
// interleave.
class MetricsLog {
 public:
  // Throws std::runtime_error naming the path and the OS reason if it cannot be opened.
  explicit MetricsLog(const std::string& path);

  // record: a JSON object. Non-finite numbers are written as null (JSON has no NaN) and
  // invalid UTF-8 is replaced rather than thrown on. Throws std::runtime_error if the record is
  // not an object or the write fails.
  void append(const nlohmann::json& record);

 private:
  struct FileCloser {
    void operator()(std::FILE* file) const { std::fclose(file); }
  };

  std::string path_;
  std::mutex mutex_;
  std::unique_ptr<std::FILE, FileCloser> file_;
};

}  // namespace difftrain::monitoring
