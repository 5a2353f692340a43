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

/// The epoll server. Construct, run(), stop() from anywhere. Not copyable or movable.
class server {
 public:
  /// A server over `listeners` (at least one, each open). `handler` runs on the loop thread
  /// that accepted the connection, inside that loop's accept step: it should hand the
  /// connection on (to a queue, an io_context, a thread of its own) and return. While it
  /// blocks, that loop accepts nothing (the other loops go on), so a handler that serves the
  /// connection itself stops its loop's accepts for as long as it does. Throws std::system_error:
  /// invalid_argument for no listener, a closed one, threads == 0, reuse_port_shards over a
  /// listener without SO_REUSEPORT, shed_mode::respond without
  /// `refuse`, or an invalid policy config; the error of default_max_connections(), epoll or
  /// eventfd creation otherwise.
  server(std::vector<listener> listeners, connection_handler handler, server_options options = {});
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// Runs the loops until stop() or a failure; returns the reason. A failure also sets `ec`
  /// (to stop_info::error); a clean stop clears it. Exceptions from the handler propagate.
  /// Every descriptor the server opened is closed when it returns; the listeners are closed
  /// too (accepted connections still alive are the handler's). Call it once.
  stop_info run(std::error_code& ec);
  /// As above; throws std::system_error(error, diagnosis) unless the stop was clean.
  stop_info run();

  /// Stops the server: the loops wake within milliseconds and run() returns. Safe from any
  /// thread and from a signal handler (async-signal-safe: atomic stores, shutdown(2) of the
  /// listeners and write(2) to eventfds). Listeners are shut down for reading, which also
  /// resets clients still waiting in their backlog.
  void stop() noexcept;

  /// The policies' counters, summed over loops and listeners. Thread-safe; the per-loop
  /// counters are refreshed at least every 100 ms while the loops run, live and peak are current.
  [[nodiscard]] policy_metrics metrics() const;
  /// The health of the server: the worst state among its policies (stopped > degraded >
  /// backpressure > accepting). Thread-safe, refreshed like metrics().
  [[nodiscard]] policy_health health() const;
  /// The budget all loops share.
  [[nodiscard]] const connection_budget& budget() const noexcept;
  /// The local endpoints of the listeners, in the order given.
  [[nodiscard]] std::vector<endpoint> local_endpoints() const;

 private:
  // The server both drivers share (src/detail/server_core.hpp) over transient::acceptor.
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace transient
