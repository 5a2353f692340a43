// The policy is sans-IO: without a sink it writes nowhere. The drivers give it stderr by
// default (with_default_sink), so their users still get the lines.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <string>

#include "transient/detail/driver_kit.hpp"
#include "transient/policy/accept_policy.hpp"

namespace transient {
namespace {

// What `body` writes to this process's stderr (descriptor 2), read through a pipe.
template <class Body>
std::string stderr_of(Body&& body) {
  std::array<int, 2> pipe{};
  EXPECT_EQ(::pipe2(pipe.data(), O_CLOEXEC | O_NONBLOCK), 0);
  const int saved = ::dup(2);
  ::dup2(pipe[1], 2);
  body();
  ::dup2(saved, 2);
  ::close(saved);
  ::close(pipe[1]);
  std::string out;
  std::array<char, 4096> buffer{};
  for (ssize_t n = 0; (n = ::read(pipe[0], buffer.data(), buffer.size())) > 0;) {
    out.append(buffer.data(), static_cast<std::size_t>(n));
  }
  ::close(pipe[0]);
  return out;
}

// Exhaustion, then a stop: a `degraded` and a `stopped` event.
void degrade_and_stop(accept_policy& policy) {
  const auto now = accept_policy::time_point{} + std::chrono::hours(1);
  ASSERT_EQ(policy.on_ready(now).next, step::accept);
  ASSERT_EQ(policy.on_accept_failed(now, {EMFILE, std::system_category()}).next, step::pause_until);
  policy.request_stop();
  ASSERT_EQ(policy.on_stop(now).next, step::stop);
}

TEST(PolicySink, WithoutASinkThePolicyWritesNowhere) {
  connection_budget budget(4);
  accept_policy policy(budget, accept_policy_config{});
  const std::string written = stderr_of([&] { degrade_and_stop(policy); });
  EXPECT_EQ(written, "");
}

TEST(PolicySink, DriversGiveThePolicyStderrUnlessASinkIsGiven) {
  connection_budget budget(4);
  accept_policy policy(budget, with_default_sink({}));
  const std::string written = stderr_of([&] { degrade_and_stop(policy); });
  EXPECT_NE(written.find("accept degraded: process_fd_limit"), std::string::npos) << written;
  int received = 0;
  accept_policy_config given;
  given.sink = [&received](const policy_event&) { ++received; };
  connection_budget other(4);
  accept_policy quiet(other, with_default_sink(given));
  EXPECT_EQ(stderr_of([&] { degrade_and_stop(quiet); }), "");
  EXPECT_GE(received, 2) << "the sink given is kept";
}

}  // namespace
}  // namespace transient
