// The metrics port of `transient serve`: Prometheus text at /metrics and health for
// orchestrators at /healthz and /readyz, on a second (loopback) listener with its own loop,
// thread and budget, so it never takes a place in the main budget and never blocks the
// accept loops (it reads what they published).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "serve_connections.hpp"
#include "transient/drivers/server.hpp"
#include "transient/sockets/listener.hpp"

namespace transient::tool {

/// The server's health as the orchestrator's probes see it.
struct health_report {
  std::string state = "accepting";  ///< accepting, backpressure, degraded, stalled, stopped.
  std::string reason;               ///< One line: why (empty while accepting normally).
  bool live = true;                 ///< /healthz answers 200 (else 503): the process serves.
  bool ready = true;                ///< /readyz answers 200 (else 503): send it new clients.
  bool failed = false;              ///< Stopped by a failure (a stall too), not by a signal or an upgrade.
};

/// The small JSON body of /healthz and /readyz: {"state":"...","reason":"..."} and a newline.
[[nodiscard]] std::string health_json(const health_report& h);

/// The response for one request to the metrics port: for GET or HEAD, 200 with `text()` at
/// /metrics, the health at /healthz (200 if live, else 503) and /readyz (200 if ready, else
/// 503), 404 elsewhere; 405 for any other method.
[[nodiscard]] std::string metrics_response(const parsed_request& request, const std::function<std::string()>& text,
                                           const std::function<health_report()>& health);

/// The connections the metrics port holds at most. At that many, a new connection closes
/// the one idle longest: a probe is never queued behind scrapers or silent clients.
inline constexpr std::uint64_t metrics_connections = 16;

/// Serves `text()` at http://LISTENER/metrics and `health()` at /healthz and /readyz on a
/// thread of its own until stop(): a transient::server of one loop and a budget of
/// metrics_connections.
class metrics_endpoint {
 public:
  /// Starts serving. Throws std::system_error if the loop cannot be created.
  metrics_endpoint(listener l, std::function<std::string()> text, std::function<health_report()> health);
  /// Stops and joins.
  ~metrics_endpoint();
  metrics_endpoint(const metrics_endpoint&) = delete;
  metrics_endpoint& operator=(const metrics_endpoint&) = delete;
  /// Stops the loop. Async-signal-safe (server::stop).
  void stop() noexcept;

 private:
  std::unique_ptr<server> server_;
  std::thread thread_;
};

}  // namespace transient::tool
