// The metrics port of `transient serve`: Prometheus text at /metrics on a second (loopback)
// listener, with its own small server and connection loop so it never takes a place in the
// main budget.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "serve_connections.hpp"
#include "transient/listener.hpp"
#include "transient/server.hpp"

namespace transient::tool {

/// The response for one request to the metrics port: 200 with `text()` for GET/HEAD /metrics,
/// 404 otherwise.
[[nodiscard]] std::string metrics_response(const parsed_request& request, const std::function<std::string()>& text);

/// Serves `text()` at http://LISTENER/metrics on two threads of its own until stop().
class metrics_endpoint {
 public:
  /// Starts serving. Throws std::system_error if the server or loop cannot be created.
  metrics_endpoint(listener l, std::function<std::string()> text);
  /// Stops and joins.
  ~metrics_endpoint();
  metrics_endpoint(const metrics_endpoint&) = delete;
  metrics_endpoint& operator=(const metrics_endpoint&) = delete;
  /// Stops both threads (async-signal-safe parts only: server::stop, connection_io::stop).
  void stop() noexcept;

 private:
  std::unique_ptr<connection_io> io_;
  std::unique_ptr<server> server_;
  std::thread io_thread_;
  std::thread server_thread_;
};

}  // namespace transient::tool
