// `transient serve --policy naive`: the accept loop most servers have, kept for side-by-side
// demonstration only. It re-arms after every error, as Asio's example servers do
// (`acceptor.async_accept(...); if (ec) log; do_accept();`), and logs each failure.
#pragma once

#include <atomic>
#include <cstdint>
#include <system_error>
#include <vector>

#include "transient/connection.hpp"
#include "transient/listener.hpp"
#include "transient/loop.hpp"
#include "transient/unique_fd.hpp"

namespace transient::tool {

/// The naive loop: level-triggered epoll on the listener, one accept per readiness event, a
/// log line per failure, and straight back to epoll_wait. With descriptors exhausted, accept
/// fails with EMFILE while the client stays queued, so the listener is readable again at once
/// (docs/errors.md, measured): the loop spins at 100 % CPU and writes a line per spin. It
/// hosts a loop_handler as a server's loop does (index 0, no budget).
class naive_loop final : public loop {
 public:
  /// A loop accepting on `l`. Throws std::system_error.
  explicit naive_loop(listener l);
  /// Runs until stop(), then until `handler` watches nothing; hands every accepted connection
  /// (with an empty permit: no budget) to it. Throws std::system_error if epoll_wait fails.
  void run(loop_handler& handler);
  /// Makes the loop stop accepting soon. Async-signal-safe.
  void stop() noexcept;
  /// Where the listener listens.
  [[nodiscard]] const endpoint& local_endpoint() const noexcept { return listener_.local_endpoint(); }
  /// Connections accepted so far. Thread-safe.
  [[nodiscard]] std::uint64_t accepted() const noexcept { return accepted_.load(std::memory_order_relaxed); }
  /// Accept failures so far. Thread-safe.
  [[nodiscard]] std::uint64_t failures() const noexcept { return failures_.load(std::memory_order_relaxed); }

  void watch(int fd, std::uint32_t events, io_watcher& watcher, std::error_code& ec) noexcept override;
  void modify(int fd, std::uint32_t events, std::error_code& ec) noexcept override;
  void unwatch(int fd) noexcept override;
  [[nodiscard]] time_point now() const noexcept override { return now_; }
  [[nodiscard]] unsigned index() const noexcept override { return 0; }
  [[nodiscard]] policy_health health() const noexcept override;

 private:
  // Above every descriptor number, which tags the handler's descriptors.
  static constexpr std::uint64_t listener_tag = std::uint64_t{1} << 32U;
  static constexpr std::uint64_t wake_tag = listener_tag + 1;

  void accept_one(loop_handler& handler);
  [[nodiscard]] std::error_code control(int op, int fd, std::uint32_t events) const noexcept;

  listener listener_;
  unique_fd epoll_;
  unique_fd wake_;
  time_point now_{};
  std::vector<io_watcher*> watchers_;  // by descriptor
  std::size_t watched_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> accepted_{0};
  std::atomic<std::uint64_t> failures_{0};
};

}  // namespace transient::tool
