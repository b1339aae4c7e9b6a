// Exporter: wraps prometheus::Exposer (civetweb) and turns its start-up failures into one line
// that names the port and the operating system's reason.
#include "monitoring/exporter.h"

#include <CivetServer.h>
#include <prometheus/exposer.h>
#include <prometheus/registry.h>

#include <stdexcept>
#include <utility>
#include <vector>

namespace difftrain::monitoring {
namespace {

// civetweb reports why a bind failed only through its log callback, which carries no user
// pointer while the server starts. Start-up runs on the constructing thread, so a thread-local
// sink collects exactly the messages of our own start; other threads' messages pass through.
thread_local std::vector<std::string>* t_start_messages = nullptr;

int capture_start_message(const mg_connection* /*connection*/, const char* message) {
  if (t_start_messages == nullptr) {
    return 0;  // not ours: let civetweb handle it as usual
  }
  t_start_messages->emplace_back(message);
  return 1;
}

const CivetCallbacks& start_callbacks() {
  static const CivetCallbacks callbacks = [] {
    CivetCallbacks c;
    c.log_message = capture_start_message;
    return c;
  }();
  return callbacks;
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

  std::vector<std::string> messages;
  t_start_messages = &messages;
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(address, 2, &start_callbacks());
  } catch (const std::exception& e) {
    t_start_messages = nullptr;
    // civetweb logs the specific reason first, then a generic "Failed to setup server ports".
    const std::string reason = messages.empty() ? e.what() : messages.front();
    throw std::runtime_error(what + ": cannot listen on " + address + " (" + reason +
                             "); pick a free port or 0 for any");
  }
  t_start_messages = nullptr;

  exposer_->RegisterCollectable(registry_);
  const std::vector<int> ports = exposer_->GetListeningPorts();
  if (ports.empty()) {
    throw std::runtime_error(what + ": civetweb started on " + address + " but reports no port");
  }
  port_ = ports.front();
}

Exporter::~Exporter() = default;

int Exporter::port() const { return port_; }

}  // namespace difftrain::monitoring
