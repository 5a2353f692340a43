// The driver kit's shared steps, which every driver (epoll, io_uring, Asio) calls instead of
// writing its own: shedding up to the close (shed_as), a failure's context and the stop_info
// of the policy's last decision.
#include "transient/detail/driver_kit.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <stdexcept>

#include "support/loopback.hpp"
#include "transient/errors/errors.hpp"
#include "transient/sockets/listener.hpp"
#include "transient/testing/syscalls.hpp"

namespace transient {
namespace {

using namespace std::chrono_literals;

thread_local int linger_calls = 0;
thread_local int linger_on = -1;

int record_setsockopt(int /*fd*/, int level, int name, const void* value, socklen_t /*length*/) {
  if (level == SOL_SOCKET && name == SO_LINGER) {
    ++linger_calls;
    linger_on = static_cast<const linger*>(value)->l_onoff;
  }
  return 0;
}

syscalls recording() {
  syscalls sys;
  sys.setsockopt = record_setsockopt;
  linger_calls = 0;
  linger_on = -1;
  return sys;
}

// A refusal writer that counts its calls.
struct counting_refusal {
  int calls = 0;
  std::function<void()> writer() {
    return [this] { ++calls; };
  }
};

TEST(DriverKit, ShedAsResetSetsAnAbortiveLingerAndWritesNoRefusal) {
  const syscalls sys = recording();
  counting_refusal refusal;
  EXPECT_TRUE(shed_as(shed_mode::reset, 7, refusal.writer(), sys));
  EXPECT_EQ(linger_calls, 1);
  EXPECT_EQ(linger_on, 1);
  EXPECT_EQ(refusal.calls, 0);
}

TEST(DriverKit, ShedAsRespondWritesTheRefusalAndCloseDoesNothingBeforeTheClose) {
  const syscalls sys = recording();
  counting_refusal refusal;
  EXPECT_TRUE(shed_as(shed_mode::respond, 7, refusal.writer(), sys));
  EXPECT_EQ(refusal.calls, 1);
  EXPECT_TRUE(shed_as(shed_mode::close, 7, refusal.writer(), sys));
  EXPECT_EQ(refusal.calls, 1);
  EXPECT_EQ(linger_calls, 0);
  EXPECT_TRUE(shed_as(shed_mode::respond, 7, nullptr, sys)) << "no writer: nothing to write";
}

TEST(DriverKit, ShedAsReportsAThrowingRefusalWriterAsFalse) {
  const std::function<void()> refuse = [] { throw std::runtime_error("no"); };
  EXPECT_FALSE(shed_as(shed_mode::respond, 7, refuse, recording()));
}

TEST(DriverKit, FailureContextOfTakesTheLoadFromTheBudget) {
  connection_budget budget(5);
  permit one = budget.try_acquire();
  permit two = budget.try_acquire();
  const std::error_code emfile{EMFILE, std::system_category()};
  const failure_context c = failure_context_of("127.0.0.1:80", "closed", emfile, budget, 3s);
  EXPECT_EQ(c.where, "127.0.0.1:80");
  EXPECT_EQ(c.listener_state, "closed");
  EXPECT_EQ(c.last_accept_error, emfile);
  EXPECT_EQ(c.live, 2U);
  EXPECT_EQ(c.max_connections, 5U);
  EXPECT_EQ(c.stall_timeout, 3s);
}

TEST(DriverKit, StopInfoOfAFailDecisionDiagnosesItAndAttachesTheDiagnosis) {
  connection_budget budget(5);
  accept_policy policy(budget);
  const auto now = accept_policy::clock::now();
  static_cast<void>(policy.on_ready(now));
  const decision d = policy.on_accept_failed(now, {EINVAL, std::system_category()});
  ASSERT_EQ(d.next, step::fail);
  const stop_info info = stop_info_of(policy, d, failure_context_of("127.0.0.1:80", "not listening", {}, budget, 1s));
  EXPECT_EQ(info.reason, stop_reason::listener_dead);
  EXPECT_EQ(info.error, d.error);
  EXPECT_EQ(info.diagnosis, "listener 127.0.0.1:80 stopped listening: not listening");
  EXPECT_EQ(policy.diagnosis(), info.diagnosis);
}

TEST(DriverKit, StopInfoOfACleanStopIsCleanAndAttachesNothing) {
  connection_budget budget(5);
  accept_policy policy(budget);
  const decision d = policy.on_stop(accept_policy::clock::now());
  const stop_info info = stop_info_of(policy, d, failure_context_of("127.0.0.1:80", "", {}, budget, 1s));
  EXPECT_TRUE(info.ok());
  EXPECT_EQ(info.reason, stop_reason::clean);
  EXPECT_TRUE(info.diagnosis.empty());
  EXPECT_TRUE(policy.diagnosis().empty());
}

// ---- the wait in the accept queue -------------------------------------------------------

thread_local int tcp_info_calls = 0;
thread_local bool tcp_info_fails = false;

// getsockopt(TCP_INFO) as the kernel answers for a connection whose handshake was 250 ms ago,
// or failing (EBADF) when `tcp_info_fails`.
int fake_getsockopt(int /*fd*/, int level, int name, void* value, socklen_t* length) {
  if (level == IPPROTO_TCP && name == TCP_INFO) {
    ++tcp_info_calls;
    if (tcp_info_fails) {
      errno = EBADF;
      return -1;
    }
    tcp_info info{};
    info.tcpi_last_data_sent = 250;
    std::memcpy(value, &info, std::min<std::size_t>(*length, sizeof info));
    return 0;
  }
  return -1;
}

syscalls measuring(bool fails = false) {
  syscalls sys;
  sys.getsockopt = fake_getsockopt;
  tcp_info_calls = 0;
  tcp_info_fails = fails;
  return sys;
}

accept_policy_config bounded(std::chrono::milliseconds max_queue_wait) {
  accept_policy_config c;
  c.max_queue_wait = max_queue_wait;
  return c;
}

TEST(DriverKit, WithoutABoundTheWaitIsNotMeasured) {
  const syscalls sys = measuring();
  connection_budget budget(5);
  const accept_policy policy(budget);
  const auto now = accept_policy::clock::now();
  EXPECT_EQ(queue_wait(policy, now, 7, sys), 0ms);
  EXPECT_EQ(queue_wait(policy, 7, sys), 0ms);
  EXPECT_EQ(tcp_info_calls, 0) << "no system call on the path every connection takes";
}

TEST(DriverKit, TheWaitIsMeasuredUntilTheQueueWasSeenEmpty) {
  const syscalls sys = measuring();
  connection_budget budget(5);
  const accept_policy policy(budget, bounded(100ms));
  EXPECT_EQ(queue_wait(policy, accept_policy::clock::now(), 7, sys), 250ms);
  EXPECT_EQ(tcp_info_calls, 1) << "connections may have waited from before the start";
}

TEST(DriverKit, AQueueSeenEmptyWithinTheFloorSparesTheSystemCall) {
  const syscalls sys = measuring();
  connection_budget budget(5);
  accept_policy policy(budget, bounded(100ms));
  const auto now = accept_policy::clock::now();
  static_cast<void>(policy.on_ready(now));
  ASSERT_EQ(policy.on_accept_failed(now, {EAGAIN, std::system_category()}).next, step::wait);
  EXPECT_EQ(queue_wait(policy, now + 2500us, 7, sys), 3ms) << "the bound, rounded up";
  EXPECT_EQ(queue_wait(policy, now + queue_wait_floor, 7, sys), queue_wait_floor);
  EXPECT_EQ(tcp_info_calls, 0);
  EXPECT_EQ(queue_wait(policy, now + queue_wait_floor + 1ms, 7, sys), 250ms);
  EXPECT_EQ(tcp_info_calls, 1);
}

TEST(DriverKit, ABoundBelowTheFloorIsNeverPassedForTheWait) {
  const syscalls sys = measuring();
  connection_budget budget(5);
  accept_policy policy(budget, bounded(2ms));
  const auto now = accept_policy::clock::now();
  static_cast<void>(policy.on_ready(now));
  ASSERT_EQ(policy.on_accept_failed(now, {EAGAIN, std::system_category()}).next, step::wait);
  EXPECT_EQ(queue_wait(policy, now + 3ms, 7, sys), 250ms) << "3 ms may be stale for a bound of 2 ms: measured";
  EXPECT_EQ(tcp_info_calls, 1);
}

TEST(DriverKit, AFailedMeasurementIsUnknownAndNeverAStaleWait) {
  const syscalls sys = measuring(true);
  connection_budget budget(5);
  const accept_policy policy(budget, bounded(100ms));
  EXPECT_EQ(queue_wait(policy, accept_policy::clock::now(), 7, sys), 0ms);
  EXPECT_EQ(tcp_info_calls, 1);
}

TEST(DriverKit, StaleShedRespondNeedsARefusalWriter) {
  accept_policy_config c = bounded(100ms);
  c.stale_shed = shed_mode::respond;
  EXPECT_THROW(check_driver_options("d", c, false), std::system_error);
  EXPECT_NO_THROW(check_driver_options("d", c, true));
  c.max_queue_wait = 0ms;
  EXPECT_NO_THROW(check_driver_options("d", c, false)) << "no bound: stale_shed is never used";
  c.max_queue_wait = 100ms;
  c.stale_shed = shed_mode::queue;
  EXPECT_THROW(check_driver_options("d", c, true), std::system_error);
}

// The stall diagnosis says how many clients were waiting, from the listener's queue.
TEST(DriverKit, AFailureSaysHowManyClientsWereWaitingInTheAcceptQueue) {
  listen_options options;
  options.backlog = 8;
  const listener l = listen(endpoint::loopback_v4(0), options);
  const unique_fd one = test::connect_to(l.local_endpoint());
  const unique_fd two = test::connect_to(l.local_endpoint());
  ASSERT_TRUE(one && two);
  connection_budget budget(5);
  const std::error_code ebadf{EBADF, std::system_category()};
  const failure_context c = failure_context_of("127.0.0.1:80", "", ebadf, budget, 1s, l.native_handle());
  ASSERT_TRUE(c.queue.has_value());
  EXPECT_EQ(*c.queue, (listen_queue{2, 8}));
  const std::string text = failure_text(ebadf, c);
  EXPECT_NE(text.find("; 2 clients were waiting in the accept queue (limit 8)"), std::string::npos) << text;
  failure_context stalled = c;
  stalled.queue = listen_queue{412, 4096};
  const std::string stall = failure_text(make_error_code(error::stalled), stalled);
  EXPECT_NE(stall.find("\n  queue:       412 clients were waiting in the accept queue (limit 4096)"), std::string::npos)
      << stall;
  EXPECT_FALSE(failure_context_of("x", "", ebadf, budget, 1s).queue) << "no listener given";
  EXPECT_FALSE(failure_context_of("x", "", ebadf, budget, 1s, one.get()).queue) << "not a listener";
}

}  // namespace
}  // namespace transient
