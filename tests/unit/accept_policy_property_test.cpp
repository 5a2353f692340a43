// Property test: a seeded generator drives two accept policies sharing one budget with
// random events (errnos from docs/errors.md, accepts, releases, timers, readiness, stop), each
// loop as a readiness driver or a completion driver (on_accept_result, on_accept_parked), each
// event one its state expects (docs/acceptor.md), and checks the invariants after every step:
//  - no event is unexpected (error::unexpected_event): the table and its rules agree;
//  - live <= budget, and live == permits held + accepts in flight (permits never leak);
//  - no lost wake-up: after the wake-ups are delivered, no loop is paused for a release
//    while the budget has room;
//  - while every accept fails with a back_off errno, "accept" decisions per simulated
//    second are bounded (no spin);
//  - a fail errno stops within one decision; after a stop, every event answers the same stop;
//  - once stopped and all permits are released, live == 0;
//  - no connection that waited longer than max_queue_wait in the accept queue holds a permit.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <vector>

#include "transient/errors/errors.hpp"
#include "transient/policy/accept_policy.hpp"

namespace transient {
namespace {

using namespace std::chrono_literals;
using time_point = accept_policy::time_point;

constexpr std::uint64_t min_events = 300'000;

std::error_code sys(int e) { return {e, std::system_category()}; }

// Errnos from docs/errors.md's accept column, by verdict.
const int skip_errnos[] = {ECONNABORTED, EPROTO, ENOPROTOOPT, ENETDOWN, ENETUNREACH, EHOSTDOWN,
                           EHOSTUNREACH, ENONET, EPERM,       EACCES,   ECONNRESET};
const int back_off_errnos[] = {EMFILE, ENFILE, ENOBUFS, ENOMEM, EIO /* unclassified: back off */};
const int fail_errnos[] = {EBADF, ENOTSOCK, EFAULT, EINVAL, EOPNOTSUPP};

struct loop {
  std::unique_ptr<accept_policy> policy;
  decision current;
  bool completion = false;  // a completion driver: results imply readiness
  bool stop_requested = false;
  // For the no-spin check: releases seen when the last accept was decided, and the last
  // back_off failure (when, and how many releases there had been when its accept was decided).
  std::uint64_t releases_at_accept = 0;
  bool backed_off = false;
  time_point failed_at{};
  std::uint64_t releases_before_failure = 0;
};

// The accept decisions and releases within one simulated second of an exhaustion phase.
struct exhaustion_window {
  time_point start{};
  std::uint64_t accepts = 0;
  std::uint64_t releases = 0;

  void restart(time_point now) {
    start = now;
    accepts = 0;
    releases = 0;
  }
};

class world {
 public:
  explicit world(std::uint64_t seed) : rng_(seed) {}

  void run_until(std::uint64_t events) {
    while (events_ < events) {
      run_episode();
    }
  }
  [[nodiscard]] std::uint64_t events() const { return events_; }
  [[nodiscard]] std::uint64_t episodes() const { return episodes_; }
  [[nodiscard]] std::uint64_t stalls() const { return stalls_; }
  [[nodiscard]] std::uint64_t max_accepts_per_second() const { return max_per_second_; }

 private:
  std::uint64_t pick(std::uint64_t n) { return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(rng_); }
  bool chance(double p) { return std::bernoulli_distribution(p)(rng_); }
  template <std::size_t N>
  int one_of(const int (&values)[N]) {
    return values[pick(N)];
  }

  void run_episode() {
    ++episodes_;
    const std::uint64_t max = 1 + pick(12);
    budget_ = std::make_unique<connection_budget>(max);
    budget_->set_waker({[](void* self) noexcept { static_cast<world*>(self)->wake_ = true; }, this});
    accept_policy_config config;
    config.seed = 1 + pick(1000);
    config.accepts_per_ready = static_cast<std::uint32_t>(1 + pick(8));
    config.stall_timeout = std::chrono::milliseconds(pick(3) == 0 ? 0 : 2000 + pick(30000));
    config.backoff.mode = static_cast<jitter>(pick(3));
    config.shed = pick(4) == 0 ? shed_mode::close : shed_mode::queue;
    config.sink = [](const policy_event&) {};
    config.max_queue_wait = pick(3) == 0 ? 0ms : std::chrono::milliseconds(1 + pick(100));
    config.stale_shed = static_cast<shed_mode>(1 + pick(3));  // close, reset or respond
    max_queue_wait_ = config.max_queue_wait;
    for (auto& l : loops_) {
      l.policy = std::make_unique<accept_policy>(*budget_, config);
      l.current = l.policy->current();
      l.completion = chance(0.5);
      l.stop_requested = false;
      l.backed_off = false;
    }
    exhaustion_ = false;
    const std::uint64_t length = 200 + pick(3000);
    for (std::uint64_t i = 0; i < length && !all_stopped(); ++i) {
      if (pick(300) == 0) {
        exhaustion_ = !exhaustion_;  // phases where every accept fails with a back_off errno
        window_.restart(now_);
      }
      step(loops_[pick(loops_.size())]);
      deliver_wakes();
      check();
    }
    // Stop both loops, release everything: nothing may remain.
    for (auto& l : loops_) {
      l.current = l.policy->on_stop(now_);
      ++events_;
      ASSERT_TRUE(l.current.next == step::stop || l.current.next == step::fail);
    }
    check();
    held_.clear();
    ASSERT_EQ(budget_->live(), 0U) << "permits leaked";
    for (auto& l : loops_) {
      l.policy.reset();
    }
    ASSERT_EQ(budget_->waiters(), 0U);
  }

  bool all_stopped() const {
    return std::all_of(loops_.begin(), loops_.end(),
                       [](const loop& l) { return l.current.next == step::stop || l.current.next == step::fail; });
  }

  void step(loop& l) {
    accept_policy& p = *l.policy;
    const decision before = l.current;
    const bool stopped = before.next == step::stop || before.next == step::fail;
    decision d;
    bool outcome = false;
    const std::uint64_t dice = pick(100);
    if (dice < 12 && !held_.empty()) {  // a connection ends (any loop's, as on a shared budget)
      const std::size_t victim = pick(held_.size());
      std::swap(held_[victim], held_.back());
      held_.pop_back();
      ++window_.releases;
      ++releases_;
      d = p.on_release(now_);  // harmless even without a wake-up
    } else if (dice < 13 && pick(8) == 0) {
      l.stop_requested = true;
      if (chance(0.5) && before.next == step::wait && !l.completion) {
        p.request_stop();
        d = p.on_ready(now_);
      } else {
        d = p.on_stop(now_);
      }
    } else if (dice < 18 && (before.next == step::wait || before.next == step::pause_until || stopped)) {
      now_ += std::chrono::microseconds(pick(2000));
      d = p.on_timer(now_);  // often early
    } else if (before.next == step::accept || before.next == step::shed) {
      d = accept_outcome(l);
      outcome = true;
    } else if (before.next == step::pause_until) {
      now_ = std::max(now_, before.until);
      d = p.on_timer(now_);
    } else if (before.next == step::pause_for_release) {
      d = p.on_release(now_);  // a wake-up for another loop's pause: harmless
    } else if (l.completion && before.next == step::wait) {
      now_ += std::chrono::microseconds(pick(5000));
      d = accept_outcome(l);  // the armed request's result: the listener was ready
      outcome = true;
    } else {  // wait, stop: time passes, the listener becomes readable
      now_ += std::chrono::microseconds(pick(5000));
      d = p.on_ready(now_);
    }
    ++events_;
    ASSERT_NE(d.error, make_error_code(error::unexpected_event)) << "an event its state expects";
    if (stopped) {
      ASSERT_EQ(d.next, before.next) << "nothing after a stop but the stop";
      ASSERT_EQ(d.error, before.error);
    }
    l.current = d;
    count_accept(l, before, d, outcome);
  }

  decision accept_outcome(loop& l) {
    accept_policy& p = *l.policy;
    const bool shedding = l.current.next == step::shed;
    if (!exhaustion_ && chance(0.55)) {
      permit out;
      const auto waited = std::chrono::milliseconds(pick(150));
      const decision d =
          l.completion ? p.on_accept_result(now_, out, {}, waited) : p.on_accepted(now_, out, {}, waited);
      EXPECT_EQ(static_cast<bool>(out), !d.shed_accepted);
      if (max_queue_wait_.count() > 0 && waited > max_queue_wait_) {
        EXPECT_FALSE(out) << "a stale connection holds a permit";
      }
      EXPECT_TRUE(!shedding || d.shed_accepted) << "a shed accept is never served";
      if (out) {
        held_.push_back(std::move(out));
      }
      return d;
    }
    int e = 0;
    int kind = 0;
    if (exhaustion_) {
      e = one_of(back_off_errnos);
      kind = 2;
    } else {
      const std::uint64_t r = pick(100);
      kind = r < 40 ? 0 : r < 55 ? 1 : r < 99 ? 2 : 3;
      e = kind == 0   ? EAGAIN
          : kind == 1 ? one_of(skip_errnos)
          : kind == 2 ? one_of(back_off_errnos)
                      : one_of(fail_errnos);
      if (kind == 1 && pick(5) == 0) {
        e = EINTR;
      }
    }
    const bool parked = l.completion && e == EAGAIN && l.current.next != step::wait;
    const decision d = parked         ? p.on_accept_parked(now_)
                       : l.completion ? p.on_accept_result(now_, sys(e))
                                      : p.on_accept_failed(now_, sys(e));
    if (kind == 2) {
      l.backed_off = true;
      l.failed_at = now_;
      l.releases_before_failure = l.releases_at_accept;
    }
    if (kind == 3) {  // fail errors stop within one decision
      if (l.stop_requested) {
        EXPECT_EQ(d.next, step::stop);
      } else {
        EXPECT_EQ(d.next, step::fail) << e;
        EXPECT_TRUE(d.error);
      }
    }
    if (d.next == step::fail && d.error == condition::stalled) {
      ++stalls_;
    }
    return d;
  }

  // `outcome`: the event reported the result of the previous accept. An accept decision
  // merely repeated (another event came before the loop acted on it) is not a new one.
  void count_accept(loop& l, const decision& before, const decision& d, bool outcome) {
    if (d.next == step::accept && (before.next != step::accept || outcome)) {
      // No spin: after a back_off failure, the next accept comes after at least the
      // smallest backoff delay (equal jitter: half of 1 ms) or after a release.
      if (l.backed_off) {
        ASSERT_TRUE(now_ - l.failed_at >= 500us || releases_ != l.releases_before_failure)
            << "accept again " << (now_ - l.failed_at).count() << " ns after a back_off failure, with no release";
      }
      l.backed_off = false;
      l.releases_at_accept = releases_;
    }
    if (!exhaustion_) {
      return;
    }
    if (now_ - window_.start >= 1s) {
      window_.restart(now_);
    }
    if (d.next == step::accept) {
      ++window_.accepts;
      max_per_second_ = std::max(max_per_second_, window_.accepts);
      // Backoff delays never go below 1 ms, and every other resume consumes a release.
      ASSERT_LE(window_.accepts, 1000U + window_.releases) << "accept decisions spin while exhausted";
    }
  }

  // The driver delivers the waker's signal to every paused loop.
  void deliver_wakes() {
    while (wake_) {
      wake_ = false;
      for (auto& l : loops_) {
        if (l.current.next == step::pause_for_release || l.current.next == step::pause_until) {
          const decision before = l.current;
          l.current = l.policy->on_release(now_);
          ++events_;
          count_accept(l, before, l.current, false);
        }
      }
    }
  }

  void check() {
    const std::uint64_t in_flight = static_cast<std::uint64_t>(
        std::count_if(loops_.begin(), loops_.end(), [](const loop& l) { return l.current.next == step::accept; }));
    ASSERT_LE(budget_->live(), budget_->max_connections());
    // Every connection holds a place; every place is a connection or an accept in flight. An
    // accept in flight may hold none: a shedding loop at a budget full only because of other
    // loops' accepts in flight takes its place when its connection arrives.
    ASSERT_GE(budget_->live(), held_.size()) << "a connection without a place";
    ASSERT_LE(budget_->live(), held_.size() + in_flight) << "every place is a permit or an accept in flight";
    for (const auto& l : loops_) {
      if (l.current.next == step::pause_for_release) {
        ASSERT_EQ(budget_->live(), budget_->max_connections()) << "paused for a release that already happened";
      }
    }
  }

  std::mt19937_64 rng_;
  std::unique_ptr<connection_budget> budget_;
  std::array<loop, 2> loops_;
  std::vector<permit> held_;
  time_point now_ = time_point{} + 1000h;
  bool wake_ = false;
  bool exhaustion_ = false;
  std::chrono::milliseconds max_queue_wait_{};  // of this episode's policies (0: no bound)
  exhaustion_window window_;
  std::uint64_t releases_ = 0;
  std::uint64_t max_per_second_ = 0;
  std::uint64_t events_ = 0;
  std::uint64_t episodes_ = 0;
  std::uint64_t stalls_ = 0;
};

TEST(AcceptPolicyProperty, InvariantsHoldForRandomEventStreams) {
  const auto start = std::chrono::steady_clock::now();
  world w(20240611);
  w.run_until(min_events);
  const auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(w.events(), min_events);
  EXPECT_GT(w.stalls(), 0U) << "the generator reaches the watchdog";
  std::printf(
      "%llu events in %llu episodes, %.3f s; %llu watchdog stops; at most %llu accepts per simulated "
      "second while exhausted\n",
      static_cast<unsigned long long>(w.events()), static_cast<unsigned long long>(w.episodes()), elapsed,
      static_cast<unsigned long long>(w.stalls()), static_cast<unsigned long long>(w.max_accepts_per_second()));
  RecordProperty("events", static_cast<int>(w.events()));
}

}  // namespace
}  // namespace transient
