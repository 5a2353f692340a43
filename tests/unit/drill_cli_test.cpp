// ctest-labels: threads
// `transient drill --quick --json`: the whole demo runs (bounded) and every scenario passes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "support/run_command.hpp"

namespace {

using testing::HasSubstr;

std::size_t occurrences(const std::string& text, const std::string& what) {
  std::size_t count = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) {
    ++count;
  }
  return count;
}

// The JSON object of the scenario named `name` (scenario objects hold no nested objects).
std::string scenario_object(const std::string& json, const std::string& name) {
  const std::size_t at = json.find("{\"name\":\"" + name + "\"");
  if (at == std::string::npos) {
    return {};
  }
  return json.substr(at, json.find('}', at) - at + 1);
}

// Every scenario but 11 (fleet), which needs HAProxy and runs in drill_fleet_cli_test.
TEST(DrillCli, QuickJsonReportsEveryScenarioPassingWithFigures) {
  const std::string svg = "/tmp/transient_drill_cli_" + std::to_string(::getpid()) + ".svg";
  const auto r = transient::test::run_command(
      TRANSIENT_CLI_PATH, {"drill", "--quick", "--json", "--svg", svg, "--scenarios", "1,2,3,4,5,6,7,8,9,10"},
      std::chrono::seconds(90));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out.rfind("{\"passed\":true,", 0), 0U) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << "one JSON object, one line";
  EXPECT_EQ(occurrences(r.out, "{\"name\":"), 11U) << "10 scenarios, restart in two rows";
  // Each scenario: passed, and the figures it promises.
  const std::vector<std::pair<std::string, std::vector<std::string>>> expected{
      {"backpressure", {"clients", "served", "lost\":0,", "peak_connections"}},
      {"exhaustion and recovery",
       {"recovery_median_ms", "recovery_max_ms", "runnable_percent_exhausted", "cpu_percent_exhausted", "log_lines",
        "\"trials\":5,"}},
      {"leak", {"stopped_after_s", "stall_timeout_s", "exit_status\":1"}},
      {"naive contrast",
       {"transient_runnable_percent", "naive_runnable_percent", "transient_cpu_percent", "naive_log_bytes_per_s"}},
      {"port race", {"\"processes\":16,", "\"distinct_ports\":16,", "\"verified\":16,"}},
      {"clean stop",
       {"stop_ms", "exit_ms", "\"exit_status\":0,", "descriptors_at_start", "descriptors_at_exit",
        "\"in_flight_completed\":1,"}},
      {"slow clients",
       {"\"idle_held\":4,", "other_served_ms", "idle_closed_ms", "\"unguarded_idle_held\":8,",
        "\"unguarded_other_served\":0,"}},
      {"churn at the limit", {"\"clients\":200,", "\"served\":200,", "log_lines", "log_lines_per_100"}},
      {"overload",
       {"\"clients\":300,", "unbounded_goodput", "unbounded_waste", "unbounded_dropped", "\"bounded_waste\":0,",
        "bounded_readyz_503_ms"}},
      {"restart: in-place upgrade",
       {"\"upgrade_restarts\":5,", "\"upgrade_refused\":0,", "\"upgrade_reset\":0,", "\"upgrade_unanswered\":0,",
        "upgrade_handover_median_ms", "upgrade_handover_max_ms", "\"upgrade_old_processes_left\":0"}},
      {"restart: stop then start",
       {"\"stop_start_restarts\":5,", "stop_start_refused", "stop_start_reset", "stop_start_unanswered"}},
  };
  for (const auto& [name, figures] : expected) {
    const std::string object = scenario_object(r.out, name);
    ASSERT_FALSE(object.empty()) << "no scenario " << name << " in " << r.out;
    EXPECT_THAT(object, HasSubstr("\"passed\":true")) << object;
    for (const auto& figure : figures) {
      EXPECT_THAT(object, HasSubstr(figure)) << name;
    }
  }
  // Progress went to stderr, not into the JSON.
  EXPECT_THAT(r.err, HasSubstr("drill [6/10] clean stop: PASS"));
  EXPECT_THAT(r.err, HasSubstr("drill [7/10] churn at the limit: PASS"));
  EXPECT_THAT(r.err, HasSubstr("drill [8/10] slow clients: PASS"));
  EXPECT_THAT(r.err, HasSubstr("drill [9/10] overload: PASS"));
  EXPECT_THAT(r.err, HasSubstr("drill [10/10] restart: PASS; PASS"));
  // The chart, by its elements: both panels on one time axis with ticks, whole numbers on the
  // live axis, and each of the 5 releases marked with the moment its client was served.
  std::ifstream in(svg);
  const std::string chart((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::remove(svg.c_str());
  EXPECT_EQ(occurrences(chart, "class=\"release\""), 5U) << chart;
  EXPECT_EQ(occurrences(chart, "class=\"served\""), 5U) << chart;
  EXPECT_EQ(occurrences(chart, "class=\"latency\""), 5U) << chart;
  EXPECT_THAT(chart, HasSubstr(" ms</text>"));
  const std::size_t ticks = occurrences(chart, "class=\"tick-x\"");
  EXPECT_GE(ticks, 8U) << "at least 4 time ticks in each of the two panels";
  EXPECT_EQ(ticks % 2, 0U) << "the same time ticks in both panels";
  for (std::size_t at = chart.find("class=\"tick-y-label\""); at != std::string::npos;
       at = chart.find("class=\"tick-y-label\"", at + 1)) {
    const std::size_t open = chart.find('>', at) + 1;
    const std::string label = chart.substr(open, chart.find('<', open) - open);
    EXPECT_EQ(label.find_first_not_of("0123456789"), std::string::npos) << "a whole number: " << label;
  }
}

// The value of figure `name` in a scenario object; NAN if absent or null.
double figure(const std::string& object, const std::string& name) {
  const std::size_t at = object.find("\"" + name + "\":");
  return at == std::string::npos ? NAN : std::strtod(object.c_str() + at + name.size() + 3, nullptr);
}

// The overload scenario's counts of one run (`u`: "unbounded_" or "bounded_") add up: every
// client connected, dropped or refused at connect; every connected one answered in time, late,
// or not at all; serve, 8 places of 50 ms, answers at most 8 x 20 in a client's second.
void expect_overload_accounted(const std::string& object, const std::string& u) {
  EXPECT_EQ(figure(object, u + "connected") + figure(object, u + "dropped") + figure(object, u + "refused_connect"),
            figure(object, "clients"))
      << u << object;
  EXPECT_EQ(figure(object, u + "answered_in_time") + figure(object, u + "waste") + figure(object, u + "late_503") +
                figure(object, u + "no_answer"),
            figure(object, u + "connected"))
      << u << object;
  EXPECT_LE(figure(object, u + "goodput"), 8 * 20 + 8) << u << object;
  EXPECT_GE(figure(object, u + "netns_listen_overflows"), 0) << u << object;
  EXPECT_EQ(figure(object, u + "queue_limit"), 256) << "serve's --backlog, as the kernel reports it: " << u << object;
  EXPECT_GT(figure(object, u + "queue_peak"), 128) << "the queue passed half its limit: " << u << object;
}

TEST(DrillCli, OverloadAloneRunsWithoutAndWithTheBoundAndTheBoundsRunPasses) {
  const auto r = transient::test::run_command(TRANSIENT_CLI_PATH, {"drill", "--quick", "--json", "--scenarios", "9"},
                                              std::chrono::seconds(60));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(occurrences(r.out, "{\"name\":"), 1U) << r.out;
  const std::string object = scenario_object(r.out, "overload");
  EXPECT_THAT(object, HasSubstr("\"passed\":true")) << object;
  EXPECT_EQ(figure(object, "clients"), 300) << object;
  EXPECT_EQ(figure(object, "budget"), 8) << object;
  EXPECT_EQ(figure(object, "backlog"), 256) << object;
  EXPECT_EQ(figure(object, "service_ms"), 50) << object;
  EXPECT_EQ(figure(object, "deadline_ms"), 1000) << object;
  EXPECT_EQ(figure(object, "max_queue_wait_ms"), 500) << object;
  expect_overload_accounted(object, "unbounded_");
  expect_overload_accounted(object, "bounded_");
  // Without the bound the queue's tail (1.6 s of work) is answered after its deadline.
  EXPECT_GT(figure(object, "unbounded_waste"), 0) << object;
  // The verdict, as issue 24 states it: with the bound no waste, every connected client
  // answered (200 or 503) before its deadline, /readyz 503 within 100 ms of the queue passing
  // half its limit, less the time serve and the drill waited for a CPU.
  EXPECT_EQ(figure(object, "bounded_waste"), 0) << object;
  EXPECT_EQ(figure(object, "bounded_late_503"), 0) << object;
  EXPECT_EQ(figure(object, "bounded_no_answer"), 0) << object;
  EXPECT_EQ(figure(object, "bounded_answered_in_time"), figure(object, "bounded_connected")) << object;
  EXPECT_LE(figure(object, "bounded_readyz_503_ms") - figure(object, "bounded_readyz_cpu_wait_ms"), 100) << object;
  EXPECT_THAT(object, HasSubstr("with --max-queue-wait 500ms: goodput ")) << object;
  EXPECT_THAT(object, HasSubstr("; without: goodput ")) << object;
  EXPECT_THAT(r.err, HasSubstr("drill [1/1] overload: PASS")) << r.err;
}

// The counts of one restart run (`prefix`: "upgrade_" or "stop_start_") as the table shows them.
void expect_restart_run(const std::string& object, const std::string& prefix) {
  EXPECT_EQ(figure(object, prefix + "restarts"), 5) << prefix << object;
  EXPECT_GT(figure(object, prefix + "answered"), 5 * 50) << "50 answers at least between restarts: " << object;
  EXPECT_EQ(figure(object, prefix + "not_sent"), 0) << prefix << object;
  EXPECT_EQ(figure(object, prefix + "descriptors_last"), figure(object, prefix + "descriptors_first")) << object;
}

TEST(DrillCli, RestartUpgradesInPlaceWithoutALossAndShowsTheStopStartContrast) {
  const auto r = transient::test::run_command(TRANSIENT_CLI_PATH, {"drill", "--quick", "--json", "--scenarios", "10"},
                                              std::chrono::seconds(60));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(occurrences(r.out, "{\"name\":"), 2U) << r.out;
  const std::string upgrade = scenario_object(r.out, "restart: in-place upgrade");
  EXPECT_THAT(upgrade, HasSubstr("\"passed\":true")) << upgrade;
  expect_restart_run(upgrade, "upgrade_");
  EXPECT_EQ(
      figure(upgrade, "upgrade_refused") + figure(upgrade, "upgrade_reset") + figure(upgrade, "upgrade_unanswered"), 0)
      << upgrade;
  EXPECT_EQ(figure(upgrade, "upgrade_restarts_without_answers"), 0) << upgrade;
  EXPECT_LE(figure(upgrade, "upgrade_handover_median_ms"), figure(upgrade, "upgrade_handover_max_ms")) << upgrade;
  EXPECT_EQ(figure(upgrade, "upgrade_old_processes_left"), 0) << upgrade;
  const std::string contrast = scenario_object(r.out, "restart: stop then start");
  EXPECT_THAT(contrast, HasSubstr("\"verdict\":\"SHOWN\"")) << contrast;
  expect_restart_run(contrast, "stop_start_");
  EXPECT_THAT(r.err, HasSubstr("drill [1/1] restart: PASS; PASS")) << r.err;
  const auto table = transient::test::run_command(TRANSIENT_CLI_PATH, {"drill", "--help"}, std::chrono::seconds(5));
  EXPECT_THAT(table.out, HasSubstr(" 10 restart ")) << "drill --help lists scenario 10";
}

TEST(DrillCli, BadArgumentsGetOneLineAndExitTwo) {
  const auto r = transient::test::run_command(TRANSIENT_CLI_PATH, {"drill", "--fast"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "transient drill: unknown option '--fast' (try 'transient drill --help')\n");
  const auto svg = transient::test::run_command(TRANSIENT_CLI_PATH, {"drill", "--svg"});
  EXPECT_EQ(svg.exit_code, 2);
  EXPECT_THAT(svg.err, HasSubstr("--svg needs a value"));
  // One table holds both modes' options: --target's need it, and --engine excludes it.
  const auto protocol = transient::test::run_command(TRANSIENT_CLI_PATH, {"drill", "--protocol", "tcp"});
  EXPECT_EQ(protocol.exit_code, 2);
  EXPECT_EQ(protocol.err, "transient drill: --protocol requires --target (try 'transient drill --help')\n");
  const auto engine =
      transient::test::run_command(TRANSIENT_CLI_PATH, {"drill", "--target", "true {port}", "--engine", "io_uring"});
  EXPECT_EQ(engine.exit_code, 2);
  EXPECT_THAT(engine.err, HasSubstr("excludes --engine"));
  // --scenarios in either mode: 1 to 11 built in, 1 to 7 with --target.
  for (const auto* list : {"12", "0", "9,9", "010", "1,10,", "100", ""}) {
    const auto bad = transient::test::run_command(TRANSIENT_CLI_PATH, {"drill", "--scenarios", list});
    EXPECT_EQ(bad.exit_code, 2) << list;
    EXPECT_THAT(bad.err, HasSubstr("--scenarios is a list of numbers 1 to 11")) << list << bad.err;
  }
}

}  // namespace
