// The epoll server's private parts, shared by server.cpp (set-up, stop, run, metrics) and
// server_loop.cpp (what one loop does: wait, carry out its policies' decisions, shed).
#pragma once

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "transient/server.hpp"

namespace transient {
namespace detail {

/// The epoll data of a loop's eventfd; a listener's is its watch's index.
inline constexpr std::uint64_t wake_token = std::numeric_limits<std::uint64_t>::max();

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

}  // namespace detail

// One listener as one loop watches it.
struct server::watch {
  int fd = -1;
  std::size_t index = 0;  // in server::listeners_
  std::unique_ptr<accept_policy> policy;
  bool armed = false;  // in the epoll set
  bool timed = false;  // paused until `until`
  bool done = false;   // the policy stopped
  std::chrono::steady_clock::time_point until{};
};

// stop() and wake-ups may run on any thread (a wake-up: wherever a permit is released, even
// after the server is gone), or in a signal handler, while run() closes the descriptors they
// write to. Each announces itself in `users` before looking at `finished`; run() sets
// `finished`, then waits for `users` to drain before closing. Sequentially consistent order
// on both atomics makes one side see the other.
struct server::shared {
  shared(std::uint64_t max, std::uint64_t fd_limit) : budget(max, fd_limit) {}

  connection_budget budget;
  std::vector<int> wake_fds;  // the loops' eventfds (owned by the loops)
  std::atomic<bool> finished{false};
  std::atomic<int> users{0};

  bool enter() noexcept {
    users.fetch_add(1);
    if (finished.load()) {
      users.fetch_sub(1);
      return false;
    }
    return true;
  }
  void leave() noexcept { users.fetch_sub(1); }
  void finish() noexcept {
    finished.store(true);
    while (users.load() != 0) {
      std::this_thread::yield();
    }
  }
  void wake() noexcept {
    if (!enter()) {
      return;
    }
    const std::uint64_t one = 1;
    for (const int fd : wake_fds) {
      // An eventfd write fails only if the counter would overflow: then it is already set.
      [[maybe_unused]] const ssize_t n = ::write(fd, &one, sizeof one);
    }
    leave();
  }
};

struct server::loop {
  unique_fd epoll;
  unique_fd wake;  // eventfd: permit releases while paused, and stop()
  std::vector<watch> watches;
  bool wants_reserve = false;  // emfile_reserve, for a shed mode that is not queue
  unique_fd emfile_reserve;
  std::error_code last_accept_error;  // what exhausted us, for the diagnosis

  mutable std::mutex snapshot_mutex;  // guards the two snapshots
  policy_metrics metrics;
  policy_health health;
  std::chrono::steady_clock::time_point last_snapshot{};

  [[nodiscard]] bool finished() const {
    return std::ranges::all_of(watches, [](const watch& w) { return w.done; });
  }
};

}  // namespace transient
