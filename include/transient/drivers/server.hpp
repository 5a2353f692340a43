// transient/drivers/server.hpp: the epoll server, N loops of acceptors on one budget, handing
// each connection to a handler, or to a loop_handler that serves it on the loop that accepted it.
// Include it (with sockets/listener.hpp) to run a server; examples/serve_on_loop.cpp serves on
// the loop. Design: docs/design.md, "Drivers" and "Serving on the loop that accepted".
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "transient/diagnosis/diagnostics.hpp"
#include "transient/drivers/acceptor.hpp"
#include "transient/policy/accept_policy.hpp"
#include "transient/policy/budget.hpp"
#include "transient/sockets/listen_queue.hpp"
#include "transient/sockets/listener.hpp"

// Serving a connection on the loop that accepted it (run to completion): a loop_handler per
// loop, called on the loop's thread (docs/design.md, "Serving on the loop that accepted").

namespace transient {

struct syscalls;  // testing/syscalls.hpp

/// What a loop calls when a descriptor it watches is ready, on the loop's thread. Readiness is
/// level-triggered and may be gone by the time the watcher acts (another event of the same
/// wait used it up), so a read or write that would block (EAGAIN) is normal.
class io_watcher {
 public:
  /// Virtual: a watcher may be owned through this interface.
  virtual ~io_watcher() = default;
  /// `fd` is ready; `events` are epoll's (EPOLLIN, EPOLLOUT, EPOLLHUP, EPOLLERR).
  virtual void on_ready(int fd, std::uint32_t events) = 0;

 protected:
  io_watcher() = default;
  io_watcher(const io_watcher&) = default;
  io_watcher& operator=(const io_watcher&) = default;
};

/// One loop of a server, as the code serving its connections sees it. Every member runs on
/// the loop's thread only. A server implements it; a test (or a loop of the user's own) may
/// implement it too, to run a loop_handler elsewhere.
class loop {
 public:
  /// The clock of every time here.
  using clock = std::chrono::steady_clock;
  /// A moment on that clock.
  using time_point = clock::time_point;

  /// Virtual: a loop may be owned through this interface (a test's fake loop).
  virtual ~loop() = default;
  /// Watches `fd` (not yet watched) for `events` (EPOLLIN and/or EPOLLOUT, level-triggered):
  /// `watcher` is called when it is ready until unwatch(fd) or forget(fd). Sets `ec` to epoll_ctl's error
  /// (ENOMEM, ENOSPC: too many watches) and watches nothing then.
  virtual void watch(int fd, std::uint32_t events, io_watcher& watcher, std::error_code& ec) noexcept = 0;
  /// As above; throws std::system_error.
  void watch(int fd, std::uint32_t events, io_watcher& watcher);
  /// Changes what `fd` (watched) is watched for. Sets `ec` to epoll_ctl's error.
  virtual void modify(int fd, std::uint32_t events, std::error_code& ec) noexcept = 0;
  /// As above; throws std::system_error.
  void modify(int fd, std::uint32_t events);
  /// Stops watching `fd`, a descriptor that stays open. No event of `fd` reaches its watcher
  /// afterwards, not even one the current wait already returned.
  virtual void unwatch(int fd) noexcept = 0;
  /// As unwatch(), for a descriptor that is closed now (just before or just after this call):
  /// the kernel drops a closed descriptor from the epoll set by itself, so this makes no
  /// system call. (epoll watches the open file, not the number: for a descriptor that was
  /// duplicated, or inherited by a child, use unwatch().)
  virtual void forget(int fd) noexcept = 0;
  /// When the wait whose events are being handled returned.
  [[nodiscard]] time_point now() const noexcept { return now_; }
  /// This loop's number: 0 to server_options::threads - 1.
  [[nodiscard]] virtual unsigned index() const noexcept = 0;
  /// How this loop's accepting goes (its worst listener): backpressure while the budget is
  /// full and clients wait, stopped once accepting has ended.
  [[nodiscard]] virtual policy_health health() const noexcept = 0;

 protected:
  loop() = default;
  loop(const loop&) = default;
  loop& operator=(const loop&) = default;
  /// Sets now(): an implementation calls it as each wait returns.
  void set_now(time_point now) noexcept { now_ = now; }

 private:
  time_point now_{};
};

/// Serves the connections one loop accepts, on that loop's thread (docs/design.md, "Serving on the loop that
/// accepted"). Exceptions from its members stop the server, and server::run() rethrows the first.
class loop_handler {
 public:
  /// The clock of every time here.
  using clock = loop::clock;
  /// A moment on that clock.
  using time_point = loop::time_point;

  /// Destroyed on the loop's thread when the loop ends.
  virtual ~loop_handler() = default;
  /// A connection this loop accepted (with its place in the budget, released when the
  /// connection closes).
  virtual void on_connection(connection c) = 0;
  /// This loop accepts no more (a stop, or a failure). The loop runs until the handler
  /// watches no descriptor: close the connections now, or once their requests are answered.
  virtual void on_accepting_end() = 0;
  /// When on_time() is next due; time_point::max() for never.
  [[nodiscard]] virtual time_point next_timer() const noexcept { return time_point::max(); }
  /// Called after every wait of the loop, with the time it returned: run the timers due.
  virtual void on_time(time_point /*now*/) {}

 protected:
  loop_handler() = default;
  loop_handler(const loop_handler&) = default;
  loop_handler& operator=(const loop_handler&) = default;
};

/// Makes the handler of `l`, on that loop's thread, before the loop accepts. Throwing stops
/// the server as a handler's exception does.
using loop_handler_factory = std::function<std::unique_ptr<loop_handler>(loop& l)>;

}  // namespace transient

// The epoll server: N threads, each an epoll loop with one acceptor per listener, all drawing on
// one budget; it never spins and never sleeps blindly (docs/design.md, "Drivers").
//
//   transient::server srv(std::move(listeners), [](transient::connection c) { ... });
//   std::thread t([&] { srv.run(); });   // blocks; throws on a non-clean stop
//   srv.stop();                          // any thread, or a signal handler

namespace transient {

/// Settings of a server.
struct server_options {
  /// The connection budget. 0: auto, default_max_connections() (RLIMIT_NOFILE minus a
  /// headroom), as everywhere a budget is given (budget.hpp). A budget above the
  /// descriptors left gets one warning at construction (budget.hpp).
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
  /// Keep a spare descriptor to shed waiting clients under EMFILE, when the shed mode is not
  /// queue (docs/design.md, "The spare descriptor").
  bool spare_fd = true;
  /// Keep /proc/self/fd and /proc/sys/fs/file-nr open so that a diagnosis can be written
  /// when no descriptor is free (two descriptors).
  bool diagnosis_fds = true;
  /// Read each client's address as it is accepted (see acceptor_options::peer_addresses).
  bool peer_addresses = true;
  /// The test seam (<transient/testing/syscalls.hpp>): the system calls the server's loops
  /// make. Null means the real system calls. The server copies the table when it is
  /// constructed, so it need not outlive the constructor call.
  const syscalls* sys = nullptr;
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
  /// See server::accept_queues().
  [[nodiscard]] virtual std::vector<std::optional<listen_queue>> accept_queues() const = 0;

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
  /// made by `handlers` on that loop's thread when run() starts (server.hpp). Throws as above.
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
  /// The accept queue of each listener, in the order given (queue_of(): one getsockopt each,
  /// no allocation but the vector), read now, for a readiness probe or metrics. nullopt for a
  /// listener the server has let go (its loops let go as they stop: after stop(), or a
  /// failure, and always once run() has returned) or whose queue cannot be read. With
  /// reuse_port_shards, the queue of the socket given, which is the first loop's shard.
  /// Thread-safe, at any time in the server's life, concurrently with run() and stop(): a
  /// reading holds the listener, so it never meets a closed or reused descriptor, and it
  /// keeps no listener open beyond the reading (docs/guide.md, "The accept queue").
  [[nodiscard]] std::vector<std::optional<listen_queue>> accept_queues() const override;

 private:
  // The server both drivers share (src/drivers/server_core.hpp) over transient::acceptor.
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace transient
