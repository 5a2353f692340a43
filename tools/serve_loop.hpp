// One loop of `transient serve`, run to completion: a connection_loop whose accept source is a
// transient::acceptor in the same epoll set. The loop's thread accepts a connection (with its
// permit from the shared budget), serves it and closes it; nothing is handed to another thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>

#include "serve_connections.hpp"
#include "transient/acceptor.hpp"

namespace transient::tool {

/// What serve runs per thread, whichever engine accepts (epoll: serve_loop; io_uring:
/// serve_uring_loop). run() on the loop's thread; stop() and metrics() from any thread.
class serve_engine_loop {
 public:
  /// Serves until stop() or a failure of the accept source.
  virtual void run() = 0;
  /// Asks the loop to stop. Async-signal-safe.
  virtual void stop() noexcept = 0;
  /// Why the loop stopped (after run() returned).
  [[nodiscard]] virtual const stop_info& result() const noexcept = 0;
  /// The accept policy's counters as last published. Thread-safe.
  [[nodiscard]] virtual policy_metrics metrics() const = 0;
  /// The budget the loop draws from.
  [[nodiscard]] virtual const std::shared_ptr<shared_budget>& budget() const noexcept = 0;
  /// The listener's local endpoint.
  [[nodiscard]] virtual const endpoint& local_endpoint() const noexcept = 0;
  /// The connection loop (set_after_close before run()).
  [[nodiscard]] virtual connection_loop& connections() noexcept = 0;
  /// Virtual: loops are owned through this interface.
  virtual ~serve_engine_loop() = default;

 protected:
  serve_engine_loop() = default;
  serve_engine_loop(const serve_engine_loop&) = default;
  serve_engine_loop& operator=(const serve_engine_loop&) = default;
};

/// A connection_loop with an acceptor as its source. run() on the loop's thread; stop() and
/// metrics() from any thread (stop() also from a signal handler).
class serve_loop final : public accept_source, public serve_engine_loop {
 public:
  /// A loop serving connections accepted on `source` with `respond`, closing them after
  /// `idle_timeout` of silence. `after_accept` (may be empty) runs on the loop thread after
  /// each connection is taken. Throws std::system_error (the acceptor's checks, epoll).
  serve_loop(std::chrono::milliseconds idle_timeout, responder respond, std::shared_ptr<const listener> source,
             acceptor_options options, std::function<void()> after_accept = {});
  serve_loop(const serve_loop&) = delete;
  serve_loop& operator=(const serve_loop&) = delete;
  ~serve_loop() override = default;

  /// Serves until stop() or a failure of the acceptor; closes every connection before it
  /// returns. Exceptions (epoll_wait, a failed add) propagate.
  void run() override;
  /// Asks the loop to stop (it ends within one epoll_wait). Async-signal-safe.
  void stop() noexcept override { acceptor_.stop(); }
  /// Why the loop stopped (after run() returned): clean, or the acceptor's failure.
  [[nodiscard]] const stop_info& result() const noexcept override { return acceptor_.result(); }
  /// The acceptor's counters as last published (at most 100 ms old while the loop runs;
  /// final once run() returned). Thread-safe.
  [[nodiscard]] policy_metrics metrics() const override;
  /// The budget the acceptor draws from.
  [[nodiscard]] const std::shared_ptr<shared_budget>& budget() const noexcept override { return acceptor_.budget(); }
  /// The listener's local endpoint.
  [[nodiscard]] const endpoint& local_endpoint() const noexcept override { return acceptor_.local_endpoint(); }
  /// The connection loop (set_after_close before run()).
  [[nodiscard]] connection_loop& connections() noexcept override { return io_; }

  /// accept_source: the acceptor's events.
  bool handle(const epoll_event& event, clock::time_point now) override;
  /// accept_source: the acceptor's timers and the publication of its counters.
  void on_time(clock::time_point now) override;
  /// accept_source: the acceptor's next timer, or the next publication if counters changed.
  [[nodiscard]] int timeout_ms(clock::time_point now) const override;
  /// accept_source: true once the acceptor has stopped.
  [[nodiscard]] bool done() const override { return acceptor_.done(); }

 private:
  static constexpr auto publish_every = std::chrono::milliseconds(100);
  void publish();

  connection_loop io_;  // first: the acceptor is registered in its epoll set and leaves it first
  acceptor acceptor_;
  mutable std::mutex mutex_;  // guards published_
  policy_metrics published_;
  clock::time_point next_publish_{};
  bool changed_ = false;  // counters changed since the last publication
};

}  // namespace transient::tool
