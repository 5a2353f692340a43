// The epoll server's private parts, shared by server.cpp (set-up, stop, run, metrics) and
// server_loop.cpp (what one loop does: wait and pass each event to its acceptors).
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "transient/server.hpp"

namespace transient {
namespace detail {

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

}  // namespace detail

// stop() may run on any thread or in a signal handler while run() destroys the acceptors it
// calls. It announces itself in `users` before looking at `finished`; run() sets `finished`,
// then waits for `users` to drain before destroying. Sequentially consistent order on both
// atomics makes one side see the other.
//
// The wait sleeps on a futex. A sched_yield loop (and std::atomic::wait, which libstdc++ begins
// with one) hands the processor to another process for a whole time slice on a loaded machine:
// milliseconds, where the stopping thread needs microseconds. A futex wake is a plain system
// call, so leave() stays safe in a signal handler.
struct server::shared {
  std::atomic<bool> finished{false};
  std::atomic<int> users{0};
  static_assert(sizeof(std::atomic<int>) == sizeof(int) && std::atomic<int>::is_always_lock_free);

  bool enter() noexcept {
    users.fetch_add(1);
    if (finished.load()) {
      leave();
      return false;
    }
    return true;
  }
  void leave() noexcept {
    if (users.fetch_sub(1) == 1 && finished.load()) {
      ::syscall(SYS_futex, &users, FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
    }
  }
  void finish() noexcept {
    finished.store(true);
    for (int n = users.load(); n != 0; n = users.load()) {
      ::syscall(SYS_futex, &users, FUTEX_WAIT_PRIVATE, n, nullptr, nullptr, 0);  // returns at once if users moved
    }
  }
};

// One loop: an epoll set and an acceptor per listener it watches.
struct server::loop {
  unique_fd epoll;
  std::vector<acceptor> acceptors;

  mutable std::mutex snapshot_mutex;  // guards the two snapshots
  policy_metrics metrics;
  policy_health health;
  std::chrono::steady_clock::time_point last_snapshot{};

  [[nodiscard]] bool finished() const {
    return std::ranges::all_of(acceptors, [](const acceptor& a) { return a.done(); });
  }
};

}  // namespace transient
