// transient/drivers/uring.hpp: the io_uring driver (library transient::uring, built when liburing
// is found): uring_acceptor for a loop you own and uring_server, with the epoll driver's policy,
// budget, shed modes, spare descriptor, stall watchdog and diagnosis, and its types
// (server_options, acceptor_options, connection_handler, stop_info). Include it for
// `--engine io_uring`. What the ring changes and what the driver does about it: docs/design.md,
// "io_uring".
//
//   transient::uring_server srv(std::move(listeners), [](transient::connection c) { ... });
//   srv.run();   // blocks; srv.stop() from any thread or a signal handler
//
// Where io_uring is unavailable (a kernel without it or older than 5.19, io_uring_disabled,
// a seccomp filter), construction throws std::system_error(errc::not_supported) saying why;
// nothing falls back to epoll silently. uring_available() asks first.
#pragma once

#include <atomic>
#include <chrono>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "transient/drivers/acceptor.hpp"
#include "transient/drivers/server.hpp"
#include "transient/sockets/listen_queue.hpp"

namespace transient {

/// True if this process can use the io_uring driver (io_uring enabled, multishot accept and
/// the timeouts it waits with supported). Otherwise false, with `why` saying what is missing.
[[nodiscard]] bool uring_available(std::string& why);

/// Settings of the ring itself (the rest is acceptor_options or server_options).
struct uring_options {
  /// Submission queue entries; the completion queue has twice as many. A small ring still
  /// works: a completion queue overflow ends the multishot accept, and the driver submits it
  /// again as the policy says.
  unsigned entries = 64;
};

/// One listener's accept policy on an io_uring that it owns: the io_uring counterpart of
/// transient::acceptor, for a loop the user owns. The ring's descriptor (native_handle())
/// becomes readable when completions wait; put it in the user's epoll set (or call wait()),
/// then call handle(). acceptor_options::exclusive does not apply; acceptor_options::sys's
/// uring_accept_result is the seam of the accept completions.
///
/// Thread-safety: every member function runs on the loop thread, except stop(), which any
/// thread and a signal handler may call. Connections may be closed on any thread.
class uring_acceptor {
 public:
  /// The clock of `now` arguments and of timeouts.
  using clock = std::chrono::steady_clock;
  /// A moment on that clock.
  using time_point = clock::time_point;

  /// An acceptor owning `source`. Throws std::system_error: not_supported (and why) where
  /// io_uring is unavailable; invalid_argument as transient::acceptor; else the error of
  /// eventfd or io_uring_setup.
  uring_acceptor(listener source, connection_handler handler, acceptor_options options = {}, uring_options ring = {});
  /// As above, for a listener shared with other acceptors (each on its own ring).
  uring_acceptor(std::shared_ptr<const listener> source, connection_handler handler, acceptor_options options = {},
                 uring_options ring = {});
  /// An acceptor over a shared listener whose ring's descriptor it registers in `epoll_fd`
  /// (the user's epoll set, which must outlive it) with `tags.listener`, as transient::acceptor
  /// registers its descriptors: the same loop then passes events to either with handle(event,
  /// now). Throws as above, or the error of epoll_ctl.
  uring_acceptor(int epoll_fd, std::shared_ptr<const listener> source, acceptor_tags tags, connection_handler handler,
                 acceptor_options options = {}, uring_options ring = {});
  /// Cancels the accept, sheds what the ring accepted meanwhile (bounded wait), closes the ring.
  ~uring_acceptor();
  /// Moves the acceptor.
  uring_acceptor(uring_acceptor&& other) noexcept;
  /// Destroys this acceptor's state and takes over `other`'s.
  uring_acceptor& operator=(uring_acceptor&& other) noexcept;
  uring_acceptor(const uring_acceptor&) = delete;
  uring_acceptor& operator=(const uring_acceptor&) = delete;

  /// The ring's descriptor: readable when completions wait (register it for EPOLLIN).
  [[nodiscard]] int native_handle() const noexcept;
  /// Takes every completion that waits (accepts, failures, wake-ups, the stop), does what the
  /// policy decides and submits what that needs. An exception from the handler stops the
  /// acceptor and propagates. Harmless when nothing waits.
  void handle(time_point now);
  /// transient::acceptor's shape: if `event` carries the tag given at construction (with an
  /// epoll set), handles it as above and returns true; otherwise returns false.
  bool handle(const epoll_event& event, time_point now);
  /// Runs the timers that fell due by `now` (the end of a backoff pause, the stall watchdog).
  void on_time(time_point now);
  /// As transient::acceptor's: hands each connection to `handler`'s on_connection, a direct
  /// call, instead of to the connection handler given; null: to that handler again. `handler`
  /// must outlive that use. Loop thread only.
  void set_loop_handler(loop_handler* handler) noexcept;
  /// Waits up to `timeout` (negative: no limit) for a completion in one io_uring_enter that
  /// also submits, then handle()s and on_time()s. For a loop with this acceptor only.
  void wait(std::chrono::milliseconds timeout);
  /// When the next timer falls due (time_point::max(): none).
  [[nodiscard]] time_point next_timer() const noexcept;
  /// Milliseconds until next_timer(), rounded up; -1 if there is no timer.
  [[nodiscard]] int timeout_ms(time_point now) const noexcept;

  /// Asks the acceptor to stop (it wakes the ring). Safe from any thread and from a signal
  /// handler (an atomic store and a write(2)).
  void stop() noexcept;
  /// True once the acceptor has stopped; result() says why.
  [[nodiscard]] bool done() const noexcept;
  /// Why it stopped (meaningful once done()).
  [[nodiscard]] const stop_info& result() const noexcept;
  /// True while an accept request is in the ring.
  [[nodiscard]] bool armed() const noexcept;
  /// The policy's counters, with the driver's own. Loop thread only.
  [[nodiscard]] policy_metrics metrics() const noexcept;
  /// How accepting is going. Loop thread only.
  [[nodiscard]] policy_health health() const noexcept;
  /// Submission queue entries this acceptor has submitted (accepts, cancels, wake-up polls).
  [[nodiscard]] std::uint64_t submissions() const noexcept;
  /// The budget this acceptor draws from.
  [[nodiscard]] const std::shared_ptr<shared_budget>& budget() const noexcept;
  /// The listener's local endpoint.
  [[nodiscard]] const endpoint& local_endpoint() const noexcept;

 private:
  // The first half of stop(), without the wake-up.
  void request_stop() noexcept;

  struct state;
  std::shared_ptr<state> state_;  // shared: the budget's wake-up registry holds it weakly
};

/// The io_uring server: transient::server's options, handler and contract, over rings. Each
/// of options.threads loops has a ring per listener (shared listeners, or SO_REUSEPORT shards
/// with reuse_port_shards); all draw on one budget. Not copyable or movable.
class uring_server final : public basic_server {
 public:
  /// As server::server, plus not_supported (and why) where io_uring is unavailable.
  uring_server(std::vector<listener> listeners, connection_handler handler, server_options options = {},
               uring_options ring = {});
  /// As server::server with a loop_handler_factory, plus not_supported as above. The loops
  /// wait in epoll_wait over their rings' descriptors and the handlers' ones.
  uring_server(std::vector<listener> listeners, loop_handler_factory handlers, server_options options = {},
               uring_options ring = {});
  ~uring_server() override;
  uring_server(const uring_server&) = delete;
  uring_server& operator=(const uring_server&) = delete;

  /// As server::run(std::error_code&).
  stop_info run(std::error_code& ec) override;
  /// As server::run(): throws std::system_error(error, diagnosis) unless the stop was clean.
  stop_info run() override;
  /// As server::stop(): any thread, a signal handler.
  void stop() noexcept override;
  /// The acceptors' counters, summed (refreshed at least every 100 ms while running). Thread-safe.
  [[nodiscard]] policy_metrics metrics() const override;
  /// The worst health of the acceptors (refreshed like metrics()). Thread-safe.
  [[nodiscard]] policy_health health() const override;
  /// Submission queue entries submitted so far, over all rings (refreshed like metrics()).
  [[nodiscard]] std::uint64_t submissions() const;
  /// The budget all loops share.
  [[nodiscard]] const connection_budget& budget() const noexcept override;
  /// The local endpoints of the listeners, in the order given.
  [[nodiscard]] std::vector<endpoint> local_endpoints() const override;
  /// As server::accept_queues(): thread-safe, nullopt once the server has let go of a listener.
  [[nodiscard]] std::vector<std::optional<listen_queue>> accept_queues() const override;

 private:
  // The server both drivers share (src/drivers/server_core.hpp) over transient::uring_acceptor.
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace transient
