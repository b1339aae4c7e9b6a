// Exporter: serves /metrics on a loopback port, reports the port, and names a busy port.
#include "monitoring/exporter.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "monitoring/training_metrics.h"

namespace difftrain::monitoring {
namespace {

// A listening loopback socket on a free port, closed on destruction.
class ListeningSocket {
 public:
  ListeningSocket() : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    socklen_t length = sizeof address;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(fd_, 1) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      ADD_FAILURE() << "cannot open a listening socket";
    }
    port_ = ntohs(address.sin_port);
  }
  ~ListeningSocket() { ::close(fd_); }
  int port() const { return port_; }

 private:
  int fd_;
  int port_ = 0;
};

// GET `path` from 127.0.0.1:port over HTTP/1.0; returns the whole response, "" on failure.
std::string http_get(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  std::string response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      ssize_t n;
      while ((n = ::recv(fd, buffer, sizeof buffer, 0)) > 0) response.append(buffer, n);
    }
  }
  ::close(fd);
  return response;
}

TEST(Exporter, ServesMetricsOnAnEphemeralPort) {
  TrainingMetrics metrics("exporter-test", 1, {"0.1.0", "abc", "1.13.1", "mpi", "cpu"});
  StepSample sample;
  sample.step = 7;
  sample.images = 16;
  metrics.record_step(sample);

  Exporter exporter(metrics.registry(), "127.0.0.1", 0);
  ASSERT_GT(exporter.port(), 0);
  ASSERT_LE(exporter.port(), 65535);

  const std::string response = http_get(exporter.port(), "/metrics");
  EXPECT_EQ(response.rfind("HTTP/1.1 200", 0), 0u) << response.substr(0, 200);
  EXPECT_NE(response.find("difftrain_images_total{rank=\"1\",run=\"exporter-test\"} 16"),
            std::string::npos)
      << response;
  EXPECT_NE(response.find("difftrain_step{rank=\"1\",run=\"exporter-test\"} 7"), std::string::npos);

  // A later step shows in the next scrape.
  sample.step = 8;
  metrics.record_step(sample);
  EXPECT_NE(http_get(exporter.port(), "/metrics")
                .find("difftrain_images_total{rank=\"1\",run=\"exporter-test\"} 32"),
            std::string::npos);
}

TEST(Exporter, KeepsTheRegistryAliveAfterTheMetricsAreGone) {
  auto metrics = std::make_unique<TrainingMetrics>("outlive", 0, BuildInfo{});
  Exporter exporter(metrics->registry(), "127.0.0.1", 0);
  metrics.reset();
  EXPECT_NE(http_get(exporter.port(), "/metrics").find("difftrain_steps_total"), std::string::npos);
}

TEST(Exporter, OtherPathsAreNotFoundAndStoppingIsImmediate) {
  TrainingMetrics metrics("paths", 0, BuildInfo{});
  const auto start = std::chrono::steady_clock::now();
  {
    Exporter exporter(metrics.registry(), "127.0.0.1", 0);
    EXPECT_EQ(http_get(exporter.port(), "/").rfind("HTTP/1.1 404", 0), 0u);
    EXPECT_EQ(http_get(exporter.port(), "/metrics?x=1").rfind("HTTP/1.1 200", 0), 0u);
  }
  // Stopping must not hold up the end of a run (civetweb's accept loop took up to 2 s).
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
}

TEST(Exporter, BusyPortGivesOneLineNamingIt) {
  ListeningSocket busy;
  TrainingMetrics metrics("busy", 0, BuildInfo{});
  const std::string port = std::to_string(busy.port());
  try {
    Exporter exporter(metrics.registry(), "127.0.0.1", busy.port());
    FAIL() << "bound busy port " << port;
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    EXPECT_EQ(message.rfind("monitoring.port " + port + ": ", 0), 0u) << message;
    EXPECT_NE(message.find("Address already in use"), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

TEST(Exporter, SecondExporterOnTheSamePortFails) {
  TrainingMetrics metrics("twice", 0, BuildInfo{});
  Exporter first(metrics.registry(), "127.0.0.1", 0);
  EXPECT_THROW(Exporter(metrics.registry(), "127.0.0.1", first.port()), std::runtime_error);
}

TEST(Exporter, RejectsBadPortAndHost) {
  TrainingMetrics metrics("bad", 0, BuildInfo{});
  try {
    Exporter exporter(metrics.registry(), "127.0.0.1", 70000);
    FAIL() << "port 70000 accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "monitoring.port 70000: want 0..65535 (0 = any free port)");
  }
  EXPECT_THROW(Exporter(metrics.registry(), "not a host", 0), std::runtime_error);
  EXPECT_THROW(Exporter(nullptr, "127.0.0.1", 0), std::runtime_error);
}

}  // namespace
}  // namespace difftrain::monitoring
