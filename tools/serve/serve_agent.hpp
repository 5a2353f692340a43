// The agent port of `transient serve` (--agent): HAProxy's agent-check protocol, one line per
// TCP connection ("up ready 87%", "up drain", "down #stalled..."), from the same health that
// /readyz answers with and the connection budget. It runs on a listener, loop, thread and budget
// of its own, as the metrics port does, so that a check never waits behind the main budget.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "serve_metrics.hpp"
#include "transient/drivers/server.hpp"
#include "transient/policy/events.hpp"
#include "transient/sockets/listener.hpp"

namespace transient::tool {

/// The weight the agent reports while ready: the free share of the connection budget in
/// percent, rounded down, from 1 to 100. Never 0, which HAProxy takes as a drain; 100 only
/// while no place is taken, or when the budget is unknown (max_connections 0).
[[nodiscard]] unsigned agent_weight(const policy_metrics& budget) noexcept;

/// The agent's line for `health` and `budget`, with its "\n":
/// - ready: "up ready N%" (N: agent_weight). "ready" undoes a drain only the agent can undo.
/// - stalled: "down #stalled: ..." (the process exits once its requests in flight are done).
/// - stopped by another failure (health.failed): "fail #" and the reason's first 80 printable
///   characters.
/// - otherwise (live but not ready: backpressure, degraded, a long accept queue, or draining on
///   a stop signal or an upgrade): "up drain".
[[nodiscard]] std::string agent_line(const health_report& health, const policy_metrics& budget);

/// The connections the agent port holds at most. At that many, a new connection is answered at
/// accept and closed at once: a check never waits behind connections that linger.
inline constexpr std::uint64_t agent_connections = 16;

/// How long a connection lingers after its line for the checker to close it first (a close
/// with unread input would send a reset, which may make the checker drop the line unread).
inline constexpr std::chrono::milliseconds agent_linger{1000};

/// Answers every connection to its listener with `line()` (its write side then shut), on a
/// thread of its own, until close(): a transient::server of one loop and a budget of
/// agent_connections. It answers under a descriptor shortage too, on its spare descriptor,
/// when a stalled server most needs to say so.
class agent_endpoint {
 public:
  /// Starts answering. Throws std::system_error if the loop cannot be created.
  agent_endpoint(listener l, std::function<std::string()> line);
  /// Closes.
  ~agent_endpoint();
  agent_endpoint(const agent_endpoint&) = delete;
  agent_endpoint& operator=(const agent_endpoint&) = delete;

  /// Stops answering and returns once no more line will be written: the loop has let go of the
  /// listener and closed its connections. Another process sharing the listener (an upgrade's
  /// successor) answers from then on. Thread-safe; the second call does nothing.
  void close();

 private:
  std::unique_ptr<server> server_;
  std::thread thread_;
  std::mutex closing_;
};

}  // namespace transient::tool
