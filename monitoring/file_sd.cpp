// write_file_sd: validates targets and labels, then writes the JSON via temp file + rename.
#include "monitoring/file_sd.h"

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace difftrain::monitoring {
namespace {

void check_target(const std::string& target) {
  const auto colon = target.rfind(':');
  const bool has_host = colon != std::string::npos && colon > 0;
  const std::string port = has_host ? target.substr(colon + 1) : "";
  const bool port_ok = !port.empty() && port.size() <= 5 &&
                       port.find_first_not_of("0123456789") == std::string::npos &&
                       std::stoi(port) > 0 && std::stoi(port) <= 65535;
  if (!has_host || !port_ok) {
    throw std::runtime_error("file_sd target '" + target + "': want host:port with port 1..65535");
  }
}

void check_label_name(const std::string& name) {
  auto is_first = [](char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; };
  auto is_rest = [&](char c) { return is_first(c) || std::isdigit(static_cast<unsigned char>(c)); };
  bool ok = !name.empty() && is_first(name[0]);
  for (size_t i = 1; ok && i < name.size(); ++i) ok = is_rest(name[i]);
  if (!ok) {
    throw std::runtime_error("file_sd label '" + name +
                             "': want a Prometheus label name [a-zA-Z_][a-zA-Z0-9_]*");
  }
}

std::string os_error(const std::string& path, const char* doing) {
  return "file_sd " + path + ": cannot " + doing + ": " + std::strerror(errno);
}

}  // namespace

void write_file_sd(const std::string& path, const std::vector<std::string>& targets,
                   const std::map<std::string, std::string>& labels) {
  if (targets.empty()) {
    throw std::runtime_error("file_sd " + path + ": no targets to write");
  }
  for (const auto& target : targets) check_target(target);
  for (const auto& [name, value] : labels) check_label_name(name);

  nlohmann::json group = {{"targets", targets}, {"labels", labels}};
  const std::string text = nlohmann::json::array({group}).dump(2) + "\n";

  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw std::runtime_error(os_error(tmp, "create"));
  }
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string message = os_error(tmp, "write");
      ::close(fd);
      ::unlink(tmp.c_str());
      throw std::runtime_error(message);
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const std::string message = os_error(tmp, "flush");
    ::unlink(tmp.c_str());
    throw std::runtime_error(message);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string message = os_error(path, "rename the temporary file onto");
    ::unlink(tmp.c_str());
    throw std::runtime_error(message);
  }
}

}  // namespace difftrain::monitoring
