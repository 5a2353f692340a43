// Durations in the library's settings: every one is checked against longest_setting, so that
// no value a user gives can overflow the clock's arithmetic (a deadline of now plus the
// duration, in nanoseconds); the longest accepted one behaves as a long timeout, not as a
// deadline in the past. A fake clock, no sockets.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "support/exhausted_policy.hpp"
#include "transient/policy/accept_policy.hpp"

namespace transient {
namespace {

using namespace std::chrono_literals;
using time_point = accept_policy::time_point;

// Each duration of an accept_policy_config, by name, with a way to set it.
struct duration_field {
  const char* name;
  std::function<void(accept_policy_config&, std::chrono::milliseconds)> set;
};

std::vector<duration_field> duration_fields() {
  return {
      {"stall_timeout", [](accept_policy_config& c, std::chrono::milliseconds d) { c.stall_timeout = d; }},
      {"summary_interval", [](accept_policy_config& c, std::chrono::milliseconds d) { c.summary_interval = d; }},
      {"quiet_period", [](accept_policy_config& c, std::chrono::milliseconds d) { c.quiet_period = d; }},
  };
}

TEST(SettingRanges, EveryPolicyDurationIsRefusedAboveTheLongestSettingAndTakenUpToIt) {
  const std::chrono::milliseconds longest = longest_setting;
  for (const auto& field : duration_fields()) {
    SCOPED_TRACE(field.name);
    for (const std::chrono::milliseconds d : {longest, longest / 2, 1ms}) {
      accept_policy_config c;
      field.set(c, d);
      EXPECT_FALSE(validate(c)) << d.count() << " ms";
    }
    // Just above, the largest a std::chrono::milliseconds holds, and the values that overflow
    // nanoseconds or a time point.
    for (const std::chrono::milliseconds d :
         {longest + 1ms, std::chrono::milliseconds::max(), std::chrono::milliseconds(9223372036LL * 1000),
          std::chrono::milliseconds(9223372036854LL), -1ms, std::chrono::milliseconds::min()}) {
      accept_policy_config c;
      field.set(c, d);
      EXPECT_EQ(validate(c), std::errc::invalid_argument) << d.count() << " ms";
      connection_budget budget(1);
      EXPECT_THROW(accept_policy(budget, c), std::system_error) << d.count() << " ms";
    }
  }
}

// The backoff's durations are nanoseconds: their largest values are swept on their own.
TEST(SettingRanges, ABackoffCapAboveTheLongestSettingIsRefused) {
  backoff_config c;
  c.cap = longest_setting;
  EXPECT_FALSE(validate(c));
  for (const std::chrono::nanoseconds cap :
       {std::chrono::nanoseconds(longest_setting) + std::chrono::nanoseconds(1), std::chrono::nanoseconds::max()}) {
    c.cap = cap;
    EXPECT_EQ(validate(c), std::errc::invalid_argument) << cap.count() << " ns";
    EXPECT_THROW(backoff{c}, std::system_error);
    accept_policy_config policy;
    policy.backoff = c;
    EXPECT_EQ(validate(policy), std::errc::invalid_argument);
  }
}

// The longest stall timeout is a long watchdog: exhausted accepts pause until a deadline in
// the future (they never spin), and the watchdog fires only after the whole timeout.
TEST(SettingRanges, TheLongestStallTimeoutPausesAndFiresOnTimeWithoutOverflow) {
  connection_budget budget(10);
  accept_policy_config c;
  c.backoff.mode = jitter::none;
  c.backoff.cap = longest_setting;  // the longest pauses too
  c.backoff.factor = 1000;
  c.seed = 1;
  c.stall_timeout = longest_setting;
  c.sink = [](const policy_event&) {};
  accept_policy policy(budget, c);
  time_point now = time_point{} + 1000h;
  const time_point start = now;
  const test::exhausted_run run = test::run_exhausted(policy, now, 100);
  EXPECT_EQ(run.last.next, step::fail);
  EXPECT_TRUE(run.last.error == condition::stalled);
  EXPECT_EQ(now - start, longest_setting) << "stops exactly at the timeout";
  EXPECT_GT(run.pauses, 2);
}

}  // namespace
}  // namespace transient
