// ctest-labels: fleet
// `transient drill --scenarios 11 --json`: the fleet behind a real HAProxy (/usr/sbin/haproxy,
// Debian's haproxy package; skipped without it). The documented configuration's row passes:
// no client error across the three events, the leaking and the full instance out of rotation
// within 2 check intervals; the /readyz check's and the plain TCP check's rows are there with
// their figures, shown. It runs once in CI, in the default preset (the label keeps it out of
// the sanitizer builds).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include "support/run_command.hpp"

namespace {

using testing::HasSubstr;

// The JSON object of the scenario named `name` (scenario objects hold no nested objects).
std::string scenario_object(const std::string& json, const std::string& name) {
  const std::size_t at = json.find("{\"name\":\"" + name + "\"");
  return at == std::string::npos ? std::string() : json.substr(at, json.find('}', at) - at + 1);
}

// The value of figure `name` in a scenario object; NAN if absent or null.
double figure(const std::string& object, const std::string& name) {
  const std::size_t at = object.find("\"" + name + "\":");
  return at == std::string::npos ? NAN : std::strtod(object.c_str() + at + name.size() + 3, nullptr);
}

// The figures every row carries, for the whole run and for each event.
void expect_row_figures(const std::string& object, const std::string& prefix) {
  EXPECT_GT(figure(object, prefix + "answered"), 1000) << "requests flowed through HAProxy: " << object;
  EXPECT_EQ(figure(object, prefix + "not_sent"), 0) << object;
  for (const char* event : {"a_", "b_", "c_"}) {
    for (const char* name : {"errors", "slow", "slowest_s", "retried", "stopped_s", "back_s"}) {
      EXPECT_THAT(object, HasSubstr("\"" + prefix + event + name + "\":")) << object;
    }
  }
}

TEST(DrillFleetCli, TheDocumentedChecksKeepClientsFromFailingInstances) {
  if (::access("/usr/sbin/haproxy", X_OK) != 0) {
    GTEST_SKIP() << "no /usr/sbin/haproxy (Debian: apt-get install haproxy)";
  }
  const auto r = transient::test::run_command(TRANSIENT_CLI_PATH, {"drill", "--quick", "--json", "--scenarios", "11"},
                                              std::chrono::seconds(90));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string documented = scenario_object(r.out, "fleet: documented checks");
  ASSERT_FALSE(documented.empty()) << r.out;
  EXPECT_THAT(documented, HasSubstr("\"passed\":true")) << documented;
  expect_row_figures(documented, "documented_");
  EXPECT_EQ(figure(documented, "documented_errors"), 0) << documented;
  EXPECT_LE(figure(documented, "documented_a_stopped_s"), 2.0) << "A out within 2 check intervals: " << documented;
  EXPECT_LE(figure(documented, "documented_b_stopped_s"), 2.0) << "B out within 2 check intervals: " << documented;
  for (const auto& [name, prefix] :
       {std::pair{"fleet: /readyz check", "httpchk_"}, std::pair{"fleet: plain TCP check", "tcp_"}}) {
    const std::string shown = scenario_object(r.out, name);
    ASSERT_FALSE(shown.empty()) << name << ": " << r.out;
    EXPECT_THAT(shown, HasSubstr("\"verdict\":\"SHOWN\"")) << shown;
    EXPECT_THAT(shown, HasSubstr("(shown, not judged)")) << shown;
    expect_row_figures(shown, prefix);
  }
  EXPECT_THAT(r.err, HasSubstr("drill [1/1] fleet: PASS; PASS; PASS")) << r.err;
  const auto help = transient::test::run_command(TRANSIENT_CLI_PATH, {"drill", "--help"}, std::chrono::seconds(5));
  EXPECT_THAT(help.out, HasSubstr(" 11 fleet ")) << "drill --help lists scenario 11";
}

}  // namespace
