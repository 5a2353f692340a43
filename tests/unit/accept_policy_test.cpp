// The accept policy, as a specification: event in, decision out, time advanced.
// A fake clock (a time point the test moves) and scripted errno values; no sockets.
#include "transient/policy/accept_policy.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <memory>
#include <optional>
#include <type_traits>
#include <vector>

#include "support/exhausted_policy.hpp"
#include "transient/errors/errors.hpp"

namespace transient {
namespace {

using namespace std::chrono_literals;
using time_point = accept_policy::time_point;

std::error_code sys(int e) { return {e, std::system_category()}; }

peer_key v4(const char* text) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  EXPECT_EQ(inet_pton(AF_INET, text, &a.sin_addr), 1);
  return peer_key_of(reinterpret_cast<const sockaddr*>(&a), sizeof a);
}

// An event of `kind` about EMFILE (process_fd_limit), with `live` connections of
// `max_connections` under an fd limit of `fd_limit`.
policy_event emfile_event(policy_event_kind kind, std::uint64_t live, std::uint64_t max_connections,
                          std::uint64_t fd_limit) {
  policy_event e;
  e.kind = kind;
  e.cause = condition::process_fd_limit;
  e.error = sys(EMFILE);
  e.live = live;
  e.max_connections = max_connections;
  e.fd_limit = fd_limit;
  return e;
}

// A policy on a fake clock, with events captured and deterministic delays (no jitter).
class PolicySpec : public ::testing::Test {
 protected:
  time_point now = time_point{} + 1000h;
  std::vector<policy_event> events;

  accept_policy_config config() {
    accept_policy_config c;
    c.backoff.mode = jitter::none;
    c.seed = 1;
    c.sink = [this](const policy_event& e) { events.push_back(e); };
    return c;
  }
  void advance(std::chrono::nanoseconds d) { now += d; }
  // A policy with `c` over a budget of `max_connections` (budget()), told that the listener is
  // ready: its first decision is accept.
  accept_policy& ready_policy(std::uint64_t max_connections, const accept_policy_config& c) {
    budget_.emplace(max_connections);
    policy_.emplace(*budget_, c);
    EXPECT_EQ(policy_->on_ready(now).next, step::accept);
    return *policy_;
  }
  connection_budget& budget() { return *budget_; }
  // Counts the wake-ups of `budget` (the waker a driver installs), by default the one of
  // ready_policy(), in `wakes`.
  void count_wakes(connection_budget& budget) {
    budget.set_waker({[](void* n) noexcept { ++*static_cast<int*>(n); }, &wakes});
  }
  void count_wakes() { count_wakes(*budget_); }
  // A ready policy over a budget of 10, its wake-ups counted, that accepted a connection into
  // `p` and asks to accept again.
  accept_policy& serving_one(permit& p) {
    accept_policy& policy = ready_policy(10, config());
    count_wakes();
    EXPECT_EQ(policy.on_accepted(now, p).next, step::accept);
    return policy;
  }
  // Tells `policy` the listener is ready and has it accept two connections from 10.0.0.1 into
  // `a1` and `a2`, neither shed.
  void accept_two_from_one_peer(accept_policy& policy, permit& a1, permit& a2) {
    ASSERT_EQ(policy.on_ready(now).next, step::accept);
    ASSERT_FALSE(policy.on_accepted(now, a1, v4("10.0.0.1")).shed_accepted);
    ASSERT_FALSE(policy.on_accepted(now, a2, v4("10.0.0.1")).shed_accepted);
  }
  int wakes = 0;
  int count(policy_event_kind kind) const {
    int n = 0;
    for (const auto& e : events) {
      n += e.kind == kind ? 1 : 0;
    }
    return n;
  }

 private:
  std::optional<connection_budget> budget_;
  std::optional<accept_policy> policy_;
};

TEST_F(PolicySpec, DecisionsArePlainValues) {
  static_assert(std::is_trivially_copyable_v<decision>);
  static_assert(std::is_nothrow_move_constructible_v<permit>);
  static_assert(!std::is_copy_constructible_v<permit>);
}

TEST_F(PolicySpec, ReadyWithRoomDecidesAccept) {
  connection_budget budget(10);
  accept_policy policy(budget, config());
  EXPECT_EQ(policy.current().next, step::wait);
  EXPECT_EQ(policy.on_ready(now).next, step::accept);
  EXPECT_EQ(budget.live(), 1U) << "the place is reserved before accept";
}

TEST_F(PolicySpec, AcceptedConnectionGetsAPermitAndTheLoopAcceptsAgain) {
  accept_policy& policy = ready_policy(10, config());
  permit p;
  const decision d = policy.on_accepted(now, p);
  EXPECT_TRUE(p);
  EXPECT_FALSE(d.shed_accepted);
  EXPECT_EQ(d.next, step::accept);
  EXPECT_EQ(budget().live(), 2U) << "one connection, one reservation for the next accept";
  EXPECT_EQ(policy.metrics().accepted, 1U);
}

TEST_F(PolicySpec, PeakCountsConnectionsNotTheAcceptInFlight) {
  accept_policy& policy = ready_policy(10, config());
  EXPECT_EQ(policy.metrics().peak, 0U) << "a reservation is not a connection";
  {
    permit p;
    ASSERT_EQ(policy.on_accepted(now, p).next, step::accept);
    ASSERT_EQ(policy.on_accept_failed(now, sys(EAGAIN)).next, step::wait);
    EXPECT_EQ(policy.metrics().peak, 1U) << "one request, one connection (the accept after it held a place too)";
    ASSERT_EQ(policy.on_ready(now).next, step::accept);
    permit q;
    ASSERT_EQ(policy.on_accepted(now, q).next, step::accept);
    EXPECT_EQ(budget().live(), 3U);
    EXPECT_EQ(policy.metrics().peak, 2U);
  }
  ASSERT_EQ(policy.on_accept_failed(now, sys(EAGAIN)).next, step::wait);
  permit direct = budget().try_acquire();  // a user's own count, without a policy
  EXPECT_EQ(policy.metrics().peak, 2U);
  EXPECT_EQ(budget().live(), 1U);
}

TEST_F(PolicySpec, WouldBlockWaitsForReadinessAndGivesBackTheReservation) {
  accept_policy& policy = ready_policy(10, config());
  EXPECT_EQ(policy.on_accept_failed(now, sys(EAGAIN)).next, step::wait);
  EXPECT_EQ(budget().live(), 0U);
}

TEST_F(PolicySpec, DestroyingAPermitFreesItsPlace) {
  accept_policy& policy = ready_policy(10, config());
  {
    permit p;
    ASSERT_EQ(policy.on_accepted(now, p).next, step::accept);
    ASSERT_EQ(policy.on_accept_failed(now, sys(EAGAIN)).next, step::wait);
    EXPECT_EQ(budget().live(), 1U);
  }
  EXPECT_EQ(budget().live(), 0U);
}

TEST_F(PolicySpec, FullBudgetPausesUntilAReleaseAndNeverTripsTheWatchdog) {
  accept_policy_config c = config();
  c.stall_timeout = 1s;
  permit a;
  permit b;
  accept_policy& policy = ready_policy(2, c);
  ASSERT_EQ(policy.on_accepted(now, a).next, step::accept);
  EXPECT_EQ(policy.on_accepted(now, b).next, step::pause_for_release) << "budget checked before accept";
  EXPECT_EQ(policy.health().state, health_state::backpressure);

  advance(1h);  // an hour at the budget is backpressure, not a stall
  EXPECT_EQ(policy.on_release(now).next, step::pause_for_release) << "a wake-up for another loop";
  EXPECT_EQ(policy.health().state, health_state::backpressure);

  EXPECT_TRUE(a.release()) << "a loop is paused: the release asks for a wake-up";
  EXPECT_EQ(policy.on_release(now).next, step::accept) << "resumes the moment a permit is released";
  EXPECT_EQ(policy.health().state, health_state::accepting);
  const policy_metrics m = policy.metrics();
  EXPECT_EQ(m.pauses[static_cast<std::size_t>(pause_reason::capacity)], 1U);
  EXPECT_EQ(m.paused[static_cast<std::size_t>(pause_reason::capacity)], 1h);
}

// A stop requested from another thread while the loop is paused: the release (or the
// backoff's end) that comes next ends the loop; it does not take a place and accept again,
// which would leave the driver an accept that nobody cancels.
TEST_F(PolicySpec, APauseThatEndsAfterAStopRequestStops) {
  permit a;
  permit b;
  accept_policy& capacity = ready_policy(2, config());
  ASSERT_EQ(capacity.on_accepted(now, a).next, step::accept);
  ASSERT_EQ(capacity.on_accepted(now, b).next, step::pause_for_release);
  capacity.request_stop();
  EXPECT_TRUE(a.release());
  EXPECT_EQ(capacity.on_release(now).next, step::stop);
  EXPECT_EQ(budget().live(), 1U) << "no place taken for an accept that will not come";
  EXPECT_EQ(budget().waiters(), 0U);

  connection_budget shared(4);
  accept_policy backoff(shared, config());
  ASSERT_EQ(backoff.on_ready(now).next, step::accept);
  ASSERT_EQ(backoff.on_accept_failed(now, sys(ENFILE)).next, step::pause_until);
  backoff.request_stop();
  advance(1h);
  EXPECT_EQ(backoff.on_timer(now).next, step::stop);
}

TEST_F(PolicySpec, ReleaseNeedsNoWakeUpWhenNoLoopIsPaused) {
  permit p;
  accept_policy& policy = serving_one(p);
  ASSERT_EQ(policy.on_accept_failed(now, sys(EAGAIN)).next, step::wait);
  EXPECT_FALSE(p.release());
  EXPECT_EQ(wakes, 0);
}

TEST_F(PolicySpec, ReleaseCallsTheWakerOnceWhenALoopSharingTheBudgetIsPaused) {
  connection_budget budget(1);
  count_wakes(budget);
  accept_policy first(budget, config());
  accept_policy second(budget, config());
  permit p;
  ASSERT_EQ(first.on_ready(now).next, step::accept);
  ASSERT_EQ(first.on_accepted(now, p).next, step::pause_for_release);
  ASSERT_EQ(second.on_ready(now).next, step::pause_for_release);
  EXPECT_EQ(budget.waiters(), 2U);
  EXPECT_TRUE(p.release());
  EXPECT_EQ(wakes, 1);
  EXPECT_EQ(second.on_release(now).next, step::accept);
  EXPECT_EQ(first.on_release(now).next, step::pause_for_release) << "the one free place went to the other loop";
}

TEST_F(PolicySpec, DeadPendingConnectionsAreSkippedAndTheNextAcceptedAtOnce) {
  accept_policy& policy = ready_policy(10, config());
  EXPECT_EQ(policy.on_accept_failed(now, sys(ECONNABORTED)).next, step::accept);
  EXPECT_EQ(policy.on_accept_failed(now, sys(EPROTO)).next, step::accept);
  EXPECT_EQ(policy.on_accept_failed(now, sys(EPERM)).next, step::accept);
  const policy_metrics m = policy.metrics();
  EXPECT_EQ(m.skipped[static_cast<std::size_t>(condition::connection_failed)], 2U);
  EXPECT_EQ(m.skipped[static_cast<std::size_t>(condition::permission_denied)], 1U);
}

TEST_F(PolicySpec, InterruptedAcceptIsRetriedAtOnce) {
  accept_policy& policy = ready_policy(10, config());
  EXPECT_EQ(policy.on_accept_failed(now, sys(EINTR)).next, step::accept);
  EXPECT_EQ(policy.metrics().retried, 1U);
}

TEST_F(PolicySpec, ExhaustionBacksOffExponentiallyUpToTheCap) {
  accept_policy& policy = ready_policy(10, config());
  const std::chrono::milliseconds expected[] = {1ms,   2ms,   4ms,   8ms,    16ms,   32ms,  64ms,
                                                128ms, 256ms, 512ms, 1000ms, 1000ms, 1000ms};
  for (const auto delay : expected) {
    const decision d = policy.on_accept_failed(now, sys(EMFILE));
    ASSERT_EQ(d.next, step::pause_until);
    EXPECT_EQ(d.until - now, delay);
    EXPECT_EQ(policy.health().state, health_state::degraded);
    advance(delay);
    ASSERT_EQ(policy.on_timer(now).next, step::accept);
  }
  EXPECT_EQ(policy.metrics().failed[static_cast<std::size_t>(condition::process_fd_limit)], 13U);
}

TEST_F(PolicySpec, EveryExhaustionErrnoBacksOff) {
  for (const int e : {EMFILE, ENFILE, ENOBUFS, ENOMEM}) {
    connection_budget budget(10);
    accept_policy policy(budget, config());
    ASSERT_EQ(policy.on_ready(now).next, step::accept);
    const decision d = policy.on_accept_failed(now, sys(e));
    EXPECT_EQ(d.next, step::pause_until) << e;
    EXPECT_EQ(d.until, now + 1ms) << e;
  }
}

TEST_F(PolicySpec, ATimerThatFiresEarlyKeepsThePause) {
  accept_policy& policy = ready_policy(10, config());
  const time_point until = policy.on_accept_failed(now, sys(ENFILE)).until;
  advance(500us);
  const decision d = policy.on_timer(now);
  EXPECT_EQ(d.next, step::pause_until);
  EXPECT_EQ(d.until, until);
}

TEST_F(PolicySpec, BackoffStartsAgainAfterASuccess) {
  accept_policy& policy = ready_policy(10, config());
  for (int i = 0; i < 4; ++i) {
    const decision d = policy.on_accept_failed(now, sys(ENOBUFS));
    advance(d.until - now);
    ASSERT_EQ(policy.on_timer(now).next, step::accept);
  }
  permit p;
  ASSERT_EQ(policy.on_accepted(now, p).next, step::accept);
  EXPECT_EQ(policy.health().state, health_state::accepting);
  EXPECT_EQ(policy.on_accept_failed(now, sys(ENOBUFS)).until, now + 1ms);
}

TEST_F(PolicySpec, AReleaseDuringABackoffPauseEndsItAtOnce) {
  permit p;
  accept_policy& policy = serving_one(p);
  ASSERT_EQ(policy.on_accept_failed(now, sys(EMFILE)).next, step::pause_until);
  advance(100us);
  EXPECT_TRUE(p.release());
  EXPECT_EQ(wakes, 1);
  EXPECT_EQ(policy.on_release(now).next, step::accept);
  EXPECT_EQ(policy.metrics().paused[static_cast<std::size_t>(pause_reason::backoff)], 100us);
}

TEST_F(PolicySpec, AReleaseDuringTheFailingAcceptRetriesAtOnce) {
  permit p;
  accept_policy& policy = ready_policy(10, config());
  ASSERT_EQ(policy.on_accepted(now, p).next, step::accept);
  p.release();  // another thread closes a connection while accept4 is returning EMFILE
  EXPECT_EQ(policy.on_accept_failed(now, sys(EMFILE)).next, step::accept);
}

TEST_F(PolicySpec, ACancelledReservationDoesNotWakeALoopBackingOff) {
  connection_budget budget(10);
  count_wakes(budget);
  accept_policy backing_off(budget, config());
  accept_policy other(budget, config());
  ASSERT_EQ(backing_off.on_ready(now).next, step::accept);
  ASSERT_EQ(backing_off.on_accept_failed(now, sys(EMFILE)).next, step::pause_until);
  ASSERT_EQ(other.on_ready(now).next, step::accept);
  ASSERT_EQ(other.on_accept_failed(now, sys(EAGAIN)).next, step::wait);
  EXPECT_EQ(wakes, 0) << "no descriptor was freed";
  EXPECT_EQ(backing_off.on_release(now).next, step::pause_until) << "a stray wake-up keeps the pause";
}

TEST_F(PolicySpec, FailErrorsStopWithThatError) {
  for (const int e : {EBADF, ENOTSOCK, EFAULT, EINVAL, EOPNOTSUPP}) {
    connection_budget budget(10);
    accept_policy policy(budget, config());
    ASSERT_EQ(policy.on_ready(now).next, step::accept);
    const decision d = policy.on_accept_failed(now, sys(e));
    EXPECT_EQ(d.next, step::fail) << e;
    const std::error_code expected = e == EINVAL ? make_error_code(error::not_listening) : sys(e);
    EXPECT_EQ(d.error, expected) << e;
    EXPECT_EQ(policy.health().state, health_state::stopped);
    EXPECT_EQ(policy.health().error, expected);
    EXPECT_EQ(budget.live(), 0U);
  }
}

TEST_F(PolicySpec, EinvalIsADeadListenerUnlessStopWasRequested) {
  accept_policy& policy = ready_policy(10, config());
  const decision d = policy.on_accept_failed(now, sys(EINVAL));
  EXPECT_EQ(d.next, step::fail);
  EXPECT_TRUE(d.error == condition::not_listening);
  EXPECT_EQ(d.error, make_error_code(error::not_listening));
}

TEST_F(PolicySpec, EinvalAfterAStopRequestIsACleanStop) {
  accept_policy& policy = ready_policy(10, config());
  policy.request_stop();  // another thread; the driver then calls shutdown(SHUT_RD)
  const decision d = policy.on_accept_failed(now, sys(EINVAL));
  EXPECT_EQ(d.next, step::stop);
  EXPECT_FALSE(d.error);
  EXPECT_EQ(policy.health().state, health_state::stopped);
  EXPECT_FALSE(policy.health().error);
}

TEST_F(PolicySpec, EopnotsuppOnAVerifiedListenerIsSkipped) {
  accept_policy_config c = config();
  c.listener_verified = true;
  accept_policy& policy = ready_policy(10, c);
  EXPECT_EQ(policy.on_accept_failed(now, sys(EOPNOTSUPP)).next, step::accept);
  EXPECT_EQ(policy.metrics().skipped[static_cast<std::size_t>(condition::not_supported)], 1U);
}

TEST_F(PolicySpec, AcceptsPerReadyEventAreCapped) {
  connection_budget budget(100);
  accept_policy_config c = config();
  c.accepts_per_ready = 3;
  accept_policy policy(budget, c);
  permit p[3];
  ASSERT_EQ(policy.on_ready(now).next, step::accept);
  ASSERT_EQ(policy.on_accepted(now, p[0]).next, step::accept);
  ASSERT_EQ(policy.on_accept_failed(now, sys(ECONNABORTED)).next, step::accept) << "skips count too";
  const decision d = policy.on_accepted(now, p[1]);
  EXPECT_EQ(d.next, step::wait) << "with room for more, only the cap makes it wait";
  EXPECT_EQ(budget.live(), 2U) << "no reservation is held while waiting";
  EXPECT_EQ(policy.on_ready(now).next, step::accept) << "the next ready event starts a new burst";
}

TEST_F(PolicySpec, TheDefaultCapIs64AcceptsPerReadyEvent) {
  connection_budget budget(1000);
  accept_policy policy(budget, config());
  std::vector<permit> permits(64);
  ASSERT_EQ(policy.on_ready(now).next, step::accept);
  for (int i = 0; i < 63; ++i) {
    ASSERT_EQ(policy.on_accepted(now, permits[static_cast<std::size_t>(i)]).next, step::accept);
  }
  EXPECT_EQ(policy.on_accepted(now, permits[63]).next, step::wait);
}

TEST_F(PolicySpec, TheWatchdogStopsAfterStallTimeoutWithoutProgress) {
  connection_budget budget(10);
  accept_policy_config c = config();
  c.stall_timeout = 30s;
  accept_policy policy(budget, c);
  const time_point start = now;
  const decision d = test::run_exhausted(policy, now, 1000).last;
  EXPECT_EQ(d.next, step::fail);
  EXPECT_TRUE(d.error == condition::stalled);
  EXPECT_EQ(d.error, make_error_code(error::stalled));
  EXPECT_EQ(now - start, 30s) << "stops exactly at the timeout";
  policy.attach_diagnosis("12 descriptors are sockets; raise LimitNOFILE");
  EXPECT_EQ(policy.diagnosis(), "12 descriptors are sockets; raise LimitNOFILE");
  ASSERT_EQ(count(policy_event_kind::diagnosis), 1);
  EXPECT_EQ(events.back().text, "12 descriptors are sockets; raise LimitNOFILE");
}

TEST_F(PolicySpec, AReleaseRestartsTheWatchdog) {
  connection_budget budget(10);
  accept_policy_config c = config();
  c.stall_timeout = 30s;
  c.backoff.initial = 1s;
  accept_policy policy(budget, c);
  permit p;
  const time_point start = now;
  ASSERT_EQ(policy.on_ready(now).next, step::accept);
  ASSERT_EQ(policy.on_accepted(now, p).next, step::accept);
  decision d = policy.on_accept_failed(now, sys(EMFILE));
  for (int i = 0; i < 1000 && d.next != step::fail; ++i) {
    if (now - start == 20s && p) {
      p.release();
      d = policy.on_release(now);
    } else if (d.next == step::pause_until) {
      now = d.until;
      d = policy.on_timer(now);
    } else {
      ASSERT_EQ(d.next, step::accept);
      d = policy.on_accept_failed(now, sys(EMFILE));
    }
  }
  EXPECT_EQ(d.next, step::fail);
  EXPECT_EQ(now - start, 50s);
}

TEST_F(PolicySpec, AZeroStallTimeoutDisablesTheWatchdog) {
  accept_policy_config c = config();
  c.stall_timeout = 0s;
  accept_policy& policy = ready_policy(10, c);
  decision d = policy.on_accept_failed(now, sys(ENFILE));
  for (int i = 0; i < 4000; ++i) {  // over an hour of exhaustion
    ASSERT_EQ(d.next, step::pause_until);
    now = d.until;
    ASSERT_EQ(policy.on_timer(now).next, step::accept);
    d = policy.on_accept_failed(now, sys(ENFILE));
  }
  EXPECT_EQ(d.next, step::pause_until);
}

TEST_F(PolicySpec, QueueModeLeavesClientsInTheBacklogAtTheBudget) {
  permit p;
  accept_policy& policy = ready_policy(1, config());
  EXPECT_EQ(policy.on_accepted(now, p).next, step::pause_for_release);
  EXPECT_EQ(policy.metrics().shed[static_cast<std::size_t>(shed_reason::budget)], 0U);
}

TEST_F(PolicySpec, OtherShedModesShedAtTheBudget) {
  for (const shed_mode mode : {shed_mode::close, shed_mode::reset, shed_mode::respond}) {
    connection_budget budget(1);
    accept_policy_config c = config();
    c.shed = mode;
    accept_policy policy(budget, c);
    permit kept;
    ASSERT_EQ(policy.on_ready(now).next, step::accept);
    decision d = policy.on_accepted(now, kept);
    ASSERT_TRUE(kept);
    EXPECT_EQ(d.next, step::shed);
    EXPECT_EQ(d.shed, mode);
    EXPECT_EQ(policy.health().state, health_state::backpressure);

    permit shed;
    d = policy.on_accepted(now, shed);
    EXPECT_FALSE(shed);
    EXPECT_TRUE(d.shed_accepted);
    EXPECT_EQ(d.shed, mode);
    EXPECT_EQ(d.next, step::shed);
    EXPECT_EQ(policy.on_accept_failed(now, sys(EAGAIN)).next, step::wait);
    EXPECT_EQ(policy.metrics().shed[static_cast<std::size_t>(shed_reason::budget)], 1U);
    EXPECT_EQ(budget.live(), 1U);
  }
}

// A mode that sheds accepts whether or not there is room, so it holds no place across the
// accept: a loop sharing the budget never sheds a client below the budget because another
// loop's accept is in flight. The place is taken when the connection arrives, or it is shed.
TEST_F(PolicySpec, AModeThatShedsTakesThePlaceWhenTheConnectionArrives) {
  connection_budget budget(2);
  accept_policy_config c = config();
  c.shed = shed_mode::respond;
  accept_policy first(budget, c);
  accept_policy second(budget, c);
  permit held;
  ASSERT_EQ(first.on_ready(now).next, step::accept);
  EXPECT_EQ(budget.live(), 0U) << "no place is held across the accept";
  ASSERT_EQ(first.on_accepted(now, held).next, step::accept);
  ASSERT_TRUE(held);
  EXPECT_EQ(budget.live(), 1U) << "the connection holds a place, the next accept none";
  EXPECT_EQ(second.on_ready(now).next, step::accept) << "one place is free: not shed";
  EXPECT_EQ(first.on_accept_failed(now, sys(EAGAIN)).next, step::wait);
  permit served;
  decision d = second.on_accepted(now, served);
  EXPECT_TRUE(served);
  EXPECT_FALSE(d.shed_accepted);
  EXPECT_EQ(d.next, step::shed) << "two connections: the budget is full";
  EXPECT_EQ(second.health().state, health_state::backpressure);
  served.release();

  // Both loops accept with one place left: the first connection to arrive takes it, the
  // other is shed.
  EXPECT_EQ(second.on_accept_failed(now, sys(EAGAIN)).next, step::wait);
  ASSERT_EQ(first.on_ready(now).next, step::accept);
  ASSERT_EQ(second.on_ready(now).next, step::accept);
  permit taken;
  EXPECT_FALSE(first.on_accepted(now, taken).shed_accepted);
  EXPECT_TRUE(taken);
  permit refused;
  d = second.on_accepted(now, refused);
  EXPECT_FALSE(refused);
  EXPECT_TRUE(d.shed_accepted);
  EXPECT_EQ(second.metrics().shed[static_cast<std::size_t>(shed_reason::budget)], 1U);
  EXPECT_EQ(budget.live(), 2U);
}

// ---- what happens on EMFILE and ENFILE: back off, and drain with the spare descriptor ------------

TEST_F(PolicySpec, DescriptorShortageDrainsWithTheSpareDescriptorWhenTheModeSheds) {
  for (const int e : {EMFILE, ENFILE}) {
    for (const shed_mode mode : {shed_mode::close, shed_mode::reset, shed_mode::respond}) {
      connection_budget budget(10);
      accept_policy_config c = config();
      c.shed = mode;
      accept_policy policy(budget, c);
      ASSERT_EQ(policy.on_ready(now).next, step::accept);
      const decision d = policy.on_accept_failed(now, sys(e), true);
      EXPECT_EQ(d.next, step::drain) << e << " " << to_string(mode);
      EXPECT_EQ(d.shed, mode);
      EXPECT_EQ(d.until, now + 1ms) << "the backoff pause is decided with the drain";
      EXPECT_EQ(policy.current(), d);
      EXPECT_EQ(policy.health().state, health_state::degraded);
      EXPECT_EQ(policy.metrics().drains, 1U);
      EXPECT_EQ(budget.live(), 0U) << "a drained connection takes no place";
    }
  }
}

TEST_F(PolicySpec, NoDrainInQueueModeWithoutTheSpareDescriptorOrForOtherShortages) {
  struct scenario {
    shed_mode mode;
    bool spare;
    int e;
  };
  for (const scenario s : {scenario{shed_mode::queue, true, EMFILE}, scenario{shed_mode::close, false, EMFILE},
                           scenario{shed_mode::close, true, ENOBUFS}, scenario{shed_mode::close, true, ENOMEM}}) {
    connection_budget budget(10);
    accept_policy_config c = config();
    c.shed = s.mode;
    accept_policy policy(budget, c);
    ASSERT_EQ(policy.on_ready(now).next, step::accept);
    const decision d = policy.on_accept_failed(now, sys(s.e), s.spare);
    EXPECT_EQ(d.next, step::pause_until) << to_string(s.mode) << " " << s.spare << " " << s.e;
    EXPECT_EQ(policy.metrics().drains, 0U);
  }
}

TEST_F(PolicySpec, EachDrainedConnectionIsShedAndTheBacklogEndResumesThePause) {
  accept_policy_config c = config();
  c.shed = shed_mode::reset;
  accept_policy& policy = ready_policy(10, c);
  const time_point until = policy.on_accept_failed(now, sys(EMFILE), true).until;
  for (int i = 0; i < 3; ++i) {
    permit p;
    const decision d = policy.on_accepted(now, p, v4("127.0.0.1"));
    EXPECT_FALSE(p) << "drained connections are never served";
    EXPECT_TRUE(d.shed_accepted);
    EXPECT_EQ(d.shed, shed_mode::reset);
    EXPECT_EQ(policy.metrics().shed[static_cast<std::size_t>(shed_reason::budget)], static_cast<std::uint64_t>(i + 1))
        << "a drained connection is shed for the budget";
    EXPECT_EQ(d.next, step::drain);
  }
  const decision end = policy.on_accept_failed(now, sys(EAGAIN));
  EXPECT_EQ(end.next, step::pause_until) << "the backlog is empty: the pause goes on";
  EXPECT_EQ(end.until, until);
  const policy_metrics m = policy.metrics();
  EXPECT_EQ(m.shed[static_cast<std::size_t>(shed_reason::budget)], 3U);
  EXPECT_EQ(m.accepted, 0U);
  EXPECT_EQ(m.skipped[static_cast<std::size_t>(condition::would_block)], 0U) << "the end of a drain is no event";
  EXPECT_EQ(policy.health().state, health_state::degraded) << "a drain is not a recovery";
  EXPECT_EQ(count(policy_event_kind::recovered), 0);
  advance(1ms);
  EXPECT_EQ(policy.on_timer(now).next, step::accept);
}

TEST_F(PolicySpec, ADrainIsBoundedByAcceptsPerReady) {
  accept_policy_config c = config();
  c.shed = shed_mode::close;
  c.accepts_per_ready = 4;
  accept_policy& policy = ready_policy(10, c);
  decision d = policy.on_accept_failed(now, sys(EMFILE), true);
  int drained = 0;
  while (d.next == step::drain && drained < 100) {
    permit p;
    d = policy.on_accepted(now, p);
    ASSERT_TRUE(d.shed_accepted);
    ++drained;
  }
  EXPECT_EQ(drained, 4);
  EXPECT_EQ(d.next, step::pause_until);
}

TEST_F(PolicySpec, EmfileDuringADrainEndsItAndTheNextShortageDrainsAgain) {
  accept_policy_config c = config();
  c.shed = shed_mode::close;
  accept_policy& policy = ready_policy(10, c);
  ASSERT_EQ(policy.on_accept_failed(now, sys(EMFILE), true).next, step::drain);
  // Another thread took the number the spare descriptor freed.
  decision d = policy.on_accept_failed(now, sys(EMFILE));
  EXPECT_EQ(d.next, step::pause_until);
  EXPECT_EQ(policy.metrics().failed[static_cast<std::size_t>(condition::process_fd_limit)], 1U)
      << "a failure inside a drain is not a second exhaustion";
  advance(d.until - now);
  ASSERT_EQ(policy.on_timer(now).next, step::accept);
  // The driver could not take its spare descriptor back yet: no drain, only the pause.
  d = policy.on_accept_failed(now, sys(EMFILE), false);
  EXPECT_EQ(d.next, step::pause_until);
  EXPECT_EQ(d.until, now + 2ms);
  advance(2ms);
  ASSERT_EQ(policy.on_timer(now).next, step::accept);
  EXPECT_EQ(policy.on_accept_failed(now, sys(EMFILE), true).next, step::drain);
  EXPECT_EQ(policy.metrics().drains, 2U);
}

TEST_F(PolicySpec, AReleaseOrTheTimerDuringADrainEndsIt) {
  accept_policy_config c = config();
  c.shed = shed_mode::close;
  permit held;
  accept_policy& policy = ready_policy(10, c);
  ASSERT_EQ(policy.on_accepted(now, held).next, step::accept);
  ASSERT_EQ(policy.on_accept_failed(now, sys(EMFILE), true).next, step::drain);
  held.release();
  EXPECT_EQ(policy.on_release(now).next, step::accept) << "a freed descriptor beats draining";
  permit served;
  EXPECT_FALSE(policy.on_accepted(now, served).shed_accepted);
  EXPECT_TRUE(served);

  ASSERT_EQ(policy.on_accept_failed(now, sys(EMFILE), true).next, step::drain);
  advance(1ms);
  EXPECT_EQ(policy.on_timer(now).next, step::accept) << "the pause ended: accept again";
}

TEST_F(PolicySpec, AStopRequestDuringADrainShedsTheLastConnectionAndStops) {
  accept_policy_config c = config();
  c.shed = shed_mode::close;
  accept_policy& policy = ready_policy(10, c);
  ASSERT_EQ(policy.on_accept_failed(now, sys(EMFILE), true).next, step::drain);
  policy.request_stop();
  permit p;
  const decision d = policy.on_accepted(now, p);
  EXPECT_TRUE(d.shed_accepted);
  EXPECT_FALSE(p) << "a shed connection gets no permit";
  EXPECT_EQ(d.next, step::stop);
  EXPECT_EQ(budget().waiters(), 0U) << "the pause's waiter registration is gone";
}

TEST_F(PolicySpec, TheWatchdogStillCountsThroughDrains) {
  accept_policy_config c = config();
  c.shed = shed_mode::close;
  c.stall_timeout = 10ms;
  accept_policy& policy = ready_policy(10, c);
  decision d = policy.on_accept_failed(now, sys(EMFILE), true);
  for (int round = 0; round < 100 && d.next != step::fail; ++round) {
    ASSERT_EQ(d.next, step::drain);
    permit p;
    d = policy.on_accepted(now, p);  // a client drained: not progress
    ASSERT_EQ(d.next, step::drain);
    d = policy.on_accept_failed(now, sys(EAGAIN));
    ASSERT_EQ(d.next, step::pause_until);
    advance(d.until - now);
    d = policy.on_timer(now);
    if (d.next == step::accept) {
      d = policy.on_accept_failed(now, sys(EMFILE), true);
    }
  }
  EXPECT_EQ(d.next, step::fail);
  EXPECT_EQ(d.error, condition::stalled);
}

TEST_F(PolicySpec, ThePerPeerCapShedsAPeerOverItAndOnlyThatPeer) {
  connection_budget budget(100);
  const auto peers = std::make_shared<peer_limit>(2, 1024, 42);
  accept_policy_config c = config();
  c.peers = peers;
  accept_policy policy(budget, c);
  permit a1;
  permit a2;
  permit a3;
  permit b1;
  ASSERT_NO_FATAL_FAILURE(accept_two_from_one_peer(policy, a1, a2));
  // live() counts the connections and, in queue mode, the place reserved for the next accept.
  EXPECT_EQ(budget.live(), 3U);
  const decision d = policy.on_accepted(now, a3, v4("10.0.0.1"));
  EXPECT_TRUE(d.shed_accepted);
  EXPECT_FALSE(a3);
  EXPECT_EQ(d.shed, shed_mode::close) << "an accepted connection cannot be queued";
  EXPECT_EQ(policy.metrics().shed[static_cast<std::size_t>(shed_reason::peer_limit)], 1U);
  EXPECT_EQ(d.next, step::accept);
  EXPECT_EQ(budget.live(), 3U) << "the shed connection's place is not given back";
  EXPECT_FALSE(policy.on_accepted(now, b1, v4("10.0.0.2")).shed_accepted);
  EXPECT_EQ(budget.live(), 4U);
  EXPECT_EQ(policy.metrics().shed[static_cast<std::size_t>(shed_reason::peer_limit)], 1U);

  a1.release();
  EXPECT_EQ(budget.live(), 3U);
  EXPECT_EQ(peers->count(v4("10.0.0.1")), 1U);
  EXPECT_FALSE(policy.on_accepted(now, a3, v4("10.0.0.1")).shed_accepted);
  EXPECT_TRUE(a3);
  EXPECT_EQ(budget.live(), 4U);
}

// The place of a connection the per-peer cap sheds goes back to the budget at once, in every
// mode: kept, it would count against every other peer until the next accept (shed modes), or
// leave the loop paused for a release while holding it (queue mode at a full budget).
TEST_F(PolicySpec, ThePerPeerCapGivesBackThePlaceOfWhatItShedsInEveryMode) {
  for (const shed_mode mode : {shed_mode::queue, shed_mode::close, shed_mode::reset}) {
    SCOPED_TRACE(to_string(mode));
    connection_budget budget(3);
    const auto peers = std::make_shared<peer_limit>(2, 1024, 42);
    accept_policy_config c = config();
    c.peers = peers;
    c.shed = mode;
    accept_policy policy(budget, c);
    // Queue mode reserves the next accept's place before it accepts; the shed modes at accept.
    const std::uint64_t in_flight = mode == shed_mode::queue ? 1 : 0;
    permit a1;
    permit a2;
    permit a3;
    permit b1;
    ASSERT_NO_FATAL_FAILURE(accept_two_from_one_peer(policy, a1, a2));
    ASSERT_EQ(budget.live(), 2 + in_flight);
    const decision d = policy.on_accepted(now, a3, v4("10.0.0.1"));
    ASSERT_TRUE(d.shed_accepted);
    EXPECT_EQ(policy.metrics().shed[static_cast<std::size_t>(shed_reason::peer_limit)], 1U);
    EXPECT_EQ(budget.live(), 2 + in_flight) << "the shed connection kept its place";
    EXPECT_EQ(d.next, step::accept) << "the third place is free for another peer";
    EXPECT_FALSE(policy.on_accepted(now, b1, v4("10.0.0.2")).shed_accepted);
    EXPECT_TRUE(b1);
    EXPECT_EQ(budget.live(), 3U);
  }
}

TEST_F(PolicySpec, DegradedStateIsLoggedOnceSummarisedAndRecovered) {
  connection_budget budget(10, 1024);
  accept_policy_config c = config();
  c.stall_timeout = 0s;
  accept_policy policy(budget, c);
  const time_point start = now;
  ASSERT_EQ(policy.on_ready(now).next, step::accept);
  decision d = policy.on_accept_failed(now, sys(EMFILE));
  ASSERT_EQ(count(policy_event_kind::degraded), 1);
  EXPECT_EQ(events[0].cause, condition::process_fd_limit);
  EXPECT_EQ(events[0].max_connections, 10U);
  EXPECT_EQ(events[0].fd_limit, 1024U);
  int failures = 1;
  while (now - start < 25s) {  // 25 s of EMFILE: one line per 10 s, not one per failure
    now = d.until;
    ASSERT_EQ(policy.on_timer(now).next, step::accept);
    d = policy.on_accept_failed(now, sys(EMFILE));
    ++failures;
  }
  EXPECT_EQ(count(policy_event_kind::degraded), 1);
  EXPECT_EQ(count(policy_event_kind::still_degraded), 2);
  std::uint64_t summarised = 0;
  for (const auto& e : events) {
    summarised += e.kind == policy_event_kind::still_degraded ? e.failures : 0;
  }
  EXPECT_GT(summarised, 20U);
  now = d.until;
  ASSERT_EQ(policy.on_timer(now).next, step::accept);
  permit p;
  ASSERT_EQ(policy.on_accepted(now, p).next, step::accept);
  const time_point healthy = now;
  EXPECT_EQ(count(policy_event_kind::recovered), 0) << "the episode ends after the quiet period, not at once";
  EXPECT_EQ(policy.health().state, health_state::accepting);
  const decision waiting = policy.on_accept_failed(now, sys(EAGAIN));
  ASSERT_EQ(waiting.next, step::wait);
  EXPECT_EQ(waiting.until, healthy + 1s) << "a waiting driver is called back when the recovered line is due";
  advance(999ms);
  EXPECT_EQ(policy.on_timer(now).until, healthy + 1s);
  EXPECT_EQ(count(policy_event_kind::recovered), 0);
  advance(1ms);
  const decision after = policy.on_timer(now);
  EXPECT_EQ(after.next, step::wait);
  EXPECT_EQ(after.until, time_point{}) << "nothing more is due";
  ASSERT_EQ(count(policy_event_kind::recovered), 1);
  EXPECT_EQ(events.back().duration, healthy - start) << "until accepting became healthy for good";
  EXPECT_EQ(events.back().failures, static_cast<std::uint64_t>(failures));
  EXPECT_EQ(events.back().flaps, 0U);
  EXPECT_EQ(events.size(), 4U);
}

// The churn of issue 16 on the fake clock: 52 idle connections hold the descriptors, so each
// client's accept takes the last free one and the next accept fails with EMFILE until that
// client leaves. 200 such clients are one episode: two lines, not 400.
TEST_F(PolicySpec, FlappingAtTheDescriptorLimitUnderChurnIsOneEpisode) {
  connection_budget budget(100, 64);
  accept_policy policy(budget, config());
  const time_point start = now;
  ASSERT_EQ(policy.on_ready(now).next, step::accept);
  std::vector<permit> idle(52);
  for (permit& p : idle) {
    ASSERT_EQ(policy.on_accepted(now, p).next, step::accept);
  }
  ASSERT_EQ(policy.on_accept_failed(now, sys(EAGAIN)).next, step::wait);
  time_point last_served{};
  for (int client = 0; client < 200; ++client) {
    advance(100us);
    ASSERT_EQ(policy.on_ready(now).next, step::accept);
    permit served;
    ASSERT_EQ(policy.on_accepted(now, served).next, step::accept);
    last_served = now;
    const decision d = policy.on_accept_failed(now, sys(EMFILE));  // no descriptor left
    ASSERT_EQ(d.next, step::pause_until);
    EXPECT_EQ(d.until, now + 1ms) << "every success resets the backoff";
    advance(100us);
    served.release();  // the client is served and leaves
    ASSERT_EQ(policy.on_release(now).next, step::accept);
    ASSERT_EQ(policy.on_accept_failed(now, sys(EAGAIN)).next, step::wait);
  }
  ASSERT_EQ(events.size(), 1U) << "only the degraded line while it flaps";
  EXPECT_EQ(events[0].kind, policy_event_kind::degraded);
  const time_point healthy = now;
  EXPECT_EQ(policy.current().until, healthy + 1s);
  advance(1s);
  EXPECT_EQ(policy.on_timer(now).next, step::wait);
  ASSERT_EQ(events.size(), 2U);
  const policy_event& recovered = events[1];
  EXPECT_EQ(recovered.kind, policy_event_kind::recovered);
  EXPECT_EQ(recovered.failures, 200U);
  EXPECT_EQ(recovered.flaps, 199U);
  EXPECT_EQ(recovered.duration, healthy - (start + 100us));
  EXPECT_GT(healthy, last_served);
  EXPECT_EQ(format(recovered),
            "transient: accept recovered after 40 ms (200 failures, 199 flaps); live 52/100, fd limit 64");
}

TEST_F(PolicySpec, AFailureAfterTheQuietPeriodStartsANewEpisode) {
  accept_policy& policy = ready_policy(10, config());
  decision d = policy.on_accept_failed(now, sys(EMFILE));
  advance(d.until - now);
  ASSERT_EQ(policy.on_timer(now).next, step::accept);
  permit p;
  ASSERT_EQ(policy.on_accepted(now, p).next, step::accept);
  advance(1s);  // the driver accepts again at once: no timer, no other event in between
  d = policy.on_accept_failed(now, sys(EMFILE));
  ASSERT_EQ(events.size(), 3U);
  EXPECT_EQ(events[0].kind, policy_event_kind::degraded);
  EXPECT_EQ(events[1].kind, policy_event_kind::recovered);
  EXPECT_EQ(events[1].failures, 1U);
  EXPECT_EQ(events[2].kind, policy_event_kind::degraded) << "a new episode, reported as such";
}

TEST_F(PolicySpec, AFailureWithinTheQuietPeriodIsAFlapCountedInTheSummary) {
  accept_policy_config c = config();
  c.stall_timeout = 0s;
  accept_policy& policy = ready_policy(10, c);
  decision d = policy.on_accept_failed(now, sys(ENFILE));
  for (int i = 0; i < 30; ++i) {  // fail, wait out the pause, succeed, fail again 500 ms later
    advance(d.until - now);
    ASSERT_EQ(policy.on_timer(now).next, step::accept);
    permit p;
    ASSERT_EQ(policy.on_accepted(now, p).next, step::accept);
    advance(500ms);
    d = policy.on_accept_failed(now, sys(ENFILE));
  }
  ASSERT_EQ(count(policy_event_kind::degraded), 1);
  ASSERT_EQ(count(policy_event_kind::still_degraded), 1);
  EXPECT_EQ(count(policy_event_kind::recovered), 0);
  const auto summary = std::find_if(events.begin(), events.end(),
                                    [](const policy_event& e) { return e.kind == policy_event_kind::still_degraded; });
  EXPECT_EQ(summary->failures, 19U) << "every 501 ms for 10 s, the first one being the degraded line";
  EXPECT_EQ(summary->flaps, 19U);
  EXPECT_EQ(format(*summary),
            "transient: accept still degraded after 10.0 s: system_fd_limit (Too many open files in system); 19 "
            "failures, 19 flaps since the last line; live 1/10");
}

TEST_F(PolicySpec, AStopInTheQuietPeriodEndsTheEpisodeBeforeTheStopLine) {
  accept_policy& policy = ready_policy(10, config());
  const decision d = policy.on_accept_failed(now, sys(EMFILE));
  advance(d.until - now);
  ASSERT_EQ(policy.on_timer(now).next, step::accept);
  permit p;
  ASSERT_EQ(policy.on_accepted(now, p).next, step::accept);
  advance(10ms);
  ASSERT_EQ(policy.on_stop(now).next, step::stop);
  ASSERT_EQ(events.size(), 3U);
  EXPECT_EQ(events[1].kind, policy_event_kind::recovered);
  EXPECT_EQ(events[1].duration, 1ms);
  EXPECT_EQ(events[2].kind, policy_event_kind::stopped);
  EXPECT_EQ(events[2].duration, 0ns) << "no episode is going on at the stop";
}

TEST_F(PolicySpec, AStopWhileStillFailingEndsTheEpisodeInTheStopLine) {
  connection_budget budget(10, 64);
  accept_policy policy(budget, config());
  ASSERT_EQ(policy.on_ready(now).next, step::accept);
  decision d = policy.on_accept_failed(now, sys(EMFILE));
  advance(d.until - now);
  ASSERT_EQ(policy.on_timer(now).next, step::accept);
  permit p;
  ASSERT_EQ(policy.on_accepted(now, p).next, step::accept);
  d = policy.on_accept_failed(now, sys(EMFILE));  // a flap
  advance(2ms);
  ASSERT_EQ(policy.on_stop(now).next, step::stop);
  ASSERT_EQ(events.size(), 2U);
  EXPECT_EQ(events[1].kind, policy_event_kind::stopped);
  EXPECT_EQ(events[1].failures, 2U);
  EXPECT_EQ(events[1].flaps, 1U);
  EXPECT_EQ(format(events[1]),
            "transient: accept stopped cleanly while degraded for 3.0 ms (2 failures, 1 flap); live 1/10, fd limit 64");
}

TEST_F(PolicySpec, AQuietPeriodOfZeroEndsEachEpisodeAtTheFirstSuccess) {
  accept_policy_config c = config();
  c.quiet_period = 0ms;
  accept_policy& policy = ready_policy(10, c);
  const decision d = policy.on_accept_failed(now, sys(EMFILE));
  advance(d.until - now);
  ASSERT_EQ(policy.on_timer(now).next, step::accept);
  permit p;
  ASSERT_EQ(policy.on_accepted(now, p).next, step::accept);
  ASSERT_EQ(events.size(), 2U);
  EXPECT_EQ(events[1].kind, policy_event_kind::recovered);
  c.quiet_period = -1ms;
  EXPECT_EQ(validate(c), std::errc::invalid_argument);
}

TEST_F(PolicySpec, EventLinesNameTheConditionAndTheLoad) {
  policy_event e = emfile_event(policy_event_kind::degraded, 900, 1000, 1024);
  EXPECT_EQ(format(e),
            "transient: accept degraded: process_fd_limit (Too many open files); live 900/1000, fd limit 1024; "
            "backing off");
  e.kind = policy_event_kind::recovered;
  e.duration = 12300ms;
  e.failures = 530;
  EXPECT_EQ(format(e), "transient: accept recovered after 12.3 s (530 failures); live 900/1000, fd limit 1024");
}

TEST_F(PolicySpec, EventLinesGiveShortTimesInMillisecondsAndNameTheirSource) {
  policy_event e = emfile_event(policy_event_kind::recovered, 52, 100, 64);
  e.failures = 1;
  e.duration = 400us;
  EXPECT_EQ(format(e), "transient: accept recovered after 0.4 ms (1 failure); live 52/100, fd limit 64")
      << "not 'after 0.0 s (1 failures)'";
  e.duration = 12300us;
  e.failures = 97;
  e.flaps = 96;
  EXPECT_EQ(format(e), "transient: accept recovered after 12 ms (97 failures, 96 flaps); live 52/100, fd limit 64");
  e.duration = 49ms;
  EXPECT_NE(format(e).find("after 49 ms"), std::string::npos);
  e.duration = 50ms;
  EXPECT_NE(format(e).find("after 0.1 s"), std::string::npos);
  e.kind = policy_event_kind::degraded;
  e.source = "127.0.0.1:8080 loop 2/3";
  EXPECT_EQ(format(e),
            "transient: 127.0.0.1:8080 loop 2/3: accept degraded: process_fd_limit (Too many open files); live "
            "52/100, fd limit 64; backing off");
}

TEST_F(PolicySpec, StopIsFinal) {
  accept_policy& policy = ready_policy(10, config());
  EXPECT_EQ(policy.on_stop(now).next, step::stop);
  EXPECT_EQ(budget().live(), 0U) << "the reservation is given back";
  EXPECT_EQ(policy.on_ready(now).next, step::stop);
  EXPECT_EQ(policy.on_timer(now).next, step::stop);
  EXPECT_EQ(policy.on_release(now).next, step::stop);
  EXPECT_EQ(policy.on_accept_failed(now, sys(EMFILE)).next, step::stop);
  permit late;
  const decision d = policy.on_accepted(now, late);
  EXPECT_EQ(d.next, step::stop);
  EXPECT_TRUE(d.shed_accepted);
  EXPECT_FALSE(late);
  EXPECT_EQ(count(policy_event_kind::stopped), 1);
}

TEST_F(PolicySpec, AnAcceptInFlightWhenStopIsRequestedIsServedThenThePolicyStops) {
  accept_policy& policy = ready_policy(10, config());
  policy.request_stop();  // another thread, while accept4 runs
  permit served;
  const decision d = policy.on_accepted(now, served);
  EXPECT_EQ(d.next, step::stop);
  EXPECT_FALSE(d.shed_accepted);
  EXPECT_TRUE(served) << "the kernel had already accepted this client";
  EXPECT_EQ(budget().live(), 1U);
  EXPECT_EQ(policy.health().state, health_state::stopped);
  permit late;
  EXPECT_TRUE(policy.on_accepted(now, late).shed_accepted) << "after the stop, a late accept is shed";
  EXPECT_FALSE(late);
  served.release();
  EXPECT_EQ(budget().live(), 0U);
}

TEST_F(PolicySpec, StoppingWhilePausedUnregistersTheWaiter) {
  permit p;
  accept_policy& policy = ready_policy(1, config());
  ASSERT_EQ(policy.on_accepted(now, p).next, step::pause_for_release);
  EXPECT_EQ(budget().waiters(), 1U);
  EXPECT_EQ(policy.on_stop(now).next, step::stop);
  EXPECT_EQ(budget().waiters(), 0U);
  EXPECT_FALSE(p.release()) << "nobody waits any more";
}

TEST_F(PolicySpec, MetricsCountLiveAndPeak) {
  permit a;
  permit b;
  accept_policy& policy = ready_policy(10, config());
  ASSERT_EQ(policy.on_accepted(now, a).next, step::accept);
  ASSERT_EQ(policy.on_accepted(now, b).next, step::accept);
  ASSERT_EQ(policy.on_accept_failed(now, sys(EAGAIN)).next, step::wait);
  a.release();
  const policy_metrics m = policy.metrics();
  EXPECT_EQ(m.accepted, 2U);
  EXPECT_EQ(m.live, 1U);
  EXPECT_EQ(m.peak, 2U) << "two connections; the reservation for the third accept is not one";
  EXPECT_EQ(m.max_connections, 10U);
}

TEST_F(PolicySpec, InvalidConfigsAreRefused) {
  connection_budget budget(10);
  accept_policy_config c = config();
  c.accepts_per_ready = 0;
  EXPECT_THROW(accept_policy(budget, c), std::system_error);
  c = config();
  c.backoff.cap = 0ms;
  EXPECT_THROW(accept_policy(budget, c), std::system_error);
  c = config();
  c.stall_timeout = -1ms;
  EXPECT_EQ(validate(c), std::errc::invalid_argument);
  EXPECT_THROW(connection_budget(connection_budget::max_limit + 1), std::system_error);
}

// The state x event table (docs/acceptor.md): an event that the state does not expect is a
// bug in the driver, and the policy stops with error::unexpected_event, whatever it was doing.
TEST_F(PolicySpec, AnEventTheStateDoesNotExpectStopsThePolicyAsADriverBug) {
  {
    connection_budget budget(10);
    accept_policy policy(budget, config());
    permit p;
    const decision d = policy.on_accepted(now, p);  // nothing was asked for: waiting
    EXPECT_EQ(d.next, step::fail);
    EXPECT_EQ(d.error, make_error_code(error::unexpected_event));
    EXPECT_EQ(d.error, condition::programming_error);
    EXPECT_FALSE(p);
    EXPECT_EQ(policy.health().state, health_state::stopped);
    EXPECT_EQ(policy.on_ready(now).next, step::fail) << "the stop holds";
  }
  {
    connection_budget budget(1);
    accept_policy policy(budget, config());
    permit p;
    ASSERT_EQ(policy.on_ready(now).next, step::accept);
    ASSERT_EQ(policy.on_accepted(now, p).next, step::pause_for_release);
    EXPECT_EQ(policy.on_ready(now).error, error::unexpected_event) << "paused: the listener is not watched";
    EXPECT_EQ(budget.waiters(), 0U) << "the stop leaves the budget's waiters";
  }
  {
    connection_budget budget(10);
    accept_policy policy(budget, config());
    ASSERT_EQ(policy.on_ready(now).next, step::accept);
    EXPECT_EQ(policy.on_timer(now).error, error::unexpected_event) << "accepting arms no timer";
    EXPECT_EQ(budget.live(), 0U) << "the reservation goes back";
  }
  {
    connection_budget budget(10);
    accept_policy policy(budget, config());
    EXPECT_EQ(policy.on_accept_parked(now).error, error::unexpected_event) << "no accept was asked for";
  }
}

// A completion driver's accept waits for a connection itself: its result implies readiness.
TEST_F(PolicySpec, ACompletionResultUnderWaitImpliesReadiness) {
  connection_budget budget(10);
  accept_policy policy(budget, config());
  ASSERT_EQ(policy.current().next, step::wait);
  permit p;
  const decision d = policy.on_accept_result(now, p);
  EXPECT_TRUE(p);
  EXPECT_FALSE(d.shed_accepted);
  EXPECT_EQ(d.next, step::accept);
  EXPECT_EQ(policy.metrics().accepted, 1U);
  EXPECT_EQ(budget.live(), 2U) << "the connection, and the place for the next accept";
  EXPECT_EQ(policy.on_accept_result(now, sys(ECONNABORTED)).next, step::accept) << "skipped";
  EXPECT_EQ(policy.on_accept_parked(now).next, step::wait) << "parked: the backlog was empty";
  EXPECT_EQ(budget.live(), 1U);
  EXPECT_EQ(policy.on_accept_result(now, sys(EBADF)).next, step::fail) << "a failure under wait is classified";
}

TEST_F(PolicySpec, AParkedRequestEndsADrain) {
  accept_policy_config c = config();
  c.shed = shed_mode::close;
  accept_policy& policy = ready_policy(10, c);
  ASSERT_EQ(policy.on_accept_result(now, sys(EMFILE), true).next, step::drain);
  permit p;
  EXPECT_TRUE(policy.on_accept_result(now, p).shed_accepted);
  const decision d = policy.on_accept_parked(now);
  EXPECT_EQ(d.next, step::pause_until);
  EXPECT_EQ(d.until, now + 1ms) << "the pause holds";
}

// A completion driver's request that the stop cancelled too late brings a client the kernel
// accepted: served if a place is free (nobody else can serve it), else shed; the stop holds.
TEST_F(PolicySpec, AResultThatComesAfterTheStopIsServedIfAPlaceIsFreeElseShed) {
  permit first;
  accept_policy& policy = ready_policy(2, config());
  static_cast<void>(policy.on_accept_result(now, first));
  ASSERT_TRUE(first);
  EXPECT_FALSE(policy.serves_late()) << "not stopped";
  EXPECT_EQ(policy.on_stop(now).next, step::stop);
  EXPECT_TRUE(policy.serves_late());
  permit late;
  decision d = policy.on_accept_result(now, late);
  EXPECT_FALSE(policy.serves_late()) << "the budget is full";
  EXPECT_EQ(d.next, step::stop);
  EXPECT_FALSE(d.shed_accepted);
  EXPECT_TRUE(late) << "a place is free";
  EXPECT_EQ(budget().live(), 2U);
  permit later;
  d = policy.on_accept_result(now, later);
  EXPECT_EQ(d.next, step::stop);
  EXPECT_TRUE(d.shed_accepted) << "no place is free";
  EXPECT_FALSE(later);
  EXPECT_EQ(policy.health().state, health_state::stopped);
}

// A request that the pause cancelled may still complete: the connection cannot go back.
TEST_F(PolicySpec, AResultThatComesDuringAPauseIsServedIfAPlaceIsFreeElseShed) {
  permit first;
  accept_policy& policy = ready_policy(1, config());
  ASSERT_EQ(policy.on_accept_result(now, first).next, step::pause_for_release);
  permit late;
  decision d = policy.on_accept_result(now, late);
  EXPECT_FALSE(late);
  EXPECT_TRUE(d.shed_accepted);
  EXPECT_EQ(d.shed, shed_mode::close) << "queue: an accepted connection is closed";
  EXPECT_EQ(d.next, step::pause_for_release);
  EXPECT_EQ(budget().waiters(), 1U);
  first.release();
  d = policy.on_accept_result(now, late);
  EXPECT_TRUE(late) << "a place is free";
  EXPECT_EQ(d.next, step::pause_for_release);
}

TEST_F(PolicySpec, TheBatchIsUnboundedWhenTheModeShedsAndThePlacesBeyondABurstInQueueMode) {
  {
    connection_budget budget(10);
    accept_policy_config c = config();
    c.accepts_per_ready = 4;
    accept_policy policy(budget, c);
    EXPECT_EQ(policy.batch(), 6U) << "10 free, a burst of 4";
    EXPECT_EQ(policy.on_ready(now).next, step::accept);
    EXPECT_EQ(policy.batch(), 5U) << "the accept's place is taken";
    std::vector<permit> held;
    for (int i = 0; i < 3; ++i) {
      held.push_back(budget.try_acquire());  // places another loop (or the user) holds
    }
    EXPECT_EQ(policy.batch(), 2U) << "6 free";
    held.push_back(budget.try_acquire());
    EXPECT_EQ(policy.batch(), 1U) << "5 free: one beyond the burst, one at a time";
  }
  {
    connection_budget budget(1);
    accept_policy_config c = config();
    c.shed = shed_mode::close;
    accept_policy policy(budget, c);
    EXPECT_EQ(policy.batch(), unbounded_batch);
    EXPECT_EQ(policy.on_ready(now).next, step::accept);
    EXPECT_EQ(policy.batch(), unbounded_batch);
    permit p;
    const decision d = policy.on_accepted(now, p);
    EXPECT_EQ(d.next, step::shed);
    EXPECT_EQ(policy.batch(), 1U) << "shed one at a time";
  }
}

// At the cap on accepts per ready event, queue mode waits only while a place is free: a
// completion driver's accept under wait would take a connection it must then shed.
TEST_F(PolicySpec, AtTheBurstCapAFullBudgetPausesRatherThanWaits) {
  accept_policy_config c = config();
  c.accepts_per_ready = 1;
  permit a;
  accept_policy& policy = ready_policy(2, c);
  EXPECT_EQ(policy.on_accepted(now, a).next, step::wait) << "the cap, with a place free";
  EXPECT_EQ(budget().live(), 1U) << "waiting holds no place";
  permit b;
  ASSERT_EQ(policy.on_ready(now).next, step::accept);
  EXPECT_EQ(policy.on_accepted(now, b).next, step::pause_for_release) << "the cap, with the budget full";
}

// ---- the bound on the wait in the accept queue (max_queue_wait) ------------------------

// A connection that waited longer than max_queue_wait is shed with stale_shed, whatever the
// shed mode at the budget, holds no permit, and the loop accepts the next one at once.
TEST_F(PolicySpec, AStaleConnectionIsShedWithStaleShedAndTheLoopGoesOnAccepting) {
  for (const shed_mode mode : {shed_mode::close, shed_mode::reset, shed_mode::respond}) {
    accept_policy_config c = config();
    c.max_queue_wait = 100ms;
    c.stale_shed = mode;
    connection_budget budget(10);
    accept_policy policy(budget, c);
    ASSERT_EQ(policy.on_ready(now).next, step::accept);
    permit p;
    const decision d = policy.on_accepted(now, p, {}, 300ms);
    EXPECT_FALSE(p) << to_string(mode);
    EXPECT_TRUE(d.shed_accepted);
    EXPECT_EQ(d.shed, mode);
    EXPECT_EQ(d.next, step::accept) << "the next connection may be fresh";
    EXPECT_EQ(budget.live(), 1U) << "only the place reserved for the next accept";
    const policy_metrics m = policy.metrics();
    EXPECT_EQ(m.shed[static_cast<std::size_t>(shed_reason::queue_wait)], 1U);
    EXPECT_EQ(m.accepted, 0U);
  }
}

TEST_F(PolicySpec, AFreshConnectionIsServedUpToTheBoundItself) {
  accept_policy_config c = config();
  c.max_queue_wait = 100ms;
  accept_policy& policy = ready_policy(10, c);
  permit a;
  permit b;
  EXPECT_FALSE(policy.on_accepted(now, a, {}, 50ms).shed_accepted);
  EXPECT_FALSE(policy.on_accepted(now, b, {}, 100ms).shed_accepted) << "stale only above the bound";
  EXPECT_TRUE(a);
  EXPECT_TRUE(b);
  EXPECT_EQ(policy.metrics().accepted, 2U);
  EXPECT_EQ(policy.metrics().shed[static_cast<std::size_t>(shed_reason::queue_wait)], 0U);
}

// Queue mode: the place reserved for the accept goes back, and the next accept takes one
// again, so a stale connection never pauses the loop, even at a budget of one.
TEST_F(PolicySpec, QueueModeGivesTheReservedPlaceBackAndNeverPausesForAStaleConnection) {
  accept_policy_config c = config();
  c.max_queue_wait = 100ms;
  accept_policy& policy = ready_policy(1, c);
  ASSERT_EQ(budget().live(), 1U) << "the place reserved for the accept";
  for (int i = 0; i < 3; ++i) {
    permit stale;
    const decision d = policy.on_accepted(now, stale, {}, 300ms);
    EXPECT_TRUE(d.shed_accepted);
    EXPECT_EQ(d.next, step::accept) << "not pause_for_release: the stale connection took no place";
    EXPECT_EQ(budget().live(), 1U);
  }
  permit fresh;
  const decision d = policy.on_accepted(now, fresh, {}, 2ms);
  EXPECT_TRUE(fresh);
  EXPECT_EQ(d.next, step::pause_for_release) << "the fresh one holds the only place";
  EXPECT_EQ(policy.metrics().peak, 1U);
}

// A mode that sheds at the budget (step::shed): a stale connection there is shed as stale.
TEST_F(PolicySpec, AStaleConnectionUnderAShedStepIsCountedAsStale) {
  accept_policy_config c = config();
  c.shed = shed_mode::reset;
  c.max_queue_wait = 100ms;
  c.stale_shed = shed_mode::close;
  accept_policy& policy = ready_policy(1, c);
  permit held;
  ASSERT_EQ(policy.on_accepted(now, held, {}, 1ms).next, step::shed);
  permit p;
  const decision d = policy.on_accepted(now, p, {}, 300ms);
  EXPECT_TRUE(d.shed_accepted);
  EXPECT_EQ(d.shed, shed_mode::close);
  EXPECT_EQ(d.next, step::shed);
  EXPECT_EQ(policy.metrics().shed[static_cast<std::size_t>(shed_reason::queue_wait)], 1U);
  EXPECT_EQ(policy.metrics().shed[static_cast<std::size_t>(shed_reason::budget)], 0U);
}

TEST_F(PolicySpec, WithoutABoundTheWaitIsIgnoredAndNothingIsRecorded) {
  accept_policy& policy = ready_policy(10, config());
  permit p;
  EXPECT_FALSE(policy.on_accepted(now, p, {}, 10min).shed_accepted);
  EXPECT_TRUE(p);
  const policy_metrics m = policy.metrics();
  EXPECT_EQ(m.queue_wait_count, 0U);
  EXPECT_FALSE(m.queue_wait_measured);
  EXPECT_FALSE(policy.measures_queue_wait());
}

TEST_F(PolicySpec, MeasuredWaitsFillTheHistogram) {
  accept_policy_config c = config();
  c.max_queue_wait = 1s;
  accept_policy& policy = ready_policy(10, c);
  std::vector<permit> held(4);
  for (std::size_t i = 0; const std::chrono::milliseconds waited : {0ms, 5ms, 6ms, 2000ms}) {
    static_cast<void>(policy.on_accepted(now, held[i++], {}, waited));
  }
  const policy_metrics m = policy.metrics();
  EXPECT_TRUE(m.queue_wait_measured);
  EXPECT_EQ(m.queue_wait_count, 4U);
  EXPECT_EQ(m.queue_wait_sum, 2011ms);
  EXPECT_EQ(m.queue_wait_buckets[0], 2U) << "0 and 5 ms: at most 5 ms";
  EXPECT_EQ(m.queue_wait_buckets[1], 1U) << "6 ms: at most 10 ms";
  EXPECT_EQ(m.queue_wait_buckets[8], 1U) << "2 s: at most 2.5 s";
}

// One event when stale shedding begins, silence while it goes on, one when a fresh connection
// ends it, with how many were shed.
TEST_F(PolicySpec, StaleSheddingIsReportedOncePerEpisode) {
  accept_policy_config c = config();
  c.max_queue_wait = 100ms;
  c.label = "127.0.0.1:8080";
  accept_policy& policy = ready_policy(10, c);
  std::vector<permit> shed(3);
  static_cast<void>(policy.on_accepted(now, shed[0], {}, 312ms));
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].kind, policy_event_kind::stale_shed);
  EXPECT_EQ(events[0].queue_wait, 312ms);
  EXPECT_EQ(events[0].max_queue_wait, 100ms);
  EXPECT_EQ(format(events[0]),
            "transient: 127.0.0.1:8080: shedding stale connections: one waited 0.3 s in the accept queue, above "
            "max_queue_wait 0.1 s; live 1/10");
  advance(20ms);
  static_cast<void>(policy.on_accepted(now, shed[1], {}, 250ms));
  static_cast<void>(policy.on_accepted(now, shed[2], {}, 200ms));
  EXPECT_EQ(events.size(), 1U) << "quiet while the episode goes on";
  permit fresh;
  static_cast<void>(policy.on_accepted(now, fresh, {}, 3ms));
  ASSERT_EQ(events.size(), 2U);
  EXPECT_EQ(events[1].kind, policy_event_kind::stale_shed_ended);
  EXPECT_EQ(events[1].shed, 3U);
  EXPECT_EQ(events[1].duration, 20ms);
  EXPECT_EQ(format(events[1]),
            "transient: 127.0.0.1:8080: stale shedding ended after 20 ms: 3 connections shed for waiting over "
            "max_queue_wait 0.1 s; live 1/10");
  permit another;
  static_cast<void>(policy.on_accepted(now, another, {}, 3ms));
  EXPECT_EQ(events.size(), 2U) << "no episode, no line";
}

// The queue seen empty ends an episode too: an accept's EAGAIN, a completion driver's parked
// request, or the stop.
TEST_F(PolicySpec, AnEmptyQueueOrTheStopEndsStaleShedding) {
  accept_policy_config c = config();
  c.max_queue_wait = 100ms;
  accept_policy& policy = ready_policy(10, c);
  permit p;
  static_cast<void>(policy.on_accepted(now, p, {}, 300ms));
  ASSERT_EQ(policy.on_accept_failed(now, sys(EAGAIN)).next, step::wait);
  ASSERT_EQ(count(policy_event_kind::stale_shed_ended), 1);

  static_cast<void>(policy.on_accept_result(now, p, {}, 300ms));  // a completion under wait
  ASSERT_EQ(count(policy_event_kind::stale_shed), 2);
  ASSERT_EQ(policy.on_accept_parked(now).next, step::wait);
  ASSERT_EQ(count(policy_event_kind::stale_shed_ended), 2);

  static_cast<void>(policy.on_accept_result(now, p, {}, 300ms));
  ASSERT_EQ(count(policy_event_kind::stale_shed), 3);
  static_cast<void>(policy.on_stop(now));
  ASSERT_EQ(events.size(), 7U);
  EXPECT_EQ(events[5].kind, policy_event_kind::stale_shed_ended) << "the episode ends before the stop line";
  EXPECT_EQ(events[6].kind, policy_event_kind::stopped);
}

// The bound a driver uses instead of a system call: the time since the queue was last seen
// empty; unbounded before that (clients may wait from before the start).
TEST_F(PolicySpec, TheQueueWaitBoundIsTheTimeSinceTheQueueWasSeenEmpty) {
  accept_policy_config c = config();
  c.max_queue_wait = 100ms;
  accept_policy& policy = ready_policy(10, c);
  EXPECT_TRUE(policy.measures_queue_wait());
  EXPECT_EQ(policy.queue_wait_bound(now), accept_policy::clock::duration::max());
  ASSERT_EQ(policy.on_accept_failed(now, sys(EAGAIN)).next, step::wait);
  advance(3ms);
  EXPECT_EQ(policy.queue_wait_bound(now), 3ms);
  ASSERT_EQ(policy.on_ready(now).next, step::accept);
  ASSERT_EQ(policy.on_accept_failed(now, sys(ECONNABORTED)).next, step::accept);
  advance(1ms);
  EXPECT_EQ(policy.queue_wait_bound(now), 4ms) << "a skipped connection does not show the queue empty";
  ASSERT_EQ(policy.on_accept_parked(now).next, step::wait);
  advance(2ms);
  EXPECT_EQ(policy.queue_wait_bound(now), 2ms) << "a parked request: the queue was empty";
}

TEST_F(PolicySpec, InvalidQueueWaitSettingsAreRefused) {
  accept_policy_config c = config();
  c.max_queue_wait = -1ms;
  EXPECT_EQ(validate(c), std::errc::invalid_argument);
  c.max_queue_wait = std::chrono::duration_cast<std::chrono::milliseconds>(longest_setting) + 1ms;
  EXPECT_EQ(validate(c), std::errc::invalid_argument);
  c.max_queue_wait = 100ms;
  c.stale_shed = shed_mode::queue;
  EXPECT_EQ(validate(c), std::errc::invalid_argument) << "an accepted connection cannot go back to the queue";
  c.stale_shed = static_cast<shed_mode>(9);
  EXPECT_EQ(validate(c), std::errc::invalid_argument);
  for (const shed_mode mode : {shed_mode::close, shed_mode::reset, shed_mode::respond}) {
    c.stale_shed = mode;
    EXPECT_FALSE(validate(c)) << to_string(mode);
  }
  connection_budget budget(1);
  c.stale_shed = shed_mode::queue;
  EXPECT_THROW(accept_policy(budget, c), std::system_error);
}

TEST(DefaultBudget, ZeroMeansAutoAsEverywhereABudgetIsGiven) {
  std::error_code ec;
  const std::uint64_t expected = default_max_connections(ec);
  ASSERT_FALSE(ec);
  const connection_budget automatic(0);
  EXPECT_EQ(automatic.max_connections(), expected);
  EXPECT_EQ(automatic.fd_limit(), fd_soft_limit(ec)) << "the limit it came from, for log lines";
  EXPECT_EQ(connection_budget(0, 77).fd_limit(), 77U);
}

TEST(DefaultBudget, TheReserveIsTheLargerOf32And5Percent) {
  EXPECT_EQ(max_connections_for(1024), 972U);
  EXPECT_EQ(max_connections_for(65536), 62259U);
  EXPECT_EQ(max_connections_for(100), 68U);
  EXPECT_EQ(max_connections_for(33), 1U);
  EXPECT_EQ(max_connections_for(32), 0U);
  EXPECT_EQ(max_connections_for(0), 0U);
}

TEST(DefaultBudget, FollowsTheProcessSoftLimit) {
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  ASSERT_NE(limit.rlim_cur, RLIM_INFINITY);
  const std::uint64_t soft = limit.rlim_cur;
  const std::uint64_t headroom = soft / 20 + (soft % 20 != 0 ? 1 : 0) > 32 ? soft / 20 + (soft % 20 != 0 ? 1 : 0) : 32;
  std::error_code ec;
  EXPECT_EQ(default_max_connections(ec), soft > headroom ? soft - headroom : 0);
  EXPECT_EQ(static_cast<bool>(ec), soft <= headroom);
}

}  // namespace
}  // namespace transient
