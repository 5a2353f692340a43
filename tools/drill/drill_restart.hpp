// The restart scenario (the built-in drill's scenario 10, --target's scenario 7): continuous
// load against one server while it restarts, each request counted by how it ended, seen from
// outside. The load itself (this header's first half) needs nothing but sockets, so that a test
// can run it against servers it controls.
#pragma once

#include <sys/prctl.h>
#include <sys/types.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "transient/sockets/endpoint.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace transient::tool {

/// How one request of the restart load ended. Each request ends in exactly one of these.
enum class request_end : unsigned char {
  answered,    ///< A complete HTTP response arrived.
  refused,     ///< The connect failed with ECONNREFUSED: nothing listened.
  reset,       ///< ECONNRESET or EPIPE, at connect, send or receive.
  unanswered,  ///< EOF, or the request's deadline, before a complete response.
  not_sent,    ///< The drill could not open a connection itself (no local port, no descriptor).
};

/// The requests of a restart load, by how they ended.
struct request_counts {
  std::uint64_t answered = 0;    ///< request_end::answered.
  std::uint64_t refused = 0;     ///< request_end::refused.
  std::uint64_t reset = 0;       ///< request_end::reset.
  std::uint64_t unanswered = 0;  ///< request_end::unanswered.
  std::uint64_t not_sent = 0;    ///< request_end::not_sent: the drill's own failures, not the server's.
  /// Refused, reset and unanswered: the requests a restart lost.
  [[nodiscard]] std::uint64_t lost() const noexcept { return refused + reset + unanswered; }
};

/// How a request load runs (the restart load's, and the fleet scenario's through HAProxy).
struct load_shape {
  int short_threads = 2;                     ///< Threads of short connections (connect, GET /, close).
  int keepalive_threads = 2;                 ///< Threads of one keep-alive connection each.
  std::chrono::milliseconds deadline{2000};  ///< Each request's deadline, from its connect or send.
  /// A thread whose request failed waits this long before the next, so that a server that
  /// is down is counted in refusals a few a millisecond at most, not as fast as connect fails.
  std::chrono::milliseconds pause_after_loss{10};
  /// A thread whose request succeeded waits this long before the next (0: none, back to back).
  std::chrono::milliseconds pause_after_answer{0};
};

/// How many restarts a restart scenario runs: 20, or 5 with --quick.
[[nodiscard]] inline int restarts_for(bool quick) { return quick ? 5 : 20; }

/// One short connection to `at`: connect, GET /, read the whole response, close. The response's
/// status code goes to `*status` if given (0 when no complete response came).
[[nodiscard]] request_end short_request(const endpoint& at, std::chrono::milliseconds deadline, int* status = nullptr);

/// One keep-alive client: requests back to back on one connection, a new connection after the
/// server closed it (Connection: close, or EOF while idle after a complete answer) or lost a
/// request on it.
class keepalive_client {
 public:
  /// A client of `at`; it connects at its first request.
  explicit keepalive_client(const endpoint& at) : at_(at) {}
  /// Sends the next request (connecting first if needed) and waits at most `deadline` for it;
  /// the response's status code goes to `*status` if given (0 when no complete response came).
  request_end next(std::chrono::milliseconds deadline, int* status = nullptr);

 private:
  endpoint at_;
  unique_fd fd_;
};

/// One request of a load, as it ended.
struct request_outcome {
  request_end end = request_end::answered;     ///< How it ended.
  int status = 0;                              ///< The response's status code (0: no complete response).
  std::chrono::steady_clock::duration took{};  ///< From its start (connect or send) to its end.
};

/// Counts one request of a load (called on the load's threads, concurrently); returns true if
/// it failed, which makes its thread wait load_shape::pause_after_loss before the next.
using request_observer = std::function<bool(const request_outcome&)>;

/// A request load: short_threads and keepalive_threads threads, each sending requests until
/// stopped, every request handed to the observer as it ends.
class request_load {
 public:
  /// Starts the threads against `at`.
  request_load(const endpoint& at, const load_shape& shape, request_observer observe);
  /// Stops and joins the threads (each within its request's deadline).
  ~request_load();
  request_load(const request_load&) = delete;
  request_load& operator=(const request_load&) = delete;
  /// Stops the threads and waits for their last requests (each within its deadline).
  void stop();

 private:
  void observe(request_end end, int status, std::chrono::steady_clock::time_point began);
  void run_short();
  void run_keepalive();

  endpoint at_;
  load_shape shape_;
  request_observer observe_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

/// The restart load: a request_load whose requests are counted by how they ended. Counts can be
/// read while it runs.
class restart_load {
 public:
  /// Starts the threads against `at`.
  restart_load(const endpoint& at, const load_shape& shape);
  /// The counts so far.
  [[nodiscard]] request_counts counts() const noexcept;
  /// Stops the threads, waits for their last requests, and returns the final counts.
  request_counts stop();

 private:
  std::array<std::atomic<std::uint64_t>, 5> counts_{};
  request_load load_;  // last: its threads stop before the counts go
};

/// Lets `load` run between two restarts, so that each starts with the load flowing: at least
/// 100 ms, and until it answered 50 more requests (2 s at most). False if it answered fewer.
bool run_between_restarts(const restart_load& load);

/// The descriptors `pid` has open (/proc/PID/fd entries); -1 if unreadable.
[[nodiscard]] int open_descriptors(pid_t pid);

/// The process other than `old` that listens on `port` (who_listens), if one does: an
/// upgrade's successor.
[[nodiscard]] std::optional<pid_t> other_listener(std::uint16_t port, pid_t old);

/// Makes the drill a child subreaper while it lives: every generation of an upgraded serve
/// becomes the drill's child when its parent exits, so the drill reaps each and can kill the last.
class subreaper {
 public:
  /// Becomes a subreaper, keeping the setting it had.
  subreaper() {
    ::prctl(PR_GET_CHILD_SUBREAPER, &before_);
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  }
  /// Restores the setting it had.
  ~subreaper() { ::prctl(PR_SET_CHILD_SUBREAPER, before_); }
  subreaper(const subreaper&) = delete;
  subreaper& operator=(const subreaper&) = delete;

 private:
  int before_ = 0;
};

/// A handover line of an upgraded serve: "upgrade: first accept X ms after the signal to PID N".
struct handover_line {
  double ms = 0;  ///< X: from the old process's signal to the successor's first accept.
  pid_t old = 0;  ///< N: the process that was signalled.
};

/// `line` read as a handover_line; nullopt if it is not one.
[[nodiscard]] std::optional<handover_line> parse_handover_line(const std::string& line);

/// The successor named by an old serve's line "upgrade: PID N took over ..."; nullopt if `line`
/// is not one.
[[nodiscard]] std::optional<pid_t> parse_took_over_line(const std::string& line);

}  // namespace transient::tool
