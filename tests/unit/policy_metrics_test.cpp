// Counters snapshot and its Prometheus text.
#include "transient/policy/events.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <vector>

#include "transient/errors/classify.hpp"
#include "transient/policy/accept_policy.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace transient {
namespace {

using namespace std::chrono_literals;

policy_metrics sample() {
  policy_metrics m;
  m.accepted = 42;
  m.retried = 1;
  m.skipped[static_cast<std::size_t>(condition::peer_gone)] = 3;
  m.failed[static_cast<std::size_t>(condition::process_fd_limit)] = 7;
  m.shed[static_cast<std::size_t>(shed_reason::peer_limit)] = 2;
  m.pauses[static_cast<std::size_t>(pause_reason::backoff)] = 4;
  m.paused[static_cast<std::size_t>(pause_reason::backoff)] = 1500ms;
  m.live = 5;
  m.peak = 9;
  m.max_connections = 972;
  return m;
}

TEST(PolicyMetrics, RendersThePrometheusTextFormat) {
  const std::string expected =
      "# HELP app_accepted_total Connections accepted and handed out with a permit.\n"
      "# TYPE app_accepted_total counter\n"
      "app_accepted_total 42\n"
      "# HELP app_accept_retried_total Accepts retried at once after EINTR.\n"
      "# TYPE app_accept_retried_total counter\n"
      "app_accept_retried_total 1\n"
      "# HELP app_accept_skipped_total Pending connections that died before accept, skipped.\n"
      "# TYPE app_accept_skipped_total counter\n"
      "app_accept_skipped_total{condition=\"connection_failed\"} 0\n"
      "app_accept_skipped_total{condition=\"peer_gone\"} 3\n"
      "app_accept_skipped_total{condition=\"permission_denied\"} 0\n"
      "app_accept_skipped_total{condition=\"not_supported\"} 0\n"
      "# HELP app_accept_failed_total Accept failures that paused or stopped the loop.\n"
      "# TYPE app_accept_failed_total counter\n"
      "app_accept_failed_total{condition=\"process_fd_limit\"} 7\n"
      "app_accept_failed_total{condition=\"system_fd_limit\"} 0\n"
      "app_accept_failed_total{condition=\"memory_exhausted\"} 0\n"
      "app_accept_failed_total{condition=\"not_supported\"} 0\n"
      "app_accept_failed_total{condition=\"not_listening\"} 0\n"
      "app_accept_failed_total{condition=\"programming_error\"} 0\n"
      "app_accept_failed_total{condition=\"unclassified\"} 0\n"
      "# HELP app_shed_total Connections shed instead of served.\n"
      "# TYPE app_shed_total counter\n"
      "app_shed_total{reason=\"budget\"} 0\n"
      "app_shed_total{reason=\"peer_limit\"} 2\n"
      "app_shed_total{reason=\"queue_wait\"} 0\n"
      "# HELP app_pauses_total Times accepting paused.\n"
      "# TYPE app_pauses_total counter\n"
      "app_pauses_total{reason=\"capacity\"} 0\n"
      "app_pauses_total{reason=\"backoff\"} 4\n"
      "# HELP app_paused_seconds_total Time spent with accepting paused.\n"
      "# TYPE app_paused_seconds_total counter\n"
      "app_paused_seconds_total{reason=\"capacity\"} 0\n"
      "app_paused_seconds_total{reason=\"backoff\"} 1.5\n"
      "# HELP app_live_connections Places taken in the connection budget.\n"
      "# TYPE app_live_connections gauge\n"
      "app_live_connections 5\n"
      "# HELP app_peak_connections Most connections open at once (accepts in flight not counted).\n"
      "# TYPE app_peak_connections gauge\n"
      "app_peak_connections 9\n"
      "# HELP app_max_connections Size of the connection budget.\n"
      "# TYPE app_max_connections gauge\n"
      "app_max_connections 972\n";
  EXPECT_EQ(to_prometheus(sample(), "app"), expected);
}

TEST(PolicyMetrics, TheDefaultPrefixIsTransient) {
  const std::string text = to_prometheus(policy_metrics{});
  EXPECT_NE(text.find("\ntransient_accepted_total 0\n"), std::string::npos);
  EXPECT_NE(text.find("\ntransient_accept_failed_total{condition=\"process_fd_limit\"} 0\n"), std::string::npos)
      << "every condition of the fixed set from the start, at 0";
}

TEST(PolicyMetrics, AnInvalidPrefixIsAnError) {
  std::error_code ec;
  EXPECT_EQ(to_prometheus(sample(), "9lives", ec), "");
  EXPECT_EQ(ec, std::errc::invalid_argument);
  EXPECT_EQ(to_prometheus(sample(), "", ec), "");
  EXPECT_EQ(to_prometheus(sample(), "a-b", ec), "");
  EXPECT_THROW((void)to_prometheus(sample(), "a b"), std::system_error);
  EXPECT_NE(to_prometheus(sample(), "ns:app_1", ec), "");
  EXPECT_FALSE(ec);
}

TEST(PolicyMetrics, SnapshotsOfSeveralLoopsAddUp) {
  policy_metrics total = sample();
  policy_metrics other = sample();
  other.live = 6;
  other.peak = 8;
  total += other;
  EXPECT_EQ(total.accepted, 84U);
  EXPECT_EQ(total.failed[static_cast<std::size_t>(condition::process_fd_limit)], 14U);
  EXPECT_EQ(total.paused[static_cast<std::size_t>(pause_reason::backoff)], 3s);
  EXPECT_EQ(total.live, 6U) << "loops share the budget: its figures are not summed";
  EXPECT_EQ(total.peak, 9U);
  EXPECT_EQ(total.max_connections, 972U);
}

// The queue-wait histogram, by Prometheus's conventions: cumulative buckets in seconds with
// +Inf last, then _sum and _count; shown only while the waits are measured.
TEST(PolicyMetrics, TheQueueWaitHistogramFollowsPrometheusConventions) {
  policy_metrics m;
  EXPECT_EQ(to_prometheus(m, "app").find("queue_wait_seconds"), std::string::npos) << "not measured: not shown";
  m.queue_wait_measured = true;
  EXPECT_NE(to_prometheus(m, "app").find("app_queue_wait_seconds_count 0\n"), std::string::npos)
      << "measured: shown before the first connection";
  for (const auto waited : {0ms, 5ms, 7ms, 300ms, 12000ms}) {
    m.record_queue_wait(waited);
  }
  const std::string expected =
      "# HELP app_queue_wait_seconds Time accepted connections waited in the accept queue.\n"
      "# TYPE app_queue_wait_seconds histogram\n"
      "app_queue_wait_seconds_bucket{le=\"0.005\"} 2\n"
      "app_queue_wait_seconds_bucket{le=\"0.01\"} 3\n"
      "app_queue_wait_seconds_bucket{le=\"0.025\"} 3\n"
      "app_queue_wait_seconds_bucket{le=\"0.05\"} 3\n"
      "app_queue_wait_seconds_bucket{le=\"0.1\"} 3\n"
      "app_queue_wait_seconds_bucket{le=\"0.25\"} 3\n"
      "app_queue_wait_seconds_bucket{le=\"0.5\"} 4\n"
      "app_queue_wait_seconds_bucket{le=\"1\"} 4\n"
      "app_queue_wait_seconds_bucket{le=\"2.5\"} 4\n"
      "app_queue_wait_seconds_bucket{le=\"5\"} 4\n"
      "app_queue_wait_seconds_bucket{le=\"10\"} 4\n"
      "app_queue_wait_seconds_bucket{le=\"+Inf\"} 5\n"
      "app_queue_wait_seconds_sum 12.312\n"
      "app_queue_wait_seconds_count 5\n";
  EXPECT_NE(to_prometheus(m, "app").find(expected), std::string::npos) << to_prometheus(m, "app");
  policy_metrics other;
  other.record_queue_wait(1ms);
  other += m;
  EXPECT_EQ(other.queue_wait_count, 6U);
  EXPECT_EQ(other.queue_wait_buckets[0], 3U);
  EXPECT_EQ(other.queue_wait_sum, 12313ms);
  EXPECT_TRUE(other.queue_wait_measured);
}

TEST(PolicyMetrics, ReasonNames) {
  EXPECT_EQ(to_string(shed_reason::budget), "budget");
  EXPECT_EQ(to_string(shed_reason::peer_limit), "peer_limit");
  EXPECT_EQ(to_string(shed_reason::queue_wait), "queue_wait");
  EXPECT_EQ(to_string(pause_reason::capacity), "capacity");
  EXPECT_EQ(to_string(pause_reason::backoff), "backoff");
}

template <std::size_t N>
bool in(const std::array<condition, N>& set, condition c) {
  return std::ranges::find(set, c) != set.end();
}

// The fixed sets are exactly the conditions the policy counts for accept: every errno accept
// may return lands in one (skip: skipped; back_off, fail: failed), and every member is reached
// by some errno (EOPNOTSUPP on a verified listener: a skip). transient's own codes (a stall)
// are not accept's: a stall stops the policy without counting a failure.
TEST(PolicyMetrics, TheFixedConditionSetsAreWhatAcceptCanCount) {
  std::vector<std::error_code> codes;
  for (const int e : all_errno_values()) {
    codes.emplace_back(e, std::system_category());
  }
  std::vector<condition> skipped{condition::not_supported};
  std::vector<condition> failed;
  for (const std::error_code& ec : codes) {
    const verdict v = classify(operation::accept, ec);
    if (v.what == action::skip) {
      EXPECT_TRUE(in(accept_skip_conditions, v.why)) << ec.message() << ": " << to_string(v.why);
      skipped.push_back(v.why);
    } else if (v.what == action::back_off || v.what == action::fail) {
      EXPECT_TRUE(in(accept_failure_conditions, v.why)) << ec.message() << ": " << to_string(v.why);
      failed.push_back(v.why);
    }
  }
  for (const condition c : accept_skip_conditions) {
    EXPECT_NE(std::ranges::find(skipped, c), skipped.end()) << to_string(c) << " is never skipped";
  }
  for (const condition c : accept_failure_conditions) {
    EXPECT_NE(std::ranges::find(failed, c), failed.end()) << to_string(c) << " never fails an accept";
  }
}

TEST(PolicyMetrics, AConditionOutsideTheFixedSetStillShowsOnceCounted) {
  policy_metrics m;
  m.failed[static_cast<std::size_t>(condition::stalled)] = 2;
  EXPECT_NE(to_prometheus(m).find("\ntransient_accept_failed_total{condition=\"stalled\"} 2\n"), std::string::npos);
  EXPECT_EQ(to_prometheus(policy_metrics{}).find("condition=\"stalled\""), std::string::npos);
}

TEST(PolicyMetrics, TheStateGaugeIsOneForTheStateAndZeroForTheOthers) {
  const std::string expected =
      "# HELP app_state 1 for the server's state (as /healthz names it), 0 for each other state.\n"
      "# TYPE app_state gauge\n"
      "app_state{state=\"accepting\"} 0\n"
      "app_state{state=\"backpressure\"} 0\n"
      "app_state{state=\"degraded\"} 1\n"
      "app_state{state=\"stalled\"} 0\n"
      "app_state{state=\"stopped\"} 0\n";
  EXPECT_EQ(state_to_prometheus("degraded", "app"), expected);
  EXPECT_NE(state_to_prometheus("stalled").find("\ntransient_state{state=\"stalled\"} 1\n"), std::string::npos);
  std::error_code ec;
  EXPECT_EQ(state_to_prometheus("draining", "app", ec), "");
  EXPECT_EQ(ec, std::errc::invalid_argument);
  EXPECT_EQ(state_to_prometheus("accepting", "9", ec), "");
  EXPECT_EQ(ec, std::errc::invalid_argument);
  EXPECT_THROW((void)state_to_prometheus("Accepting"), std::system_error);
}

TEST(PolicyMetrics, StateNamesFollowHealthAndAStallIsStalled) {
  EXPECT_EQ(state_name({health_state::accepting, {}, {}}), "accepting");
  EXPECT_EQ(state_name({health_state::backpressure, {}, {}}), "backpressure");
  EXPECT_EQ(state_name({health_state::degraded, std::make_error_code(std::errc::too_many_files_open), {}}), "degraded");
  EXPECT_EQ(state_name({health_state::stopped, make_error_code(error::stalled), {}}), "stalled");
  EXPECT_EQ(state_name({health_state::stopped, {}, {}}), "stopped");
  EXPECT_EQ(state_name({health_state::stopped, make_error_code(error::not_listening), {}}), "stopped");
  for (const health_state s :
       {health_state::accepting, health_state::backpressure, health_state::degraded, health_state::stopped}) {
    EXPECT_NE(std::ranges::find(server_states, to_string(s)), server_states.end()) << to_string(s);
  }
}

TEST(PolicyMetrics, ProcessMetricsHaveTheStandardNamesAndLeaveOutWhatIsUnknown) {
  process_metrics m;
  m.open_fds = 12;
  m.max_fds = 1024;
  m.start_time_seconds = 1796000000.25;
  EXPECT_EQ(to_prometheus(m),
            "# HELP process_open_fds Number of open file descriptors.\n"
            "# TYPE process_open_fds gauge\n"
            "process_open_fds 12\n"
            "# HELP process_max_fds Maximum number of open file descriptors (the soft RLIMIT_NOFILE).\n"
            "# TYPE process_max_fds gauge\n"
            "process_max_fds 1024\n"
            "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
            "# TYPE process_start_time_seconds gauge\n"
            "process_start_time_seconds 1796000000.25\n");
  m.start_time_seconds.reset();
  EXPECT_EQ(to_prometheus(m).find("process_start_time_seconds"), std::string::npos);
}

std::size_t entries_of_proc_self_fd() {
  const auto listing = std::filesystem::directory_iterator("/proc/self/fd");
  return static_cast<std::size_t>(std::distance(begin(listing), end(listing))) - 1;  // less the listing's own
}

double seconds_since_epoch() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

TEST(PolicyMetrics, ProcessMetricsReadTheDescriptorsTheSoftLimitAndTheStartTime) {
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  rlimit lowered = saved;
  lowered.rlim_cur = std::min<rlim_t>(saved.rlim_cur, 500) - 1;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lowered), 0);
  const std::size_t before = entries_of_proc_self_fd();
  const unique_fd a(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  const unique_fd b(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  std::error_code ec;
  const process_metrics m = read_process_metrics({}, ec);
  ::setrlimit(RLIMIT_NOFILE, &saved);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(m.open_fds, before + 2);
  EXPECT_EQ(m.max_fds, static_cast<std::uint64_t>(lowered.rlim_cur)) << "the soft limit, not the hard one";
  ASSERT_TRUE(m.start_time_seconds);
  EXPECT_LE(*m.start_time_seconds, seconds_since_epoch() + 0.01) << "the process started before now";
  EXPECT_GT(*m.start_time_seconds, seconds_since_epoch() - 120) << "this test program started moments ago";
}

// With every descriptor taken, the count probes descriptor numbers and the start time read
// before is kept: a scrape of a server out of descriptors still shows both.
TEST(PolicyMetrics, ProcessMetricsNeedNoFreeDescriptor) {
  const process_metrics before = read_process_metrics();
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  std::vector<unique_fd> held;
  rlimit lowered = saved;
  lowered.rlim_cur = entries_of_proc_self_fd() + 8;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lowered), 0);
  for (int i = 0; i < 64; ++i) {
    unique_fd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!fd) {
      break;
    }
    held.push_back(std::move(fd));
  }
  const int open_error = errno;
  std::error_code ec;
  const process_metrics m = read_process_metrics({}, ec);
  ::setrlimit(RLIMIT_NOFILE, &saved);
  ASSERT_EQ(open_error, EMFILE) << "the descriptors were not exhausted";
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(m.open_fds, entries_of_proc_self_fd()) << "every descriptor, with none free to list them";
  EXPECT_EQ(m.max_fds, lowered.rlim_cur);
  EXPECT_EQ(m.start_time_seconds, before.start_time_seconds);
}

}  // namespace
}  // namespace transient
