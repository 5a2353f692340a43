// `transient serve --policy naive`: the accept loop most servers have, kept for side-by-side
// demonstration only. It re-arms after every error, as Asio's example servers do
// (`acceptor.async_accept(...); if (ec) log; do_accept();`), and logs each failure.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>

#include "transient/connection.hpp"
#include "transient/listener.hpp"
#include "transient/unique_fd.hpp"

namespace transient::tool {

/// The naive loop: level-triggered epoll on the listener, one accept per readiness event, a
/// log line per failure, and straight back to epoll_wait. With descriptors exhausted, accept
/// fails with EMFILE while the client stays queued, so the listener is readable again at once
/// (ERRORS.md, measured): the loop spins at 100 % CPU and writes a line per spin.
class naive_loop {
 public:
  /// Watches `l`; hands every accepted connection (with an empty permit: no budget) to `handler`.
  naive_loop(listener l, std::function<void(connection)> handler);
  /// Runs until stop().
  void run();
  /// Makes run() return. Async-signal-safe.
  void stop() noexcept;
  /// Where the listener listens.
  [[nodiscard]] const endpoint& local_endpoint() const noexcept { return listener_.local_endpoint(); }
  /// Connections accepted so far.
  [[nodiscard]] std::uint64_t accepted() const noexcept { return accepted_.load(std::memory_order_relaxed); }
  /// Accept failures so far.
  [[nodiscard]] std::uint64_t failures() const noexcept { return failures_.load(std::memory_order_relaxed); }

 private:
  listener listener_;
  std::function<void(connection)> handler_;
  unique_fd epoll_;
  unique_fd wake_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> accepted_{0};
  std::atomic<std::uint64_t> failures_{0};
};

}  // namespace transient::tool
