// Counters snapshot and its Prometheus text.
#include "transient/policy/events.hpp"

#include <gtest/gtest.h>

#include <chrono>

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
      "app_accept_skipped_total{condition=\"peer_gone\"} 3\n"
      "# HELP app_accept_failed_total Accept failures that paused or stopped the loop.\n"
      "# TYPE app_accept_failed_total counter\n"
      "app_accept_failed_total{condition=\"process_fd_limit\"} 7\n"
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
  EXPECT_EQ(text.find("condition="), std::string::npos) << "no per-condition series for conditions that never occurred";
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

}  // namespace
}  // namespace transient
