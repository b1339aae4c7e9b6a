// Exporter: a minimal HTTP/1.1 server on one thread that answers GET /metrics with the
// registry's text exposition; bind failures become one line naming the port and the reason.
#include "monitoring/exporter.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace difftrain::monitoring {
namespace {

constexpr size_t kMaxRequestBytes = 16 * 1024;
constexpr int kClientTimeoutS = 10;  // a client that stalls longer is dropped

std::string errno_reason(int error) {
  return std::to_string(error) + " (" + std::strerror(error) + ")";
}

// "127.0.0.1" -> "127.0.0.1"; "[::1]" -> "::1".
std::string strip_brackets(const std::string& host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    return host.substr(1, host.size() - 2);
  }
  return host;
}

bool send_all(int fd, const std::string& bytes) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

std::string response(const std::string& status, const std::string& content_type,
                     const std::string& body, bool with_body) {
  return "HTTP/1.1 " + status + "\r\nContent-Type: " + content_type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
         (with_body ? body : std::string());
}

}  // namespace

Exporter::Exporter(std::shared_ptr<prometheus::Registry> registry, const std::string& bind_host,
                   int port)
    : registry_(std::move(registry)) {
  const std::string what = "monitoring.port " + std::to_string(port);
  if (!registry_) {
    throw std::runtime_error(what + ": no registry to serve");
  }
  if (port < 0 || port > 65535) {
    throw std::runtime_error(what + ": want 0..65535 (0 = any free port)");
  }
  const std::string address = bind_host + ":" + std::to_string(port);
  auto fail = [&](const std::string& reason) {
    if (listen_fd_ >= 0) ::close(listen_fd_);
    return std::runtime_error(what + ": cannot listen on " + address + " (" + reason +
                              "); pick a free port or 0 for any");
  };

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const int lookup = ::getaddrinfo(strip_brackets(bind_host).c_str(), std::to_string(port).c_str(),
                                   &hints, &found);
  if (lookup != 0) {
    throw fail("bad address '" + bind_host + "': " + ::gai_strerror(lookup));
  }
  const std::unique_ptr<addrinfo, void (*)(addrinfo*)> addresses(found, ::freeaddrinfo);
  listen_fd_ = ::socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) throw fail("socket: " + errno_reason(errno));
  // A restarted rank can take its port back while old connections sit in TIME_WAIT; two live
  // listeners on one port still fail (Linux).
  const int on = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (::bind(listen_fd_, found->ai_addr, found->ai_addrlen) != 0) {
    throw fail("cannot bind to " + address + ": " + errno_reason(errno));
  }
  if (::listen(listen_fd_, 16) != 0) throw fail("listen: " + errno_reason(errno));
  sockaddr_storage bound{};
  socklen_t length = sizeof bound;
  if (::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &length) != 0) {
    throw fail("getsockname: " + errno_reason(errno));
  }
  port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  if (::pipe2(wake_fds_, O_CLOEXEC) != 0) throw fail("pipe: " + errno_reason(errno));
  try {
    thread_ = std::thread([this] { serve(); });
  } catch (const std::system_error& e) {
    ::close(wake_fds_[0]);
    ::close(wake_fds_[1]);
    throw fail(std::string("cannot start its thread: ") + e.what());
  }
}

Exporter::~Exporter() {
  if (thread_.joinable()) {
    const char stop = 0;
    while (::write(wake_fds_[1], &stop, 1) < 0 && errno == EINTR) {
    }
    thread_.join();
  }
  for (int fd : {listen_fd_, wake_fds_[0], wake_fds_[1]}) {
    if (fd >= 0) ::close(fd);
  }
}

int Exporter::port() const { return port_; }

void Exporter::serve() {
  pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fds_[0], POLLIN, 0}};
  while (true) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    if ((fds[0].revents & POLLIN) == 0) continue;
    const int connection = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (connection < 0) continue;  // the client gave up, or a transient error: keep serving
    const timeval timeout{kClientTimeoutS, 0};
    ::setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    ::setsockopt(connection, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    answer(connection);
    ::close(connection);
  }
}

void Exporter::answer(int connection) const {
  // Read the request head; the body (there is none for GET) is ignored.
  std::string request;
  char buffer[4096];
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < kMaxRequestBytes) {
    const ssize_t n = ::recv(connection, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    request.append(buffer, static_cast<size_t>(n));
  }
  const std::string line = request.substr(0, request.find("\r\n"));
  const size_t method_end = line.find(' ');
  const size_t target_end = line.find(' ', method_end + 1);
  const std::string method = line.substr(0, method_end);
  const std::string target = method_end == std::string::npos
                                 ? ""
                                 : line.substr(method_end + 1, target_end - method_end - 1);
  const std::string path = target.substr(0, target.find('?'));
  const bool head = method == "HEAD";
  if (method != "GET" && !head) {
    send_all(connection, response("405 Method Not Allowed", "text/plain", "use GET\n", true));
  } else if (path != "/metrics") {
    send_all(connection, response("404 Not Found", "text/plain", "see /metrics\n", !head));
  } else {
    std::string body;
    try {
      body = prometheus::TextSerializer().Serialize(registry_->Collect());
    } catch (const std::exception& e) {
      send_all(connection, response("500 Internal Server Error", "text/plain",
                                    std::string(e.what()) + "\n", !head));
      return;
    }
    send_all(connection,
             response("200 OK", "text/plain; version=0.0.4; charset=utf-8", body, !head));
  }
}

}  // namespace difftrain::monitoring
