// The loops of `transient serve`, run to completion: one thread, one epoll set, an accept
// source (transient's acceptor, or the naive loop) and the connections that source accepted
// on this thread. A connection never crosses threads: it is accepted, read, answered, timed
// out and closed by the loop that accepted it, as in nginx workers or an Asio io_context per
// thread, so a connection costs no hand-over (no queue, no lock, no eventfd write, no wake-up).
#pragma once

#include <sys/epoll.h>

#include <csignal>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "serve_http.hpp"
#include "transient/connection.hpp"
#include "transient/unique_fd.hpp"

namespace transient::tool {

/// Appends the response to one complete request to `out` (serve: "ok"; the metrics port: the
/// metrics). Appending into the connection's own buffer reuses its capacity: no allocation
/// per request once a loop is warm.
using responder = std::function<void(const parsed_request& request, std::string& out)>;

/// What a connection_loop accepts connections from. It registers its own descriptors in the
/// loop's epoll set with data.u64 tags of at least `first_source_tag` (connections use their
/// descriptor numbers), hands each connection to connection_loop::add on the loop thread, and
/// says when the loop must end.
class accept_source {
 public:
  /// The clock of every `now`.
  using clock = std::chrono::steady_clock;
  /// The smallest epoll tag a source may use (above every descriptor number).
  static constexpr std::uint64_t first_source_tag = std::uint64_t{1} << 32U;

  /// Handles one event if its tag is the source's; false if it is not.
  virtual bool handle(const epoll_event& event, clock::time_point now) = 0;
  /// The source's timers that fell due by `now` (called after every epoll_wait).
  virtual void on_time(clock::time_point now) = 0;
  /// Milliseconds until the source's next timer (-1: none).
  [[nodiscard]] virtual int timeout_ms(clock::time_point now) const = 0;
  /// True once the source has stopped: the loop closes its connections and returns.
  [[nodiscard]] virtual bool done() const = 0;
  /// Virtual: a final source's destructor is then virtual too (clang-tidy asks for one or the other).
  virtual ~accept_source() = default;

 protected:
  accept_source() = default;
  accept_source(const accept_source&) = default;
  accept_source& operator=(const accept_source&) = default;
};

/// The time limits of a connection_loop.
struct connection_limits {
  /// Close a connection silent this long.
  std::chrono::milliseconds idle = std::chrono::seconds(60);
  /// Close a connection that has not sent a complete request head this long after it was
  /// added, or after its previous response was written (slow clients, slowloris), or whose
  /// body has not arrived whole this long after its head.
  std::chrono::milliseconds header = std::chrono::seconds(10);
  /// After request_drain() and the source's stop: serve requests in flight at most this long
  /// (0: close every connection at once).
  std::chrono::milliseconds drain = std::chrono::seconds(10);
  /// Test knob: answer requests whose target starts with /slow after this long (0: off).
  std::chrono::milliseconds slow_response{0};
};

/// Writes one log line (without its newline); may be empty.
using log_writer = std::function<void(const std::string& line)>;

/// An HTTP/1.1 keep-alive connection loop on one thread: pipelined requests are answered in
/// order, a bad or oversized request gets 400 and a close, a connection idle for
/// `limits.idle` or without a request head for `limits.header` is closed. Everything runs on
/// the thread that calls run(), including add() (from the source's handler); nothing here is
/// thread-safe, nothing needs to be, except request_drain().
class connection_loop {
 public:
  /// The clock of every `now`.
  using clock = accept_source::clock;

  /// Creates the epoll set. Throws std::system_error.
  connection_loop(connection_limits limits, responder respond);
  ~connection_loop();
  connection_loop(const connection_loop&) = delete;
  connection_loop& operator=(const connection_loop&) = delete;

  /// The epoll set, for the source to register its descriptors in.
  [[nodiscard]] int epoll_fd() const noexcept { return epoll_.get(); }
  /// Calls `hook` after each connection is closed (set before run()).
  void set_after_close(std::function<void()> hook) { after_close_ = std::move(hook); }
  /// Where the state changes of header timeouts are logged (set before run()).
  void set_log(log_writer log) { log_ = std::move(log); }
  /// Makes run(), once the source is done, drain instead of closing everything: idle
  /// connections close at once, requests in flight are answered (with Connection: close),
  /// for at most limits.drain. Call it before stopping the source. Async-signal-safe.
  void request_drain() noexcept {
    drain_requested_.store(true, std::memory_order_release);
    wake();
  }
  /// Ends a drain at once (or the one to come): run() closes every connection and returns.
  /// Async-signal-safe.
  void end_drain() noexcept {
    drain_ended_.store(true, std::memory_order_release);
    wake();
  }
  /// Takes a connection the source accepted (on the loop thread, during run()). A connection
  /// the epoll set cannot take (ENOMEM, ENOSPC) is closed.
  void add(connection c);
  /// Serves until `source` is done(); closes every connection before returning. Throws
  /// std::system_error if epoll_wait fails; an exception from the source propagates.
  void run(accept_source& source);
  /// Closes the connection idle longest (the least recently active), if there is one.
  void close_idlest();
  /// Connections open now.
  [[nodiscard]] std::size_t open_connections() const noexcept { return open_; }
  /// Connections closed so far because no request head, or no body after it, came within
  /// limits.header.
  [[nodiscard]] std::uint64_t header_timeouts() const noexcept { return header_timeouts_; }

 private:
  static constexpr int none = -1;
  struct client {
    connection conn;
    std::string in;
    std::string out;
    bool close_after_write = false;
    bool draining = false;       // response sent and write side shut: discard input until EOF or deadline
    bool writing = false;        // EPOLLOUT in the interest set
    bool reading = true;         // EPOLLIN in the interest set
    bool head_received = false;  // `in` holds a complete head whose body is still coming
    bool awaiting_head = false;  // in the head order: the header timeout runs
    bool timing_body = false;    // ... for the body of a complete head
    bool delayed = false;        // a /slow request waits until respond_at (test knob)
    bool waited = false;         // the first request in `in` has had its delay
    clock::time_point last{};
    clock::time_point head_since{};
    clock::time_point respond_at{};
    int older = none;  // the idle order, least recently active first, linked by descriptor
    int newer = none;
    int head_older = none;  // the head order, longest waiting for a request head first
    int head_newer = none;
  };

  // The epoll tag of wake_: above every descriptor, below every source's tags.
  static constexpr std::uint64_t wake_tag = accept_source::first_source_tag - 1;

  void wake() noexcept;
  void turn(accept_source& source, std::array<epoll_event, 64>& events);
  void drain(accept_source& source, std::array<epoll_event, 64>& events);
  void on_event(int fd, unsigned events);
  void read_from(client& c);
  void serve_input(client& c, std::string_view arrived);
  std::size_t answer(client& c, std::string_view input);
  void flush(client& c);
  void update_interest(client& c);
  void link_newest(int fd);
  void unlink(int fd);
  void touch(int fd);
  void update_head_timer(client& c);
  void head_unlink(int fd);
  void respond_delayed();
  void after_event(int fd);
  [[nodiscard]] bool idle(const client& c) const noexcept;
  [[nodiscard]] bool done_draining(const client& c) const noexcept;
  void close_client(int fd);
  void close_all() noexcept;
  [[nodiscard]] int next_timeout() const;
  void expire();
  void expire_heads();

  connection_limits limits_;
  responder respond_;
  std::function<void()> after_close_;
  log_writer log_;
  unique_fd epoll_;
  unique_fd wake_;               // an eventfd in epoll_: end_drain() and request_drain() end a wait
  clock::time_point now_{};      // when the current batch of events arrived
  std::vector<client> clients_;  // by descriptor; a closed slot keeps its buffers' capacity
  std::size_t open_ = 0;
  std::size_t draining_ = 0;  // clients with draining set (their deadlines are scanned)
  int oldest_ = none;
  int newest_ = none;
  int head_oldest_ = none;
  int head_newest_ = none;
  std::size_t delayed_ = 0;  // clients with delayed set (their deadlines are scanned)
  std::uint64_t header_timeouts_ = 0;
  // A run of header timeouts is logged as two state changes: its first close and, once no
  // more came for limits.header, its end with the count.
  bool timeouts_running_ = false;
  std::uint64_t timeouts_in_run_ = 0;
  clock::time_point last_header_timeout_{};
  std::atomic<bool> drain_requested_{false};
  std::atomic<bool> drain_ended_{false};
  bool draining_all_ = false;  // the source stopped and the loop drains
  clock::time_point drain_until_{};
};

/// The signals serve handles: a stop signal drains, a second one ends the drain at once.
inline constexpr std::array<int, 3> stop_signal_numbers{SIGTERM, SIGINT, SIGQUIT};
/// The signals serve logs and ignores: what supervisors send to reload or reopen logs.
inline constexpr std::array<int, 3> ignored_signal_numbers{SIGHUP, SIGUSR1, SIGUSR2};

/// Starts `body` on a new thread with every signal serve handles blocked (the stop signals,
/// SIGHUP, SIGUSR1, SIGUSR2), so that they reach the main thread only (serve's handlers run
/// there, never during the teardown of a loop).
std::thread thread_without_signals(std::function<void()> body);

}  // namespace transient::tool
