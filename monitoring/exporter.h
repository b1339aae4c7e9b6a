// Exporter: one HTTP endpoint (GET /metrics) serving a prometheus-cpp registry, so that a
// Prometheus server can scrape one training rank.
#pragma once

#include <memory>
#include <string>
#include <thread>

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace difftrain::monitoring {

// Serves `registry` at http://<bind_host>:<port>/metrics from one background thread until
// destroyed; destruction stops it at once. Keeps the registry alive for its own lifetime.
// Our own small HTTP/1.1 server rather than prometheus-cpp's civetweb Exposer: civetweb starts
// its threads with a fixed 100 KiB stack, which cannot hold the static TLS of a process that
// loads LibTorch, OpenBLAS and NCCL (pthread_create fails with EINVAL); our thread gets the
// default stack. One connection at a time (Prometheus scrapes a target sequentially), each
// answered and closed; GET or HEAD /metrics gives the text exposition format, any other path 404.
// Thread safety: port() may be called from any thread; construction and destruction from one.
class Exporter {
 public:
  // bind_host: an IPv4 address ("127.0.0.1", "0.0.0.0" for every interface) or a bracketed IPv6
  // one ("[::1]"). port 0 binds any free port (see port()); use it when several ranks share a
  // node and publish their targets through write_file_sd. No fallback to another port: a port
  // that cannot be bound (busy, privileged, bad host) throws std::runtime_error naming the port
  // and the reason, e.g. "monitoring.port 9100: cannot listen on 127.0.0.1:9100 (cannot
  // bind to 127.0.0.1:9100: 98 (Address already in use)); pick a free port or 0 for any".
  Exporter(std::shared_ptr<prometheus::Registry> registry, const std::string& bind_host, int port);
  ~Exporter();
  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

  // The bound port: the real one when 0 was asked for.
  int port() const;

 private:
  void serve();
  void answer(int connection) const;

  std::shared_ptr<prometheus::Registry> registry_;
  int listen_fd_ = -1;
  int wake_fds_[2] = {-1, -1};  // a byte written to [1] ends serve()
  int port_ = 0;
  std::thread thread_;
};

}  // namespace difftrain::monitoring
