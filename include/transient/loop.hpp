// transient/loop.hpp: serving a connection on the loop that accepted it (run to completion).
//
// A server (server.hpp, uring.hpp) runs one loop per thread. Given a loop_handler_factory
// instead of a connection_handler, it makes one loop_handler per loop, on that loop's thread,
// and hands it every connection the loop accepts. The handler watches its descriptors through
// the loop and is called back on the same thread, so a connection is accepted, read, answered,
// timed out and closed by one thread: no queue, no lock, no wake-up between accepting and
// serving, as in nginx workers or an Asio io_context per thread.
//
// The loop is level-triggered epoll underneath (for io_uring too: the ring's descriptor sits
// in the same set). A stop (server::stop(), or a failure that stops the server) ends accepting
// on every loop and calls each handler's on_accepting_end(); a loop then runs until its
// handler watches no descriptor, so the handler decides whether to close its connections at
// once or to finish the requests in flight first (a drain). server::run() returns when every
// loop has ended; it destroys each handler on its loop's thread as that loop ends.
//
// examples/serve_on_loop.cpp is a whole echo server in this shape.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <system_error>

#include "transient/accept_policy.hpp"
#include "transient/connection.hpp"

namespace transient {

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

/// Serves the connections one loop accepts, on that loop's thread (see the file comment).
/// Exceptions from its members stop the server, and server::run() rethrows the first.
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
