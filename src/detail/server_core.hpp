// The server, written once for every driver: transient::server (server.cpp, epoll acceptors)
// and transient::uring_server (uring/uring_server.cpp, io_uring acceptors) are this class over
// their acceptor. N loops, each a thread with an acceptor per listener it watches, all drawing
// on one budget. The server only waits, publishes the counters and turns an acceptor's failure
// into its own stop; accepting is the acceptors'.
//
// A driver derives its server from server_core<its server, its acceptor>, calls open_loops()
// at the end of its constructor, and gives:
//   - name: "transient::server", for messages;
//   - check_supported(): throws if the driver cannot work here, before anything is opened;
//   - add_acceptors(loop&, listeners, handler, settings): a loop's acceptors, one per listener;
//   - wait(loop&, timeout_ms, ec): waits once, passes what came to the acceptors and runs
//     their timers; returns how many events came (a driver that cannot tell says 1), and sets
//     `ec` if epoll_wait failed (EINTR is no failure);
//   - request_stop(acceptor&): the first half of the acceptor's stop(), without the wake-up.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "detail/acceptor_core.hpp"
#include "transient/server.hpp"

namespace transient::detail {

/// Worst first: stopped > degraded > backpressure > accepting.
[[nodiscard]] inline int severity(health_state s) noexcept {
  switch (s) {
    case health_state::accepting: return 0;
    case health_state::backpressure: return 1;
    case health_state::degraded: return 2;
    case health_state::stopped: return 3;
  }
  return 0;
}

/// The tags of a loop's acceptor `index`: its listener and its wake-up, so that an event's
/// tag divided by two is the acceptor it belongs to.
[[nodiscard]] inline acceptor_tags tags_of(std::size_t index) noexcept {
  return {2 * static_cast<std::uint64_t>(index), 2 * static_cast<std::uint64_t>(index) + 1};
}

/// The earlier of two timeouts in milliseconds, where -1 is none.
[[nodiscard]] inline int earliest(int a, int b) noexcept { return a < 0 ? b : (b < 0 ? a : std::min(a, b)); }

/// The policy settings of loop `t` of `loops`: with several, its lines name the loop (the
/// acceptor puts the listener's address first), else three loops give three identical lines.
[[nodiscard]] inline accept_policy_config labelled(accept_policy_config config, unsigned t, unsigned loops) {
  if (loops > 1) {
    config.label += (config.label.empty() ? "loop " : " loop ") + std::to_string(t + 1) + "/" + std::to_string(loops);
  }
  return config;
}

/// stop() may run on any thread or in a signal handler while run() destroys the acceptors it
/// calls. It announces itself in `users` before looking at `finished`; run() sets `finished`,
/// then waits for `users` to drain before destroying. Sequentially consistent order on both
/// atomics makes one side see the other.
///
/// The wait sleeps on a futex. A sched_yield loop (and std::atomic::wait, which libstdc++ begins
/// with one) hands the processor to another process for a whole time slice on a loaded machine:
/// milliseconds, where the stopping thread needs microseconds. A futex wake is a plain system
/// call, so leave() stays safe in a signal handler.
class stop_gate {
 public:
  /// Announces a stop(); false (and nothing to do) once finish() has begun.
  bool enter() noexcept {
    users_.fetch_add(1);
    if (finished_.load()) {
      leave();
      return false;
    }
    return true;
  }
  /// Ends what enter() began.
  void leave() noexcept {
    if (users_.fetch_sub(1) == 1 && finished_.load()) {
      ::syscall(SYS_futex, &users_, FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
    }
  }
  /// Closes the gate and waits until no stop() is inside.
  void finish() noexcept {
    finished_.store(true);
    for (int n = users_.load(); n != 0; n = users_.load()) {
      ::syscall(SYS_futex, &users_, FUTEX_WAIT_PRIVATE, n, nullptr, nullptr, 0);  // returns at once if users moved
    }
  }

 private:
  std::atomic<bool> finished_{false};
  std::atomic<int> users_{0};
  static_assert(sizeof(std::atomic<int>) == sizeof(int) && std::atomic<int>::is_always_lock_free);
};

/// One loop: an acceptor per listener it watches, an epoll set if the driver needs one, and
/// the counters it last published for metrics() and health().
template <typename Acceptor>
struct server_loop {
  /// How often a loop publishes its counters.
  static constexpr auto snapshot_interval = std::chrono::milliseconds(100);

  unique_fd epoll;
  std::vector<Acceptor> acceptors;

  mutable std::mutex snapshot_mutex;  // guards the snapshots
  policy_metrics metrics;
  policy_health health;
  std::uint64_t submissions = 0;  // drivers whose acceptors count them (io_uring)
  std::chrono::steady_clock::time_point last_snapshot{};

  /// True once every acceptor is done.
  [[nodiscard]] bool finished() const {
    return std::ranges::all_of(acceptors, [](const Acceptor& a) { return a.done(); });
  }

  /// Publishes the acceptors' counters if the interval has passed (or `force`); true if it did.
  bool publish(std::chrono::steady_clock::time_point now, bool force) {
    if (!force && now - last_snapshot < snapshot_interval) {
      return false;
    }
    last_snapshot = now;
    policy_metrics m;
    policy_health worst;
    std::uint64_t sqes = 0;
    for (const Acceptor& a : acceptors) {
      m += a.metrics();
      if constexpr (requires { a.submissions(); }) {
        sqes += a.submissions();
      }
      const policy_health h = a.health();
      if (severity(h.state) > severity(worst.state)) {
        worst = h;
      }
    }
    const std::lock_guard lock(snapshot_mutex);
    metrics = m;
    health = worst;
    submissions = sqes;
    return true;
  }
};

/// The server over `Acceptor`s; `Driver` is the driver's server, derived from it (see the
/// file comment). Each public member is the one of transient::server of the same name.
template <typename Driver, typename Acceptor>
class server_core {
 public:
  /// A loop of this server.
  using loop = server_loop<Acceptor>;
  /// The clock of the loops.
  using clock = std::chrono::steady_clock;

  server_core(const server_core&) = delete;
  server_core& operator=(const server_core&) = delete;

  /// Stops the loops and waits until no stop() is inside before the acceptors go.
  ~server_core() {
    stop();
    gate_.finish();
  }

  stop_info run(std::error_code& ec) {
    if (ran_.exchange(true)) {
      ec = std::make_error_code(std::errc::invalid_argument);
      return {stop_reason::programming_error, ec, std::string(Driver::name) + "::run() called twice"};
    }
    std::vector<std::thread> threads;
    for (std::size_t i = 1; i < loops_.size(); ++i) {
      threads.emplace_back([this, i] { run_loop(*loops_[i]); });
    }
    run_loop(*loops_[0]);
    for (std::thread& t : threads) {
      t.join();
    }
    gate_.finish();
    // A policy failure (stall, dead listener) is the first acceptor's result that is not clean.
    for (const auto& l : loops_) {
      for (const Acceptor& a : l->acceptors) {
        if (a.result().error) {
          record_failure(a.result());
        }
      }
    }
    // Close what run() opened, and the listeners; keep the budget: live connections hold permits.
    for (const auto& l : loops_) {
      const std::lock_guard lock(l->snapshot_mutex);
      l->acceptors.clear();
      l->epoll.reset();
    }
    listeners_.clear();

    const std::lock_guard lock(mutex_);
    if (handler_exception_) {
      std::rethrow_exception(handler_exception_);
    }
    ec = failure_.error;
    return failure_;
  }

  stop_info run() {
    std::error_code ec;
    stop_info info = run(ec);
    if (ec) {
      throw std::system_error(ec, info.diagnosis.empty() ? std::string(to_string(info.reason)) : info.diagnosis);
    }
    return info;
  }

  void stop() noexcept {
    if (!gate_.enter()) {
      return;
    }
    // Before the listeners are shut down: the EINVAL that accept then returns is a clean stop.
    for (const auto& l : loops_) {
      for (Acceptor& a : l->acceptors) {
        Driver::request_stop(a);
      }
    }
    // shutdown(SHUT_RD) wakes a thread blocked in accept (close() does not; docs/errors.md). Our
    // loops never block in accept, but users may share the listener; and it ends listening.
    for (const auto& l : listeners_) {
      [[maybe_unused]] const std::error_code ec = l->shutdown_read();
    }
    // The loops are woken last: run() cannot return before this call leaves, so a loop woken
    // earlier would finish first and wait for the shutdowns above (on a loaded machine, for
    // this thread to be scheduled again).
    for (const auto& l : loops_) {
      for (Acceptor& a : l->acceptors) {
        a.stop();
      }
    }
    gate_.leave();
  }

  [[nodiscard]] policy_metrics metrics() const {
    policy_metrics total;
    for (const auto& l : loops_) {
      const std::lock_guard lock(l->snapshot_mutex);
      total += l->metrics;
    }
    total.live = budget_->budget().live();
    total.peak = budget_->budget().peak();
    total.max_connections = budget_->budget().max_connections();
    return total;
  }

  [[nodiscard]] policy_health health() const {
    policy_health worst;
    for (const auto& l : loops_) {
      const std::lock_guard lock(l->snapshot_mutex);
      if (severity(l->health.state) > severity(worst.state)) {
        worst = l->health;
      }
    }
    return worst;
  }

  /// Submission queue entries, summed over the loops' last snapshots (io_uring).
  [[nodiscard]] std::uint64_t submissions() const {
    std::uint64_t total = 0;
    for (const auto& l : loops_) {
      const std::lock_guard lock(l->snapshot_mutex);
      total += l->submissions;
    }
    return total;
  }

  [[nodiscard]] const connection_budget& budget() const noexcept { return budget_->budget(); }

  [[nodiscard]] std::vector<endpoint> local_endpoints() const {
    std::vector<endpoint> out;
    for (std::size_t i = 0; i < given_listeners_ && i < listeners_.size(); ++i) {
      out.push_back(listeners_[i]->local_endpoint());
    }
    return out;
  }

 protected:
  /// Checks the arguments (throws std::system_error as server::server says) and takes the
  /// listeners, opening the SO_REUSEPORT shards if asked; the driver then calls open_loops().
  server_core(std::vector<listener> listeners, connection_handler handler, server_options options)
      : handler_(std::move(handler)), options_(std::move(options)) {
    const std::string name(Driver::name);
    const auto invalid = std::make_error_code(std::errc::invalid_argument);
    if (listeners.empty() || !std::ranges::all_of(listeners, [](const listener& l) { return l.is_open(); })) {
      throw std::system_error(invalid, name + " needs at least one open listener");
    }
    if (options_.threads == 0) {
      throw std::system_error(invalid, name + " needs threads >= 1");
    }
    if (!handler_) {
      throw std::system_error(invalid, name + " needs a connection handler");
    }
    check_driver_options(name, options_.policy, static_cast<bool>(options_.refuse));
    Driver::check_supported();
    budget_ = shared_budget::create(options_.max_connections);

    given_listeners_ = listeners.size();
    shards_ = options_.reuse_port_shards && options_.threads > 1;
    for (const listener& l : listeners) {
      if (shards_ && !l.reuse_port()) {
        throw std::system_error(invalid, "reuse_port_shards needs listeners opened with SO_REUSEPORT (" +
                                             l.local_endpoint().to_string() + " was not)");
      }
    }
    for (listener& l : listeners) {
      listeners_.push_back(std::make_shared<const listener>(std::move(l)));
    }
    if (shards_) {
      listen_options shard_options;
      shard_options.reuse_port = true;
      for (unsigned t = 1; t < options_.threads; ++t) {
        for (std::size_t i = 0; i < given_listeners_; ++i) {
          listeners_.push_back(
              std::make_shared<const listener>(listen(listeners_[i]->local_endpoint(), shard_options)));
        }
      }
    }
  }

  /// Makes the loops, each with the driver's acceptors over its listeners (the given ones,
  /// shared by every loop, or its own shards).
  void open_loops() {
    acceptor_options settings;
    settings.budget = budget_;
    settings.refuse = options_.refuse;
    settings.emfile_reserve = options_.emfile_reserve;
    settings.peer_addresses = options_.peer_addresses;
    // A listener shared by several loops wakes only one of them per connection.
    settings.exclusive = options_.threads > 1 && !shards_;
    settings.open_diagnostics_reserve = false;
    if (options_.diagnostics_reserve) {
      std::error_code ignored;  // without it the census degrades, and says so
      settings.diagnostics = std::make_shared<const diagnostics_reserve>(diagnostics_reserve::open(ignored));
    }
    settings.sys = options_.sys;
    for (unsigned t = 0; t < options_.threads; ++t) {
      auto l = std::make_unique<loop>();
      std::vector<std::shared_ptr<const listener>> mine;
      for (std::size_t k = 0; k < given_listeners_; ++k) {
        mine.push_back(listeners_[shards_ ? t * given_listeners_ + k : k]);
      }
      settings.policy = labelled(options_.policy, t, options_.threads);
      static_cast<Driver&>(*this).add_acceptors(*l, mine, handler_, settings);
      loops_.push_back(std::move(l));
    }
  }

  /// The settings given.
  [[nodiscard]] const server_options& options() const noexcept { return options_; }

 private:
  // One loop, on its thread: the acceptors' earliest timer and the next snapshot bound each wait.
  void run_loop(loop& l) {
    try {
      bool dirty = true;  // counters changed since the last snapshot
      while (!l.finished()) {
        const auto now = clock::now();
        int timeout = -1;
        for (const Acceptor& a : l.acceptors) {
          timeout = earliest(timeout, a.timeout_ms(now));
        }
        if (dirty) {  // wake once more to publish the counters, even if nothing else happens
          timeout = earliest(timeout, ms_until(now, l.last_snapshot + loop::snapshot_interval));
        }
        std::error_code ec;
        const int n = static_cast<Driver&>(*this).wait(l, timeout, ec);
        if (ec) {
          record_failure({stop_reason_of(ec), ec, "epoll_wait failed: " + ec.message()});
        }
        for (const Acceptor& a : l.acceptors) {
          if (a.done() && a.result().error) {
            record_failure(a.result());  // a failed listener (stall, dead listener) stops the server
          }
        }
        dirty = !l.publish(clock::now(), false) && (dirty || n > 0);
      }
    } catch (...) {
      // The acceptor that called the handler has stopped itself; stop the others of this loop.
      record_failure({stop_reason::other_error, std::make_error_code(std::errc::operation_canceled),
                      std::string(handler_threw_text())},
                     std::current_exception());
      const auto now = clock::now();
      for (Acceptor& a : l.acceptors) {
        a.stop();
        try {
          a.on_time(now);  // takes the stop request
        } catch (...) {    // a stopping acceptor calls no handler
        }
      }
    }
    l.publish(clock::now(), true);
  }

  void record_failure(stop_info info, std::exception_ptr exception = nullptr) {
    {
      const std::lock_guard lock(mutex_);
      if (!failure_.error && !handler_exception_) {
        failure_ = std::move(info);
        handler_exception_ = std::move(exception);
      }
    }
    stop();
  }

  // The caller's listeners, then the shards the server opened; shared with the acceptors.
  std::vector<std::shared_ptr<const listener>> listeners_;
  std::size_t given_listeners_ = 0;  // how many of listeners_ the caller gave
  bool shards_ = false;
  connection_handler handler_;
  server_options options_;
  // The budget all loops share. Connections share its ownership, so a connection may outlive
  // the server.
  std::shared_ptr<shared_budget> budget_;
  stop_gate gate_;
  std::vector<std::unique_ptr<loop>> loops_;
  std::atomic<bool> ran_{false};

  mutable std::mutex mutex_;  // guards what follows
  stop_info failure_;
  std::exception_ptr handler_exception_;
};

}  // namespace transient::detail
