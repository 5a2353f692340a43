// The HTTP side of `transient serve`: the connections one loop of the server accepted, served
// on that loop (transient/drivers/server.hpp). A connection never crosses threads: it is accepted,
// read, answered, timed out and closed by the loop that accepted it.
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
#include "transient/drivers/server.hpp"
#include "transient/policy/budget.hpp"

namespace transient::tool {

/// Appends the response to one complete request to `out` (serve: "ok"; the metrics port: the
/// metrics). Appending into the connection's own buffer reuses its capacity: no allocation
/// per request once a loop is warm.
using responder = std::function<void(const parsed_request& request, std::string& out)>;

/// The time limits of a connection_loop.
struct connection_limits {
  /// Close a connection silent this long.
  std::chrono::milliseconds idle = std::chrono::seconds(60);
  /// Close a connection that has not sent a complete request head this long after it was
  /// added, or after its previous response was written (slow clients, slowloris), or whose
  /// body has not arrived whole this long after its head.
  std::chrono::milliseconds header = std::chrono::seconds(10);
  /// Once accepting ends: serve requests in flight at most this long (0: close every
  /// connection at once).
  std::chrono::milliseconds drain = std::chrono::seconds(10);
};

/// How long to hold back the response to `request` (0: answer at once). Meanwhile the
/// request is in flight: the connection is not idle, a drain waits for it, and nothing after
/// it on the connection is read. serve sets none; the test fixture (tools/fixture) holds back
/// requests for /slow, to have a request in flight when a stop or a stall comes.
using response_delay = std::function<std::chrono::milliseconds(const parsed_request& request)>;

/// What a connection_loop shows other threads (the metrics port, the supervisor), refreshed
/// after every wait of its loop.
struct connection_counters {
  std::atomic<std::size_t> open{0};               ///< Connections the loop holds.
  std::atomic<std::uint64_t> header_timeouts{0};  ///< Connections closed for a late request head.
};

/// Writes one log line (without its newline); may be empty.
using log_writer = std::function<void(const std::string& line)>;

/// The HTTP/1.1 keep-alive side of one server loop (a transient::loop_handler): pipelined
/// requests are answered in order, a bad or oversized request gets 400 and a close, a
/// connection idle for `limits.idle` or without a request head for `limits.header` is
/// closed. When accepting ends it drains for at most `limits.drain`: each connection's next
/// response (a request in flight, or the next request of an idle keep-alive connection) says
/// Connection: close, and the connection closes once it is written. Before any close, a
/// request already waiting in the socket is answered where the loop can. Everything runs on the
/// loop's thread; nothing here is thread-safe, nothing needs to be.
class connection_loop final : public loop_handler, public io_watcher {
 public:
  /// The clock of every `now`.
  using clock = loop::clock;

  /// Serves on `l`, which must outlive it.
  connection_loop(loop& l, connection_limits limits, responder respond);
  /// Closes every connection.
  ~connection_loop() override;
  connection_loop(const connection_loop&) = delete;
  connection_loop& operator=(const connection_loop&) = delete;

  /// Calls `hook` after each connection is added (set before the loop runs).
  void set_after_accept(std::function<void()> hook) { after_accept_ = std::move(hook); }
  /// Calls `hook` after each connection is closed (set before the loop runs).
  void set_after_close(std::function<void()> hook) { after_close_ = std::move(hook); }
  /// Holds back responses as `delay` says (set before the loop runs; none by default).
  void set_response_delay(response_delay delay) { delay_ = std::move(delay); }
  /// Where the state changes of header timeouts and the drain's end are logged.
  void set_log(log_writer log) { log_ = std::move(log); }
  /// Where the counters go (it must outlive this loop; may be null).
  void set_counters(connection_counters* counters) noexcept { counters_ = counters; }
  /// A descriptor (an eventfd) that, once readable, ends a drain at once: every connection
  /// closes. It must outlive this loop. -1: none.
  void set_drain_end(int fd) noexcept { drain_end_ = fd; }
  /// With `on`, a full budget closes the connection idle longest, so that a new one is
  /// accepted at once instead of waiting for a place (the metrics port: a probe is answered
  /// however many scrapers or silent clients hold connections).
  void set_evict_when_full(bool on) noexcept { evict_when_full_ = on; }

  /// loop_handler: takes a connection the loop accepted. One the loop cannot watch (ENOMEM,
  /// ENOSPC) is closed.
  void on_connection(connection c) override;
  /// loop_handler: begins the drain.
  void on_accepting_end() override;
  /// loop_handler: the earliest timeout.
  [[nodiscard]] clock::time_point next_timer() const noexcept override;
  /// loop_handler: closes what timed out, answers delayed requests, publishes the counters.
  void on_time(clock::time_point now) override;
  /// io_watcher: a client's events, or the drain's end.
  void on_ready(int fd, std::uint32_t events) override;

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
    bool delayed = false;        // the first request in `in` waits until respond_at (delay_)
    bool waited = false;         // the first request in `in` has had its delay
    clock::time_point last{};
    clock::time_point head_since{};
    clock::time_point respond_at{};
    int older = none;  // the idle order, least recently active first, linked by descriptor
    int newer = none;
    int head_older = none;  // the head order, longest waiting for a request head first
    int head_newer = none;
  };

  void add(connection&& conn);
  void read_first_request(int fd);
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
  [[nodiscard]] bool done_draining(const client& c) const noexcept;
  void close_client(int fd);
  void close_all() noexcept;
  void end_drain(std::string_view why);
  void answer_pending();
  [[nodiscard]] static bool answerable(const client& c) noexcept;
  [[nodiscard]] static int unread_bytes(const client& c) noexcept;
  void expire_idle(int fd);
  void finish_if_drained() noexcept;
  void publish() const noexcept;
  void note_deadline(clock::time_point when) noexcept;
  void expire();
  void expire_heads();
  void end_timeout_run();

  loop& loop_;
  connection_limits limits_;
  responder respond_;
  std::function<void()> after_accept_;
  std::function<void()> after_close_;
  response_delay delay_;
  log_writer log_;
  connection_counters* counters_ = nullptr;
  int drain_end_ = -1;
  bool drain_end_watched_ = false;
  bool evict_when_full_ = false;
  clock::time_point now_{};  // when the current batch of events arrived
  // No deadline of expire() falls before this: the last next_timer(), lowered by every
  // deadline set since. Until then on_time() has nothing to expire and skips the scan.
  mutable clock::time_point due_ = clock::time_point::min();
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
  bool draining_all_ = false;  // accepting ended and the loop drains
  clock::time_point drain_until_{};
};

/// The signals serve handles: a stop signal drains, a second one ends the drain at once.
inline constexpr std::array<int, 3> stop_signal_numbers{SIGTERM, SIGINT, SIGQUIT};
/// The signals that upgrade serve in place: SIGHUP (what supervisors send to reload) and SIGUSR2
/// (nginx's binary upgrade).
inline constexpr std::array<int, 2> upgrade_signal_numbers{SIGHUP, SIGUSR2};
/// The signal serve logs and ignores: what supervisors send to reopen logs.
inline constexpr std::array<int, 1> ignored_signal_numbers{SIGUSR1};

/// Starts `body` on a new thread with every signal serve handles blocked (the stop signals,
/// SIGHUP, SIGUSR1, SIGUSR2), so that they reach the main thread only (serve's handlers run
/// there, never during the teardown of a loop).
std::thread thread_without_signals(std::function<void()> body);

/// The settings every side port of serve (the metrics and agent ports) starts from: a budget
/// of `max_connections` of its own, no stall watchdog (the main server's decides), no
/// diagnosis descriptors, and its policy's lines on stderr as "transient serve (NAME port): ...".
[[nodiscard]] server_options side_port_options(std::string_view name, std::uint64_t max_connections);

/// Runs `s` on a thread of its own with signals blocked, saying on stderr why if it stops for a
/// failure ("transient serve: NAME port stopped: ...").
[[nodiscard]] std::thread run_side_port(server& s, std::string_view name);

}  // namespace transient::tool
