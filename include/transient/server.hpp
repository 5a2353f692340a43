// transient/server.hpp: the epoll driver. Runs an accept_policy over listeners and hands
// each accepted connection to the user's handler.
//
// It is built on transient::acceptor (acceptor.hpp), the library's one accept path: N
// threads, each an epoll loop with one acceptor per listener, all drawing on one budget.
//
// The loop never spins and never sleeps blindly: when the policy pauses (the budget is
// full, or descriptors or memory are exhausted), the listener is removed from the epoll
// set, because a level-triggered listener keeps reporting readable while accept fails with
// EMFILE (docs/design.md) and re-arming it would spin. Accepting resumes on a permit release
// (an eventfd wake-up, which the budget performs only when a loop is paused) or when the
// backoff delay ends (the epoll_wait timeout). When descriptors stay exhausted with no
// progress for stall_timeout, run() ends with condition::stalled and a diagnosis that says
// what holds the descriptors.
//
//   transient::server srv(std::move(listeners), [](transient::connection c) { ... });
//   std::thread t([&] { srv.run(); });   // blocks; throws on a non-clean stop
//   srv.stop();                          // any thread, or a signal handler
//
// To serve each connection on the loop that accepted it (run to completion), give a
// loop_handler_factory instead of the connection handler (loop.hpp).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <vector>

#include "transient/accept_policy.hpp"
#include "transient/acceptor.hpp"
#include "transient/connection.hpp"
#include "transient/connection_budget.hpp"
#include "transient/diagnostics.hpp"
#include "transient/listener.hpp"
#include "transient/loop.hpp"
#include "transient/syscalls.hpp"

namespace transient {

/// Settings of a server.
struct server_options {
  /// The connection budget. 0: auto, default_max_connections() (RLIMIT_NOFILE minus a
  /// reserve), as everywhere a budget is given (connection_budget.hpp). A budget above the
  /// descriptors left gets one warning at construction (budget_fit.hpp).
  std::uint64_t max_connections = 0;
  /// Loops (threads) sharing the listeners (EPOLLEXCLUSIVE) and one budget. run() uses the
  /// calling thread for the first.
  unsigned threads = 1;
  /// Instead of sharing each listener between the loops, give every loop its own socket on
  /// the same address (SO_REUSEPORT), so the kernel spreads connections over them. Needs
  /// listeners opened with listen_options::reuse_port; the server opens threads - 1 more per
  /// listener. Caveat (docs/design.md): any process of the same user may join such a group.
  bool reuse_port_shards = false;
  /// The accept policy's settings (shed mode, backoff, stall timeout, event sink, per-peer
  /// cap...). Each loop gets its own policy per listener with these settings.
  accept_policy_config policy{};
  /// Called for connections shed with shed_mode::respond (required for that mode).
  refusal_writer refuse{};
  /// Keep one spare descriptor (/dev/null) so that, under EMFILE, pending connections can
  /// still be accepted and shed, up to accepts_per_ready at a time (libuv's trick): used only
  /// when the shed mode is not `queue`. Caveat with threads > 1: another thread may take the descriptor freed for a
  /// moment, and the shed then fails with EMFILE like the accept before it; the loop takes
  /// its reserve again before its next accept once a descriptor is free.
  bool emfile_reserve = true;
  /// Keep /proc/self/fd and /proc/sys/fs/file-nr open so that a diagnosis can be written
  /// when no descriptor is free (two descriptors).
  bool diagnostics_reserve = true;
  /// Read each client's address as it is accepted (see acceptor_options::peer_addresses).
  bool peer_addresses = true;
  /// The system calls (tests replace some; see syscalls.hpp).
  syscalls sys{};
};

/// Why run() returned: stop_reason and stop_info (driver_kit.hpp), as for every driver.

/// What every server offers whatever its engine (server, uring_server), so that the engine
/// can be chosen at run time. Each member is documented at server's.
class basic_server {
 public:
  /// Stops the server (and waits until no stop() is inside) before it goes.
  virtual ~basic_server() = default;
  /// See server::run(std::error_code&).
  virtual stop_info run(std::error_code& ec) = 0;
  /// See server::run().
  virtual stop_info run() = 0;
  /// See server::stop(). Async-signal-safe.
  virtual void stop() noexcept = 0;
  /// See server::metrics().
  [[nodiscard]] virtual policy_metrics metrics() const = 0;
  /// See server::health().
  [[nodiscard]] virtual policy_health health() const = 0;
  /// See server::budget().
  [[nodiscard]] virtual const connection_budget& budget() const noexcept = 0;
  /// See server::local_endpoints().
  [[nodiscard]] virtual std::vector<endpoint> local_endpoints() const = 0;

 protected:
  basic_server() = default;
  basic_server(const basic_server&) = default;
  basic_server& operator=(const basic_server&) = default;
};

/// The epoll server. Construct, run(), stop() from anywhere. Not copyable or movable.
class server final : public basic_server {
 public:
  /// A server over `listeners` (at least one, each open). `handler` runs on the loop thread
  /// that accepted the connection, inside that loop's accept step: it should hand the
  /// connection on (to a queue, an io_context, a thread of its own) and return; to serve it
  /// on that loop, give a loop_handler_factory instead. Throws std::system_error:
  /// invalid_argument for no listener, a closed one, an empty handler, threads == 0,
  /// reuse_port_shards over a listener without SO_REUSEPORT, shed_mode::respond without
  /// `refuse`, or an invalid policy config; the error of default_max_connections(), epoll or
  /// eventfd creation otherwise (EMFILE at a later loop says how many descriptors a loop holds).
  server(std::vector<listener> listeners, connection_handler handler, server_options options = {});
  /// A server whose every loop serves the connections it accepts with its own loop_handler,
  /// made by `handlers` on that loop's thread when run() starts (loop.hpp). Throws as above.
  server(std::vector<listener> listeners, loop_handler_factory handlers, server_options options = {});
  ~server() override;
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// Runs the loops until stop() or a failure; returns the reason. A failure also sets `ec`
  /// (to stop_info::error); a clean stop clears it. The first exception from a handler stops
  /// the server and propagates. With loop handlers, each loop runs after the stop until its
  /// handler watches no descriptor. Every descriptor the server opened is closed when it
  /// returns, and the listeners are let go (accepted connections still alive are the
  /// handler's). Call it once.
  stop_info run(std::error_code& ec) override;
  /// As above; throws std::system_error(error, diagnosis) unless the stop was clean.
  stop_info run() override;

  /// Stops accepting: the loops wake within milliseconds, let go of the listeners (a listener
  /// closes with its last holder: clients arriving are refused, those in its backlog reset; one
  /// that systemd's socket unit holds too goes on listening there), tell their loop handlers,
  /// and run() returns once they are done. Safe from any thread and from a signal handler
  /// (async-signal-safe: atomic stores and write(2) to eventfds).
  void stop() noexcept override;

  /// The policies' counters, summed over loops and listeners. Thread-safe; the per-loop
  /// counters are refreshed at least every 100 ms while the loops run, live and peak are current.
  [[nodiscard]] policy_metrics metrics() const override;
  /// The health of the server: the worst state among its policies (stopped > degraded >
  /// backpressure > accepting). Thread-safe, refreshed like metrics().
  [[nodiscard]] policy_health health() const override;
  /// The budget all loops share.
  [[nodiscard]] const connection_budget& budget() const noexcept override;
  /// The local endpoints of the listeners, in the order given.
  [[nodiscard]] std::vector<endpoint> local_endpoints() const override;

 private:
  // The server both drivers share (src/detail/server_core.hpp) over transient::acceptor.
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace transient
