// ctest-labels: threads
// The operator's view with Prometheus's own tools: serve's /metrics passes `promtool check
// metrics` at rest and with its descriptors exhausted, and shows the standard process metrics,
// the state gauge and every accept condition from the start; contrib/prometheus's rules pass
// `promtool check rules` and their unit tests `promtool test rules`; and every metric the rules
// and the dashboard name is one serve exports (from a real scrape).
//
// TRANSIENT_METRICS_NOTE=FILE appends the rules' test output and the scrape under exhaustion
// to FILE (for a change's note).
// GCC 12 reports a false -Wmaybe-uninitialized inside std::function where std::regex's
// compiler is built at -O1 with the sanitizers (the asan preset); this file's parsing of PromQL
// and of the dashboard is regular expressions, so the warning is off here alone.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/loopback.hpp"
#include "support/run_command.hpp"
#include "support/serve_process.hpp"
#include "support/source_tree.hpp"
#include "transient/policy/events.hpp"

namespace {

using namespace std::chrono_literals;
using namespace transient::test;
using testing::HasSubstr;
using transient::unique_fd;

const std::string promtool = "/usr/bin/promtool";

std::filesystem::path contrib(const char* name) { return source_root() / "contrib" / "prometheus" / name; }

// The value of the sample written exactly `series` (name and labels) in `text`; nullopt if absent.
std::optional<double> sample(const std::string& text, const std::string& series) {
  const std::size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) {
    return std::nullopt;
  }
  return std::stod(text.substr(at + series.size() + 2));
}

// `promtool check metrics` on `text`: its exit code and output (empty when clean).
command_result check_metrics(const std::string& text) {
  const std::string file = "/tmp/transient-serve-prometheus-" + std::to_string(::getpid()) + ".prom";
  std::ofstream(file) << text;
  command_result r = run_command("/bin/sh", {"-c", promtool + " check metrics < " + file}, 20000ms);
  ::unlink(file.c_str());
  return r;
}

void append_to_note(const std::string& title, const std::string& text) {
  if (const char* note = std::getenv("TRANSIENT_METRICS_NOTE")) {
    std::ofstream(note, std::ios::app) << "==== " << title << " ====\n" << text << '\n';
  }
}

double seconds_since_epoch() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Scrapes on `fd` every 20 ms until `series` reads 1, for at most `timeout`; the last scrape.
std::string scrape_until_one(int fd, const std::string& series, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string text = query(fd, "/metrics").second;
  while (sample(text, series) != 1.0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    text = query(fd, "/metrics").second;
  }
  return text;
}

// The metric names of a scrape: each sample's name (histograms' _bucket, _sum and _count too).
std::set<std::string> exported_names(const std::string& text) {
  std::set<std::string> names;
  static const std::regex line(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ])", std::regex::multiline);
  for (auto it = std::sregex_iterator(text.begin(), text.end(), line); it != std::sregex_iterator(); ++it) {
    names.insert((*it)[1]);
  }
  return names;
}

// The metric names a PromQL expression (or Grafana's label_values(METRIC, LABEL)) names: its
// identifiers, less label matchers, ranges, label lists of by/without/on/ignoring/group_*,
// strings, Grafana's variables, functions (an identifier before '(') and keywords.
std::set<std::string> names_in_query(std::string q) {
  q = std::regex_replace(q, std::regex(R"(label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)[^)]*\))"), "$1");
  q = std::regex_replace(q, std::regex(R"("(?:[^"\\]|\\.)*")"), " ");
  q = std::regex_replace(q, std::regex(R"(\$\{[^}]*\}|\$[a-zA-Z_]+)"), " ");
  q = std::regex_replace(q, std::regex(R"(\{[^}]*\}|\[[^\]]*\])"), " ");
  q = std::regex_replace(q, std::regex(R"(\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\))"), " ");
  static const std::set<std::string> keywords{"and", "or", "unless", "bool", "offset", "by", "without"};
  static const std::regex identifier(R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?)");
  std::set<std::string> names;
  for (auto it = std::sregex_iterator(q.begin(), q.end(), identifier); it != std::sregex_iterator(); ++it) {
    const bool after_digit = it->position() > 0 && (std::isdigit(static_cast<unsigned char>(q[it->position() - 1])) ||
                                                    q[it->position() - 1] == '.');
    if (!(*it)[2].matched && !after_digit && !keywords.contains((*it)[1])) {
      names.insert((*it)[1]);
    }
  }
  return names;
}

// Every query of a Grafana dashboard: its "expr" and "definition" strings (JSON escapes undone).
std::vector<std::string> dashboard_queries(const std::string& json) {
  std::vector<std::string> queries;
  static const std::regex field(R"re("(?:expr|definition)"\s*:\s*"((?:[^"\\]|\\.)*)")re");
  for (auto it = std::sregex_iterator(json.begin(), json.end(), field); it != std::sregex_iterator(); ++it) {
    queries.push_back(std::regex_replace((*it)[1].str(), std::regex(R"(\\(.))"), "$1"));
  }
  return queries;
}

// Every rule's expression in a rules file (`expr: ...` on one line, or `expr: |` and the lines
// indented deeper after it) and every input series of a rules test file (`series: ...`).
std::vector<std::string> yaml_queries(const std::string& yaml) {
  std::vector<std::string> queries;
  std::istringstream in(yaml);
  std::string line;
  std::size_t block_indent = std::string::npos;  // inside an `expr: |` block: its key's indent
  static const std::regex key(R"(^(\s*)-?\s*(expr|series):\s*(.*)$)");
  while (std::getline(in, line)) {
    const std::size_t indent = line.find_first_not_of(' ');
    if (block_indent != std::string::npos && indent != std::string::npos && indent > block_indent) {
      queries.back() += " " + line;
      continue;
    }
    block_indent = std::string::npos;
    std::smatch m;
    if (std::regex_match(line, m, key)) {
      const std::string value = m[3];
      queries.push_back(value.starts_with('|') || value.starts_with('>') ? "" : value);
      if (value.starts_with('|') || value.starts_with('>')) {
        block_indent = m[1].length();
      }
    }
  }
  return queries;
}

// The names `queries` use that `exported` lacks.
std::set<std::string> unknown_names(const std::vector<std::string>& queries, const std::set<std::string>& exported) {
  std::set<std::string> unknown;
  for (const std::string& q : queries) {
    for (const std::string& name : names_in_query(q)) {
      if (!exported.contains(name)) {
        unknown.insert(name);
      }
    }
  }
  return unknown;
}

// serve's scrape at rest (with --metrics and RLIMIT_NOFILE 256 kept).
struct resting_serve {
  resting_serve() : serve(serve_under_fd_limit(256, {"--metrics", "127.0.0.1:0", "--fd-limit", "keep"})) {}
  // A scrape, the first one: every series is there from the start (the queue-wait histogram
  // too, before the loops first publish).
  std::string scrape() const {
    const unique_fd probe = connect_to(*serve->metrics);
    return query(probe.get(), "/metrics").second;
  }
  std::unique_ptr<serve_process> serve;
};

TEST(ServePrometheus, AtRestTheScrapePassesPromtoolAndShowsTheStandardSeriesAndEveryCondition) {
  if (::access(promtool.c_str(), X_OK) != 0) {
    GTEST_SKIP() << promtool << " is missing (Debian package prometheus)";
  }
  const double started = seconds_since_epoch();
  const resting_serve s;
  ASSERT_TRUE(s.serve->at && s.serve->metrics) << s.serve->stderr_text();
  const std::string text = s.scrape();
  const command_result checked = check_metrics(text);
  EXPECT_EQ(checked.exit_code, 0) << checked.out << checked.err << text;
  EXPECT_EQ(checked.out + checked.err, "") << text;
  EXPECT_EQ(sample(text, "process_max_fds"), 256.0) << "the child's soft limit";
  EXPECT_THAT(sample(text, "process_open_fds").value_or(-1), testing::AllOf(testing::Gt(3), testing::Lt(64))) << text;
  const double start = sample(text, "process_start_time_seconds").value_or(0);
  EXPECT_GE(start, started - 1) << "serve started after the test did";
  EXPECT_LE(start, seconds_since_epoch() + 0.01);
  for (const std::string_view state : transient::server_states) {
    EXPECT_EQ(sample(text, "transient_state{state=\"" + std::string(state) + "\"}"), state == "accepting" ? 1.0 : 0.0)
        << state;
  }
  for (const transient::condition c : transient::accept_failure_conditions) {
    const std::string series = "transient_accept_failed_total{condition=\"" + std::string(to_string(c)) + "\"}";
    EXPECT_EQ(sample(text, series), 0.0) << series;
  }
  for (const transient::condition c : transient::accept_skip_conditions) {
    const std::string series = "transient_accept_skipped_total{condition=\"" + std::string(to_string(c)) + "\"}";
    EXPECT_EQ(sample(text, series), 0.0) << series;
  }
}

// A leak holds every descriptor: the scrape (on a connection made before) still passes
// promtool, the state gauge says degraded, the descriptors fill the limit (the alert's
// 90 % is passed) and the failures are counted under process_fd_limit.
TEST(ServePrometheus, UnderExhaustionTheScrapePassesPromtoolAndShowsTheDescriptorsAtTheLimit) {
  if (::access(promtool.c_str(), X_OK) != 0) {
    GTEST_SKIP() << promtool << " is missing (Debian package prometheus)";
  }
  const std::unique_ptr<serve_process> started = serve_under_fd_limit(
      64, {"--leak-per-connection", "4", "--stall-timeout", "30s", "--metrics", "127.0.0.1:0", "--fd-limit", "keep"},
      TRANSIENT_FIXTURE_PATH);
  serve_process& serve = *started;
  ASSERT_TRUE(serve.at && serve.metrics) << serve.stderr_text();
  const unique_fd probe = connect_to(*serve.metrics);  // scrapes reuse it: no descriptor needed
  ASSERT_EQ(query(probe.get(), "/metrics").first, 200);
  const unique_fd pending = exhaust_by_leak(*serve.at);
  ASSERT_TRUE(pending) << "the leak never exhausted the descriptors";
  const std::string text = scrape_until_one(probe.get(), "transient_state{state=\"degraded\"}", 3000ms);
  append_to_note("a scrape of transient serve (fixture, --leak-per-connection 4, RLIMIT_NOFILE 64) under exhaustion",
                 text);
  EXPECT_EQ(sample(text, "transient_state{state=\"degraded\"}"), 1.0) << text;
  EXPECT_EQ(sample(text, "transient_state{state=\"accepting\"}"), 0.0) << text;
  const command_result checked = check_metrics(text);
  EXPECT_EQ(checked.exit_code, 0) << checked.out << checked.err << text;
  EXPECT_EQ(checked.out + checked.err, "") << text;
  EXPECT_EQ(sample(text, "process_max_fds"), 64.0);
  const double open = sample(text, "process_open_fds").value_or(0);
  EXPECT_GT(open / 64, 0.9) << text;  // (more than 64 if the test's runner left a descriptor open above it)
  EXPECT_GT(sample(text, "transient_accept_failed_total{condition=\"process_fd_limit\"}").value_or(0), 0) << text;
  EXPECT_TRUE(sample(text, "process_start_time_seconds")) << "kept from the start, when /proc could be opened";
  EXPECT_TRUE(sample(text, "transient_listen_overflows_total")) << "read through a descriptor kept open:\n" << text;
  EXPECT_TRUE(sample(text, "transient_listen_drops_total")) << text;
}

TEST(ServePrometheus, TheShippedRulesPassPromtoolCheckRules) {
  if (::access(promtool.c_str(), X_OK) != 0) {
    GTEST_SKIP() << promtool << " is missing (Debian package prometheus)";
  }
  const command_result r = run_command(promtool, {"check", "rules", contrib("transient.rules.yml").string()}, 20000ms);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("SUCCESS: 6 rules found")) << r.out << r.err;
}

// The unit tests make each alert fire for one server and not for another.
TEST(ServePrometheus, TheShippedRuleTestsPassPromtoolTestRules) {
  if (::access(promtool.c_str(), X_OK) != 0) {
    GTEST_SKIP() << promtool << " is missing (Debian package prometheus)";
  }
  const std::string tests = contrib("transient.rules.test.yml").string();
  const command_result r = run_command(promtool, {"test", "rules", tests}, 60000ms);
  append_to_note("promtool test rules contrib/prometheus/transient.rules.test.yml", r.out + r.err);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("SUCCESS")) << r.out << r.err;
  const std::string text = text_of(tests);
  for (const char* alert : {"TransientDescriptorsNearLimit", "TransientDescriptorsExhaustedWithinAnHour",
                            "TransientDegraded", "TransientStalled", "TransientShedding", "TransientAcceptQueueHigh"}) {
    EXPECT_THAT(text, HasSubstr(std::string("alertname: ") + alert)) << alert << " is not tested";
  }
}

TEST(ServePrometheus, TheNameCheckFindsMetricNamesAndAMisspelledOne) {
  const std::set<std::string> exported{"transient_live_connections", "transient_max_connections", "process_open_fds",
                                       "process_max_fds", "transient_queue_wait_seconds_bucket"};
  EXPECT_EQ(names_in_query("sum by (le) (rate(transient_queue_wait_seconds_bucket{instance=~\"$instance\"}"
                           "[$__rate_interval])) and on (job, instance) transient_max_connections offset 5m > 0.9"),
            (std::set<std::string>{"transient_queue_wait_seconds_bucket", "transient_max_connections"}));
  EXPECT_EQ(names_in_query("label_values(transient_state, instance)"), std::set<std::string>{"transient_state"});
  const std::string dashboard = R"({"targets": [{"expr": "transient_live_conections{instance=~\"$instance\"}"}]})";
  EXPECT_EQ(unknown_names(dashboard_queries(dashboard), exported), std::set<std::string>{"transient_live_conections"});
  const std::string rules = "  - alert: A\n    expr: |\n      process_open_fds / proces_max_fds > 0.9\n    for: 2m\n";
  EXPECT_EQ(unknown_names(yaml_queries(rules), exported), std::set<std::string>{"proces_max_fds"});
}

// Every metric the dashboard's queries, the rules' expressions and the rules' tests' series
// name is one a real scrape of serve shows.
TEST(ServePrometheus, EveryMetricTheDashboardAndTheRulesNameIsOneServeExports) {
  const resting_serve s;
  ASSERT_TRUE(s.serve->at && s.serve->metrics) << s.serve->stderr_text();
  const std::string text = s.scrape();
  const std::set<std::string> exported = exported_names(text);
  ASSERT_TRUE(exported.contains("transient_queue_wait_seconds_bucket")) << "the histogram is in the scrape:\n" << text;
  const std::vector<std::string> dashboard = dashboard_queries(text_of(contrib("transient.dashboard.json")));
  const std::vector<std::string> rules = yaml_queries(text_of(contrib("transient.rules.yml")));
  const std::vector<std::string> series = yaml_queries(text_of(contrib("transient.rules.test.yml")));
  EXPECT_GE(dashboard.size(), 10U);
  EXPECT_EQ(rules.size(), 6U);
  EXPECT_GE(series.size(), 20U);
  EXPECT_EQ(unknown_names(dashboard, exported), std::set<std::string>{});
  EXPECT_EQ(unknown_names(rules, exported), std::set<std::string>{});
  EXPECT_EQ(unknown_names(series, exported), std::set<std::string>{});
  std::set<std::string> named;
  for (const std::string& q : dashboard) {
    named.merge(names_in_query(q));
  }
  for (const char* panel_metric :
       {"transient_live_connections", "transient_max_connections", "process_open_fds", "process_max_fds",
        "transient_accept_failed_total", "transient_pauses_total", "transient_shed_total", "transient_state"}) {
    EXPECT_TRUE(named.contains(panel_metric)) << panel_metric << " has no panel";
  }
}

}  // namespace
