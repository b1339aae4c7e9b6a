// MetricsLog: line-at-a-time appends to metrics.jsonl.
#include "monitoring/metrics_log.h"

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace difftrain::monitoring {

MetricsLog::MetricsLog(const std::string& path)
    : path_(path), file_(std::fopen(path.c_str(), "a")) {
  if (!file_) {
    throw std::runtime_error("metrics log " + path +
                             ": cannot open for appending: " + std::strerror(errno));
  }
}

void MetricsLog::append(const nlohmann::json& record) {
  if (!record.is_object()) {
    throw std::runtime_error("metrics log " + path_ + ": record of type " + record.type_name() +
                             ": want a JSON object");
  }
  const std::string line =
      record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  std::lock_guard<std::mutex> lock(mutex_);
  if (std::fwrite(line.data(), 1, line.size(), file_.get()) != line.size() ||
      std::fflush(file_.get()) != 0) {
    throw std::runtime_error("metrics log " + path_ + ": cannot append: " + std::strerror(errno));
  }
}

}  // namespace difftrain::monitoring
