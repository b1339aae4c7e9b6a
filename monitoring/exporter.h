// Exporter: one HTTP endpoint (GET /metrics) serving a prometheus-cpp registry, so that a
// Prometheus server can scrape one training rank.
#pragma once

#include <memory>
#include <string>

namespace prometheus {
class Exposer;
class Registry;
}  // namespace prometheus

namespace difftrain::monitoring {

// Serves `registry` at http://<bind_host>:<port>/metrics from civetweb worker threads until
// destroyed. Keeps the registry alive for its own lifetime. Destruction can take up to 2 s:
// civetweb's accept loop notices the stop request only between 2 s polls.
// Thread safety: port() may be called from any thread; construction and destruction from one.
class Exporter {
 public:
  // bind_host: an IPv4 address ("127.0.0.1", "0.0.0.0" for every interface) or a bracketed IPv6
  // one ("[::1]"). port 0 binds any free port (see port()); use it when several ranks share a
  // node and publish their targets through write_file_sd. No fallback to another port: a port
  // that cannot be bound (busy, privileged, bad host) throws std::runtime_error naming the port
  // and civetweb's reason, e.g. "monitoring.port 9100: cannot listen on 127.0.0.1:9100 (cannot
  // bind to 127.0.0.1:9100: 98 (Address already in use)); pick a free port or 0 for any".
  Exporter(std::shared_ptr<prometheus::Registry> registry, const std::string& bind_host, int port);
  ~Exporter();
  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

  // The bound port: the real one when 0 was asked for.
  int port() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

}  // namespace difftrain::monitoring
