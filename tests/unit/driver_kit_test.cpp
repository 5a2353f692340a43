// The driver kit's shared steps, which every driver (epoll, io_uring, Asio) calls instead of
// writing its own: shedding up to the close (shed_as), a failure's context and the stop_info
// of the policy's last decision.
#include "transient/detail/driver_kit.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <functional>
#include <stdexcept>

#include "transient/errors/errors.hpp"
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

}  // namespace
}  // namespace transient
