// transient/drivers/acceptor.hpp: the accept policy in an epoll loop that the user owns. Include
// it to keep your own loop: the acceptor owns a listener, its policy, its spare descriptor and a
// wake-up eventfd, registered in your epoll set under two data.u64 tags of your choosing; on
// readiness or timeout it accepts, hands each connection (with its permit) to the handler on the
// same thread, sheds, pauses and resumes. Design: docs/acceptor.md, docs/design.md "Drivers".
//
//   transient::acceptor a(epfd, transient::listen(ep), {.listener = 1, .wake = 2}, on_connection);
//   for (;;) {
//     const int n = epoll_wait(epfd, events, max, a.timeout_ms(clock::now()));  // or min with yours
//     const auto now = clock::now();
//     for (int i = 0; i < n; ++i) {
//       if (!a.handle(events[i], now)) { /* the user's own connection I/O, on this thread */ }
//     }
//     a.on_time(now);                          // timers that fell due (backoff end, stall check)
//     if (a.done()) break;                     // after stop() (any thread, a signal handler)
//   }
//
// Thread-safety: every member function runs on the loop thread, except stop(), which any
// thread and a signal handler may call. Connections may be closed on any thread.
#pragma once

#include <sys/epoll.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <system_error>

#include "transient/detail/driver_kit.hpp"
#include "transient/diagnosis/diagnostics.hpp"
#include "transient/policy/accept_policy.hpp"
#include "transient/policy/budget.hpp"
#include "transient/policy/events.hpp"
#include "transient/sockets/listener.hpp"

namespace transient {

struct syscalls;     // testing/syscalls.hpp
class loop_handler;  // server.hpp

/// The epoll_event::data.u64 values of an acceptor's two descriptors in the user's epoll set.
/// They must differ from each other and from every tag the user's own descriptors use (cast
/// a pointer with reinterpret_cast<std::uintptr_t> if the loop keys its data by pointer). The
/// defaults, 0 and 1, are also descriptor numbers: a loop that tags its connections by
/// descriptor picks values no descriptor takes, such as 1 << 32 and (1 << 32) + 1.
struct acceptor_tags {
  std::uint64_t listener = 0;  ///< The listening socket's events.
  std::uint64_t wake = 1;      ///< The wake-up eventfd's events (releases while paused, stop()).
};

/// Settings of an acceptor.
struct acceptor_options {
  /// The budget to draw from; share one between acceptors (one process-wide connection
  /// limit). Empty: a budget of max_connections of its own.
  std::shared_ptr<shared_budget> budget;
  /// The size of the budget made when `budget` is empty. 0: default_max_connections().
  std::uint64_t max_connections = 0;
  /// The accept policy's settings (shed mode, backoff, stall timeout, per-peer cap, event sink...).
  accept_policy_config policy{};
  /// Called for connections shed with shed_mode::respond (required for that mode).
  refusal_writer refuse{};
  /// Keep a spare descriptor to shed waiting clients under EMFILE or ENFILE, when the shed mode
  /// is not queue (docs/design.md, "The spare descriptor").
  bool spare_fd = true;
  /// Register the listener with EPOLLEXCLUSIVE: for one listener watched by several loops
  /// (acceptors sharing it, each in its own epoll set), so a connection wakes one loop only.
  bool exclusive = false;
  /// Read each client's address as it is accepted, for connection::peer() and the refusal
  /// writer. false: both see an empty endpoint, and no address is copied out of the kernel
  /// per connection (its cost: README.md, "Performance").
  /// A per-peer cap (policy.peers) reads the addresses whatever this says.
  bool peer_addresses = true;
  /// The descriptors a stall diagnosis reads when no descriptor is free. Empty: the acceptor
  /// opens its own (two descriptors) unless `open_diagnosis_fds` is false, and the
  /// census then opens what it needs, or probes. Share one between acceptors to save
  /// descriptors; a census through it must not run on two threads at once, so share it
  /// only between acceptors of one loop.
  std::shared_ptr<const diagnosis_fds> diagnostics{};
  /// See `diagnostics`.
  bool open_diagnosis_fds = true;
  /// The test seam (<transient/testing/syscalls.hpp>): the system calls the acceptor makes.
  /// Null means the real system calls. The acceptor copies the table when it is constructed,
  /// so it need not outlive the constructor call.
  const syscalls* sys = nullptr;
};

/// A listener and its accept policy in an epoll loop the user owns (see the file comment).
/// The epoll descriptor must outlive the acceptor, which removes its descriptors from it when
/// destroyed.
/// Move-only. Destroying it removes its descriptors from the epoll set, closes them (and the
/// listener, if owned) and unregisters from the budget; connections already handed out stay
/// valid (they keep the budget alive).
class acceptor {
 public:
  /// The clock of `now` arguments and of timeouts.
  using clock = std::chrono::steady_clock;
  /// A moment on that clock.
  using time_point = clock::time_point;

  /// An acceptor owning `source` (open, listening), registered in `epoll_fd` (the user's
  /// epoll instance, which must outlive the acceptor) with `tags`. `handler` receives each
  /// connection. Throws std::system_error: invalid_argument for a closed listener, an empty
  /// handler, equal tags, shed_mode::respond without `refuse` or an invalid policy config;
  /// else the error of eventfd, epoll_ctl or default_max_connections().
  acceptor(int epoll_fd, listener source, acceptor_tags tags, connection_handler handler,
           acceptor_options options = {});
  /// As above, for a listener shared with other acceptors (one per loop; set
  /// acceptor_options::exclusive). Each keeps it alive; it closes with the last.
  acceptor(int epoll_fd, std::shared_ptr<const listener> source, acceptor_tags tags, connection_handler handler,
           acceptor_options options = {});
  ~acceptor();
  /// Moves the acceptor (the epoll registration keeps its tags).
  acceptor(acceptor&& other) noexcept;
  /// Destroys this acceptor's state and takes over `other`'s.
  acceptor& operator=(acceptor&& other) noexcept;
  acceptor(const acceptor&) = delete;
  acceptor& operator=(const acceptor&) = delete;

  /// Handles one event of the user's epoll_wait: if its data.u64 is one of this acceptor's
  /// tags, does what it means (accepts while the policy says so, handing connections to the
  /// handler; takes a wake-up; stops) and returns true; otherwise returns false and does
  /// nothing. `now` is the time after epoll_wait returned. An exception from the handler
  /// stops the acceptor (done() becomes true, the listener leaves the epoll set) and
  /// propagates. Throws nothing else.
  bool handle(const epoll_event& event, time_point now);
  /// Runs the timers that fell due by `now` (the end of a backoff pause, the stall
  /// watchdog). Call it after each epoll_wait (harmless when nothing is due). Exceptions: as
  /// handle().
  void on_time(time_point now);
  /// Hands each connection to `handler`'s on_connection, a direct call, instead of to the
  /// connection handler given; null: to that handler again. For a server that serves on the
  /// loop that accepted (server.hpp): its loop handler is made after its acceptors. `handler`
  /// must outlive that use. Loop thread only.
  void set_loop_handler(loop_handler* handler) noexcept;

  /// When the next timer falls due (time_point::max(): none; a paused acceptor without a
  /// deadline waits for a wake-up event).
  [[nodiscard]] time_point next_timer() const noexcept;
  /// The epoll_wait timeout in milliseconds until next_timer(), rounded up so that the loop
  /// never wakes a little early and spins; -1 if there is no timer. Take the minimum with the
  /// loop's own timeouts.
  [[nodiscard]] int timeout_ms(time_point now) const noexcept;

  /// Asks the acceptor to stop: it wakes its loop (the eventfd), which then, in handle(),
  /// removes the listener from the epoll set and ends (done()). Safe from any thread and from
  /// a signal handler (an atomic store and a write(2)). Connections handed out are untouched.
  void stop() noexcept;
  /// True once the acceptor has stopped (after stop(), a failure or a handler exception): it
  /// watches nothing any more and has let go of its listener (closed, if it was the last
  /// holder: clients still arriving are refused rather than left waiting; a listener shared
  /// with another holder, such as systemd's socket unit, stays open there); result() says why.
  [[nodiscard]] bool done() const noexcept;
  /// Why it stopped (meaningful once done()): clean, or the policy's failure with a diagnosis
  /// (a stall names what holds the descriptors).
  [[nodiscard]] const stop_info& result() const noexcept;

  /// True while the listener is in the epoll set (not paused, not stopped).
  [[nodiscard]] bool armed() const noexcept;
  /// The policy's counters, with the drivers' own (refusals_failed). Loop thread only.
  [[nodiscard]] policy_metrics metrics() const noexcept;
  /// How accepting is going. Loop thread only.
  [[nodiscard]] policy_health health() const noexcept;
  /// The budget this acceptor draws from (shared with other acceptors, if given).
  [[nodiscard]] const std::shared_ptr<shared_budget>& budget() const noexcept;
  /// The listener's local endpoint.
  [[nodiscard]] const endpoint& local_endpoint() const noexcept;
  /// The tags given at construction.
  [[nodiscard]] acceptor_tags tags() const noexcept;

 private:
  // The first half of stop(), without the wake-up.
  void request_stop() noexcept;

  struct state;
  std::shared_ptr<state> state_;  // shared: the budget's wake-up registry holds it weakly
};

}  // namespace transient
