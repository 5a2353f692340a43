// The overload scenario's steps (the built-in drill's scenario 9, --target's scenario 6): many
// clients arrive at once, each with a deadline, and the drill counts from outside what became
// of each: answered in time, answered after its client had gone (waste), its connect dropped by
// the kernel, or no answer at all; and, for serve, how soon /readyz said 503 once the accept
// queue passed half its limit.
#pragma once

#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>

#include "drill_child.hpp"
#include "transient/sockets/endpoint.hpp"
#include "transient/sockets/listen_queue.hpp"

namespace transient::tool {

/// What the clients of an overload burst ask, and how long each waits.
struct overload_plan {
  std::size_t clients = 1000;                ///< All connect at once (non-blocking connects in one loop).
  std::chrono::milliseconds deadline{1000};  ///< Each client's deadline, from its connect.
  /// How long a client whose deadline passed keeps reading, from the burst's start: only so
  /// that the drill sees whether the server still answered it.
  std::chrono::milliseconds watch{8000};
  std::string path = "/";  ///< What each client GETs (HTTP/1.1, then it closes on the answer).
};

/// What became of an overload burst's clients, counted from outside. An answer is the response's
/// status line: a 5xx status is a refusal (serve sheds with 503), any other status is served.
struct overload_counts {
  std::string problem;         ///< Why the burst could not run (the drill's descriptor limit); empty if it ran.
  std::size_t clients = 0;     ///< Clients started.
  std::size_t connected = 0;   ///< Their connect completed within the deadline.
  std::size_t dropped = 0;     ///< Their connect did not complete within it (SYN or handshake dropped): closed.
  std::size_t refused = 0;     ///< Their connect failed (reset: nothing listened, or a full SYN queue refused it).
  std::size_t served = 0;      ///< Goodput: served within the deadline.
  std::size_t shed = 0;        ///< Refused (5xx) within the deadline.
  std::size_t waste = 0;       ///< Served after the deadline: work done for a client that had gone.
  std::size_t late_shed = 0;   ///< Refused (5xx) after the deadline.
  std::size_t unanswered = 0;  ///< Connected, then closed or reset without an answer, or silent until the watch ended.
  double last_answer_s = 0;    ///< When the last answer came, from the burst's start.
  double seconds = 0;          ///< From the burst's start until every client was done or the watch ended.
  /// The network namespace's ListenOverflows and ListenDrops over the burst (read_listen_drops
  /// before and after): machine-wide, every listener's; nullopt if unreadable.
  std::optional<listen_drops> namespace_drops;
  /// Answered (served or refused) within the deadline.
  [[nodiscard]] std::size_t answered_in_time() const noexcept { return served + shed; }
};

/// Runs an overload burst against the HTTP server at `at`: `plan.clients` non-blocking connects
/// at once, each client sending its GET once connected and closing on its answer; bounded by
/// `plan.watch` and `scenario_deadline`. Raises the drill's own RLIMIT_NOFILE soft limit to the
/// hard limit for the burst (restored after it); a hard limit too low for the clients is the
/// problem of the result.
overload_counts overload_burst(const endpoint& at, const overload_plan& plan,
                               std::chrono::steady_clock::time_point scenario_deadline);

/// What a readiness_watch saw.
struct readiness_seen {
  double peak_queue = 0;          ///< The longest accept queue seen.
  double limit = NAN;             ///< The queue\'s limit (the kernel\'s, where sock_diag shows it).
  bool crossed = false;           ///< The queue passed half its limit.
  double crossed_s = NAN;         ///< When, in seconds from the watch's start.
  double ready_503_ms = NAN;      ///< From the crossing to the first /readyz 503 at or after it (NAN: none).
  double ready_cpu_wait_ms = 0;   ///< Of which serve and the watching thread waited for a CPU.
  bool ready_503_before = false;  ///< /readyz said 503 before the crossing already (backpressure).
  std::size_t polls = 0;          ///< Rounds of the watch.
};

/// Watches from one thread, every 2 ms: the accept queue of the listener on `port`
/// (listen_sockets) against its limit (the kernel's; `limit` where the kernel does not say), and
/// /readyz on serve's `metrics` address.
class readiness_watch {
 public:
  readiness_watch(const serve_child& child, std::uint16_t port, std::uint32_t limit, endpoint metrics);
  ~readiness_watch();
  readiness_watch(const readiness_watch&) = delete;
  readiness_watch& operator=(const readiness_watch&) = delete;
  /// Stops watching; what it saw.
  readiness_seen finish();

 private:
  void run();
  // Reads the queue; marks the crossing of half the limit.
  void watch_queue(std::chrono::steady_clock::time_point start);
  // Asks /readyz; a 503 at or after the crossing ends the watch.
  void ask_ready(std::chrono::steady_clock::time_point start);

  const serve_child& child_;
  std::uint16_t port_;
  std::uint32_t limit_;
  endpoint metrics_;
  std::atomic<bool> done_{false};
  readiness_seen seen_;
  std::thread thread_;
};

}  // namespace transient::tool
