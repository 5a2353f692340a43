// One loop of `transient serve`, run to completion: a connection_loop whose accept source is a
// transient::acceptor in the same epoll set. The loop's thread accepts a connection (with its
// permit from the shared budget), serves it and closes it; nothing is handed to another thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>

#include "serve_connections.hpp"
#include "serve_uring_loop.hpp"
#include "transient/acceptor.hpp"

namespace transient::tool {

/// What a serve_loop publishes for other threads (the metrics port, the supervisor): a copy
/// taken on the loop thread, at most 100 ms old while the loop runs.
struct loop_snapshot {
  policy_metrics metrics;             ///< The acceptor's counters.
  policy_health health;               ///< The acceptor's health.
  std::uint64_t header_timeouts = 0;  ///< Connections closed for a late request head.
  std::size_t open_connections = 0;   ///< Connections this loop holds.
  bool running = false;               ///< run() has started and not returned.
};

/// A connection_loop with an acceptor as its source. run() on the loop's thread; stop(),
/// drain() and snapshot() from any thread (stop() and drain() also from a signal handler).
class serve_loop final : public accept_source {
 public:
  /// A loop serving connections accepted on `source` with `respond`, closing them at the
  /// `limits`. `after_accept` (may be empty) runs on the loop thread after each connection is
  /// taken. Throws std::system_error (the acceptor's checks, epoll).
  serve_loop(connection_limits limits, responder respond, std::shared_ptr<const listener> source,
             acceptor_options options, std::function<void()> after_accept = {},
             serve_engine engine = serve_engine::epoll);
  serve_loop(const serve_loop&) = delete;
  serve_loop& operator=(const serve_loop&) = delete;
  ~serve_loop() override = default;

  /// Serves until stop() or a failure of the acceptor; closes every connection before it
  /// returns. Exceptions (epoll_wait, a failed add) propagate.
  void run();
  /// Asks the loop to stop (it ends within one epoll_wait). Async-signal-safe.
  void stop() noexcept { acceptor_->stop(); }
  /// Asks the loop to stop accepting at once and end once the connections in flight are
  /// answered (connection_loop::request_drain). Async-signal-safe.
  void drain() noexcept {
    io_.request_drain();
    acceptor_->stop();
  }
  /// Why the loop stopped (after run() returned): clean, or the acceptor's failure.
  [[nodiscard]] const stop_info& result() const noexcept { return acceptor_->result(); }
  /// The acceptor's counters as last published (at most 100 ms old while the loop runs;
  /// final once run() returned). Thread-safe.
  [[nodiscard]] policy_metrics metrics() const;
  /// Everything published (see loop_snapshot). Thread-safe.
  [[nodiscard]] loop_snapshot snapshot() const;
  /// The budget the acceptor draws from.
  [[nodiscard]] const std::shared_ptr<shared_budget>& budget() const noexcept { return acceptor_->budget(); }
  /// The listener's local endpoint.
  [[nodiscard]] const endpoint& local_endpoint() const noexcept { return acceptor_->local_endpoint(); }
  /// The connection loop (set_after_close before run()).
  [[nodiscard]] connection_loop& connections() noexcept { return io_; }
  /// Calls `hook` once, on the loop thread, when the acceptor has stopped (stop(), drain(),
  /// a failure), before the loop drains or closes its connections (set before run()).
  void set_on_accept_end(std::function<void()> hook) { on_accept_end_ = std::move(hook); }
  /// With `on`, a full budget closes the connection idle longest, so that a new one is
  /// accepted at once instead of waiting for a place (the metrics port: a probe is answered
  /// however many scrapers or silent clients hold connections). Set before run().
  void set_evict_when_full(bool on) noexcept { evict_when_full_ = on; }

  /// accept_source: the acceptor's events.
  bool handle(const epoll_event& event, clock::time_point now) override;
  /// accept_source: the acceptor's timers and the publication of its counters.
  void on_time(clock::time_point now) override;
  /// accept_source: the acceptor's next timer, or the next publication if counters changed.
  [[nodiscard]] int timeout_ms(clock::time_point now) const override;
  /// accept_source: true once the acceptor has stopped.
  [[nodiscard]] bool done() const override { return acceptor_->done(); }

 private:
  static constexpr auto publish_every = std::chrono::milliseconds(100);
  void publish();

  connection_loop io_;                       // first: the acceptor is registered in its epoll set and leaves it first
  std::unique_ptr<accept_engine> acceptor_;  // epoll or io_uring (--engine)
  mutable std::mutex mutex_;                 // guards published_
  loop_snapshot published_;
  clock::time_point next_publish_{};
  std::function<void()> on_accept_end_;
  bool evict_when_full_ = false;                       // see set_evict_when_full
  bool ended_ = false;                                 // the acceptor's stop was seen (on_accept_end_ called)
  bool changed_ = false;                               // counters changed since the last publication
  health_state last_state_ = health_state::accepting;  // health at the last publication
  std::size_t last_open_ = 0;                          // open connections at the last publication
  std::uint64_t last_timeouts_ = 0;                    // header timeouts at the last publication
};

}  // namespace transient::tool
