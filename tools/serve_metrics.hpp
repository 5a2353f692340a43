// The metrics port of `transient serve`: Prometheus text at /metrics on a second (loopback)
// listener, with its own loop, thread and budget, so it never takes a place in the main budget.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "serve_loop.hpp"
#include "transient/listener.hpp"

namespace transient::tool {

/// The response for one request to the metrics port: 200 with `text()` for GET/HEAD /metrics,
/// 404 otherwise.
[[nodiscard]] std::string metrics_response(const parsed_request& request, const std::function<std::string()>& text);

/// Serves `text()` at http://LISTENER/metrics on a thread of its own until stop().
class metrics_endpoint {
 public:
  /// Starts serving. Throws std::system_error if the loop cannot be created.
  metrics_endpoint(listener l, std::function<std::string()> text);
  /// Stops and joins.
  ~metrics_endpoint();
  metrics_endpoint(const metrics_endpoint&) = delete;
  metrics_endpoint& operator=(const metrics_endpoint&) = delete;
  /// Stops the loop. Async-signal-safe (serve_loop::stop).
  void stop() noexcept;

 private:
  std::unique_ptr<serve_loop> loop_;
  std::thread thread_;
};

}  // namespace transient::tool
