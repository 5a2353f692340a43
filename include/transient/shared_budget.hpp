// transient/shared_budget.hpp: a connection budget shared by several accept loops (epoll
// acceptors, Asio loops, any driver), and how a permit released on any thread wakes the loops
// paused on it.
//
// connection_budget calls one waker, and only when some loop is paused (so a release on a
// busy server costs one atomic add). The loops sharing a budget register here as
// release_listeners; the waker tells each registered loop. A listener only *signals* its loop
// (an eventfd write, a post to a strand): a permit may be released on any thread, and a loop's
// state is touched only on its own thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <system_error>
#include <utility>
#include <vector>

#include "transient/budget_fit.hpp"
#include "transient/connection_budget.hpp"

namespace transient {

/// A loop that a permit release may wake. Implemented by each driver's loop state.
class release_listener {
 public:
  /// A permit was released while some loop waited: signal the loop (eventfd write, post).
  /// Called on the releasing thread; must be thread-safe and must not throw.
  virtual void on_permit_released() noexcept = 0;
  /// Virtual: a loop's state is destroyed through whatever pointer held it last.
  virtual ~release_listener() = default;

 protected:
  release_listener() = default;
  release_listener(const release_listener&) = default;
  release_listener& operator=(const release_listener&) = default;
  release_listener(release_listener&&) = default;
  release_listener& operator=(release_listener&&) = default;
};

/// A connection budget for one or more accept loops. Each loop draws a permit for each
/// connection it accepts; a release (on any thread) wakes the loops paused on the budget.
/// Held by std::shared_ptr: the loops and every permit keep it alive, so connections may
/// outlive the loop that accepted them.
class shared_budget : public connection_budget {
  struct private_tag {};

 public:
  /// A budget of `max_connections` places (0: default_max_connections(), i.e. RLIMIT_NOFILE
  /// minus a reserve). Throws std::system_error if the limit cannot be read or leaves no room,
  /// or (invalid_argument) if max_connections exceeds connection_budget::max_limit.
  [[nodiscard]] static std::shared_ptr<shared_budget> create(std::uint64_t max_connections = 0) {
    std::error_code ec;
    const std::uint64_t fd_limit = fd_soft_limit(ec);
    const std::uint64_t max = max_connections != 0 ? max_connections : default_max_connections();
    auto budget = std::make_shared<shared_budget>(private_tag{}, max, fd_limit);
    budget->keep_alive_with(budget);
    return budget;
  }

  /// Use create().
  shared_budget(private_tag /*unused*/, std::uint64_t max_connections, std::uint64_t fd_limit)
      : connection_budget(max_connections, fd_limit) {
    set_waker({&shared_budget::wake, this});
  }
  shared_budget(const shared_budget&) = delete;
  shared_budget& operator=(const shared_budget&) = delete;
  ~shared_budget() = default;

  /// The budget (thread-safe queries: live(), peak(), max_connections()).
  [[nodiscard]] connection_budget& budget() noexcept { return *this; }
  /// The budget (thread-safe queries: live(), peak(), max_connections()).
  [[nodiscard]] const connection_budget& budget() const noexcept { return *this; }

  /// The first loop built on this budget warns (through `sink`) if the budget is more than
  /// the descriptors the process can still open (budget_fit.hpp); later loops do nothing.
  void check_fit_once(const policy_event_sink& sink) noexcept {
    if (!fit_checked_.test_and_set()) {
      static_cast<void>(warn_if_budget_does_not_fit(max_connections(), sink));
    }
  }

  /// Registers a loop to be woken by releases (done by the loop when it starts). Throws
  /// std::bad_alloc.
  void add(const release_listener* key, std::weak_ptr<release_listener> loop) {
    const std::lock_guard lock(mutex_);
    loops_.emplace_back(key, std::move(loop));
  }

  /// Unregisters a loop (done by the loop when it stops, and when it is destroyed).
  void remove(const release_listener* key) noexcept {
    const std::lock_guard lock(mutex_);
    std::erase_if(loops_, [key](const auto& entry) { return entry.first == key; });
  }

 private:
  // The budget's waker: runs on the releasing thread, only when some loop is paused. The
  // strong references are taken under the lock and dropped after it: dropping the last one
  // destroys a loop, whose destructor takes the lock to unregister.
  static void wake(void* context) noexcept {
    auto& self = *static_cast<shared_budget*>(context);
    std::vector<std::shared_ptr<release_listener>> targets;
    try {
      const std::lock_guard lock(self.mutex_);
      targets.reserve(self.loops_.size());
      for (const auto& entry : self.loops_) {
        if (auto loop = entry.second.lock()) {
          targets.push_back(std::move(loop));
        }
      }
    } catch (...) {
      // Out of memory: the wake-up is lost; the paused loops still wake on their timers
      // (backoff deadline, or a driver's periodic check) and see the release then.
      return;
    }
    for (const auto& loop : targets) {
      loop->on_permit_released();
    }
  }

  std::atomic_flag fit_checked_;  // check_fit_once ran
  std::mutex mutex_;              // guards loops_
  std::vector<std::pair<const release_listener*, std::weak_ptr<release_listener>>> loops_;
};

}  // namespace transient
