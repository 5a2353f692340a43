// `transient serve --policy naive`: the accept loop most servers have, kept for side-by-side
// demonstration only. It re-arms after every error, as Asio's example servers do
// (`acceptor.async_accept(...); if (ec) log; do_accept();`), and logs each failure.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>

#include "serve_connections.hpp"
#include "transient/connection.hpp"
#include "transient/listener.hpp"
#include "transient/unique_fd.hpp"

namespace transient::tool {

/// The naive accept side of a connection_loop: level-triggered epoll on the listener, one
/// accept per readiness event, a log line per failure, and straight back to epoll_wait. With
/// descriptors exhausted, accept fails with EMFILE while the client stays queued, so the
/// listener is readable again at once (docs/errors.md, measured): the loop spins at 100 % CPU
/// and writes a line per spin.
class naive_loop final : public accept_source {
 public:
  /// Watches `l` in `epoll_fd` (which must outlive this object); hands every accepted
  /// connection (with an empty permit: no budget) to `handler`. Throws std::system_error.
  naive_loop(int epoll_fd, listener l, std::function<void(connection)> handler);
  /// Makes the loop end soon (done()). Async-signal-safe.
  void stop() noexcept;
  /// Where the listener listens.
  [[nodiscard]] const endpoint& local_endpoint() const noexcept { return listener_.local_endpoint(); }
  /// Connections accepted so far. Thread-safe.
  [[nodiscard]] std::uint64_t accepted() const noexcept { return accepted_.load(std::memory_order_relaxed); }
  /// Accept failures so far. Thread-safe.
  [[nodiscard]] std::uint64_t failures() const noexcept { return failures_.load(std::memory_order_relaxed); }

  /// Accepts one connection on listener readiness; takes a stop wake-up.
  bool handle(const epoll_event& event, clock::time_point now) override;
  /// No timers.
  void on_time(clock::time_point /*now*/) override {}
  /// No timers: -1.
  [[nodiscard]] int timeout_ms(clock::time_point /*now*/) const override { return -1; }
  /// True after stop().
  [[nodiscard]] bool done() const override { return stopping_.load(); }

 private:
  static constexpr std::uint64_t listener_tag = first_source_tag;
  static constexpr std::uint64_t wake_tag = first_source_tag + 1;

  listener listener_;
  std::function<void(connection)> handler_;
  unique_fd wake_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> accepted_{0};
  std::atomic<std::uint64_t> failures_{0};
};

}  // namespace transient::tool
