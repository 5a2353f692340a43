// An accept policy driven through descriptor exhaustion on a fake clock: every accept fails
// with EMFILE, and the clock jumps to the end of each backoff pause, until the policy decides
// anything but a pause (the watchdog's fail, in the tests that use it).
#pragma once

#include <gtest/gtest.h>

#include <cerrno>
#include <system_error>

#include "transient/policy/accept_policy.hpp"

namespace transient::test {

/// How an exhausted run ended: the policy's last decision and the pauses before it.
struct exhausted_run {
  decision last;
  int pauses = 0;
};

/// Makes `policy` ready at `now`, fails its accepts with EMFILE and follows its pauses (at
/// most `max_pauses`), moving `now` to each pause's end; every pause must end after it starts.
inline exhausted_run run_exhausted(accept_policy& policy, accept_policy::time_point& now, int max_pauses) {
  const std::error_code emfile(EMFILE, std::system_category());
  exhausted_run run;
  EXPECT_EQ(policy.on_ready(now).next, step::accept);
  run.last = policy.on_accept_failed(now, emfile);
  for (; run.pauses < max_pauses && run.last.next == step::pause_until; ++run.pauses) {
    EXPECT_GT(run.last.until, now) << "a pause that ends before it starts is a spin";
    now = run.last.until;
    run.last = policy.on_timer(now);
    if (run.last.next == step::accept) {
      run.last = policy.on_accept_failed(now, emfile);
    }
  }
  return run;
}

}  // namespace transient::test
