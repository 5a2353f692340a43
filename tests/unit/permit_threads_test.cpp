// ctest-labels: threads
// Permits released from many threads while loop threads feed their policies events: the
// budget stays within bounds, no wake-up is lost, nothing leaks. Run under TSan in CI.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "transient/policy/accept_policy.hpp"

namespace transient {
namespace {

using namespace std::chrono_literals;

constexpr int loop_count = 2;
constexpr int releaser_count = 6;
constexpr int connections_per_loop = 20000;
constexpr std::uint64_t max_connections = 16;

struct shared_state {
  connection_budget budget{max_connections};
  std::atomic<std::uint64_t> wake_sequence{0};
  std::atomic<std::uint64_t> wakes{0};
  std::atomic<std::uint64_t> wake_reports{0};
  std::atomic<bool> over_budget{false};
  std::atomic<int> loops_running{loop_count};
  std::mutex mutex;
  std::deque<permit> open;  // connections waiting for a releaser
};

void wake(void* context) noexcept {
  auto* s = static_cast<shared_state*>(context);
  s->wakes.fetch_add(1, std::memory_order_relaxed);
  s->wake_sequence.fetch_add(1, std::memory_order_release);
}

// Waits (bounded) until the wake sequence moves past `seen`; false on timeout.
bool wait_for_wake(shared_state& s, std::uint64_t seen, std::chrono::steady_clock::duration limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (s.wake_sequence.load(std::memory_order_acquire) == seen) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(20us);
  }
  return true;
}

struct loop_result {
  int accepted = 0;
  int pauses = 0;
  bool lost_wake = false;
  step last = step::wait;
};

void run_loop(shared_state& s, int index, loop_result& result) {
  accept_policy_config config;
  config.seed = static_cast<std::uint64_t>(index + 1);
  config.stall_timeout = 0ms;
  config.sink = [](const policy_event&) {};
  accept_policy policy(s.budget, config);
  auto now = std::chrono::steady_clock::time_point{} + 1h;  // a fake clock, advanced by hand
  std::uint64_t n = 0;
  std::uint64_t seen = s.wake_sequence.load(std::memory_order_acquire);
  decision d = policy.on_ready(now);
  while (result.accepted < connections_per_loop) {
    switch (d.next) {
      case step::accept: {
        ++n;
        seen = s.wake_sequence.load(std::memory_order_acquire);  // before the event that may pause
        if (n % 97 == 0) {
          d = policy.on_accept_failed(now, {EMFILE, std::system_category()});
        } else if (n % 13 == 0) {
          d = policy.on_accept_failed(now, {EAGAIN, std::system_category()});
        } else {
          permit p;
          d = policy.on_accepted(now, p);
          EXPECT_TRUE(p);
          ++result.accepted;
          std::lock_guard lock(s.mutex);
          s.open.push_back(std::move(p));
        }
        if (s.budget.live() > max_connections) {
          s.over_budget.store(true);
        }
        break;
      }
      case step::wait:
        now += 10us;
        seen = s.wake_sequence.load(std::memory_order_acquire);
        d = policy.on_ready(now);
        break;
      case step::pause_for_release:
        ++result.pauses;
        if (!wait_for_wake(s, seen, 10s)) {  // a lost wake-up would hang here
          result.lost_wake = true;
          result.last = d.next;
          return;
        }
        s.wake_reports.fetch_add(1, std::memory_order_relaxed);
        seen = s.wake_sequence.load(std::memory_order_acquire);
        d = policy.on_release(now);
        break;
      case step::pause_until:
        ++result.pauses;
        // Either a release ends the pause, or (briefly, in real time) the timer does.
        if (wait_for_wake(s, seen, 200us)) {
          seen = s.wake_sequence.load(std::memory_order_acquire);
          d = policy.on_release(now);
        } else {
          now = d.until;
          seen = s.wake_sequence.load(std::memory_order_acquire);
          d = policy.on_timer(now);
        }
        break;
      default: result.last = d.next; return;
    }
  }
  result.last = policy.on_stop(now).next;
}

TEST(PermitThreads, ReleasesFromManyThreadsWakePausedLoopsAndLeakNothing) {
  shared_state s;
  s.budget.set_waker({&wake, &s});
  std::vector<loop_result> results(loop_count);
  std::vector<std::thread> threads;
  for (int i = 0; i < releaser_count; ++i) {
    threads.emplace_back([&s] {
      for (;;) {
        permit p;
        {
          std::lock_guard lock(s.mutex);
          if (!s.open.empty()) {
            p = std::move(s.open.front());
            s.open.pop_front();
          }
        }
        if (p) {
          p.release();  // the waker runs on this thread when a loop is paused
        } else if (s.loops_running.load() == 0) {
          return;
        } else {
          std::this_thread::yield();
        }
      }
    });
  }
  std::vector<std::thread> loops;
  for (int i = 0; i < loop_count; ++i) {
    loops.emplace_back([&s, &results, i] {
      run_loop(s, i, results[static_cast<std::size_t>(i)]);
      s.loops_running.fetch_sub(1);
    });
  }
  for (auto& t : loops) {
    t.join();
  }
  for (auto& t : threads) {
    t.join();
  }
  for (const auto& r : results) {
    EXPECT_FALSE(r.lost_wake) << "a loop paused for a release was never woken";
    EXPECT_EQ(r.accepted, connections_per_loop);
    EXPECT_EQ(r.last, step::stop);
    EXPECT_GT(r.pauses, 0) << "the budget of 16 was reached";
  }
  EXPECT_FALSE(s.over_budget.load());
  EXPECT_EQ(s.budget.live(), 0U);
  EXPECT_EQ(s.budget.waiters(), 0U);
  EXPECT_GT(s.wakes.load(), 0U);
  EXPECT_LE(s.budget.peak(), max_connections);
}

}  // namespace
}  // namespace transient
