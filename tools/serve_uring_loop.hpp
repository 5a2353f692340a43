// What accepts for a `transient serve` loop: transient::acceptor (epoll) or, with
// `--engine io_uring`, transient::uring_acceptor, whose ring's descriptor sits in the loop's
// epoll set (readable when completions wait). Either way the loop's thread takes each
// connection and serves it on epoll; only the accept path differs.
#pragma once

#include <sys/epoll.h>

#include <chrono>
#include <cstdint>
#include <memory>

#include "serve_options.hpp"
#include "transient/acceptor.hpp"

namespace transient::tool {

/// The accept source of one serve loop, with transient::acceptor's interface (see there).
class accept_engine {
 public:
  /// The clock of every `now`.
  using clock = std::chrono::steady_clock;
  /// Handles `event` if it is the engine's; false otherwise.
  virtual bool handle(const epoll_event& event, clock::time_point now) = 0;
  /// Runs the timers that fell due.
  virtual void on_time(clock::time_point now) = 0;
  /// Milliseconds until the next timer (-1: none).
  [[nodiscard]] virtual int timeout_ms(clock::time_point now) const noexcept = 0;
  /// Asks it to stop. Async-signal-safe.
  virtual void stop() noexcept = 0;
  /// True once stopped.
  [[nodiscard]] virtual bool done() const noexcept = 0;
  /// Why it stopped.
  [[nodiscard]] virtual const stop_info& result() const noexcept = 0;
  /// The policy's counters.
  [[nodiscard]] virtual policy_metrics metrics() const noexcept = 0;
  /// The policy's health.
  [[nodiscard]] virtual policy_health health() const noexcept = 0;
  /// The budget it draws from.
  [[nodiscard]] virtual const std::shared_ptr<shared_budget>& budget() const noexcept = 0;
  /// The listener's local endpoint.
  [[nodiscard]] virtual const endpoint& local_endpoint() const noexcept = 0;
  /// Virtual: owned through this interface.
  virtual ~accept_engine() = default;

 protected:
  accept_engine() = default;
  accept_engine(const accept_engine&) = default;
  accept_engine& operator=(const accept_engine&) = default;
};

/// The engine `engine` for a loop whose epoll set is `epoll_fd`, using the tags from
/// `first_tag` (two at most). Throws std::system_error: not_supported (and why) for io_uring
/// where it is unavailable or the command was built without liburing; else the acceptor's.
std::unique_ptr<accept_engine> make_accept_engine(serve_engine engine, int epoll_fd, std::uint64_t first_tag,
                                                  std::shared_ptr<const listener> source, connection_handler handler,
                                                  acceptor_options options);

}  // namespace transient::tool
