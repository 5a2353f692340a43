// transient-fixture (tools/fixture), the test fixture of `transient drill` and the tests: its
// naive loop serves and stops, its serve holds back /slow requests as `transient serve` never
// does, bad knobs are usage errors, and the drill finds it where the package installs it
// (../libexec/transient/ from the command's folder), or says that it is missing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "support/loopback.hpp"
#include "support/run_command.hpp"
#include "support/spawned_process.hpp"

namespace {

using namespace std::chrono_literals;
using namespace transient::test;
using clock_type = std::chrono::steady_clock;
using testing::HasSubstr;

constexpr std::string_view ok = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";

// The address of a stdout line "PREFIX ADDRESS..." of `p`, read within 5 s.
std::optional<transient::endpoint> address_line(spawned_process& p, const std::string& prefix) {
  const std::string line = p.read_line(spawned_process::stream::out, 5s);
  if (line.rfind(prefix, 0) != 0) {
    return std::nullopt;
  }
  std::error_code ec;
  const auto at = transient::parse_endpoint(
      line.substr(prefix.size(), line.find_first_of(" /", prefix.size()) - prefix.size()), ec);
  return ec ? std::nullopt : std::optional(at);
}

// The response to GET `target` on a new connection to `at`, read within `limit`.
std::string get(const transient::endpoint& at, const std::string& target, std::chrono::milliseconds limit) {
  const transient::unique_fd c = transient::test::connect_to(at);
  if (!c || !send_text(c.get(), "GET " + target + " HTTP/1.1\r\nHost: a\r\n\r\n")) {
    return {};
  }
  return transient::test::read_at_least(c.get(), ok.size(), limit);
}

TEST(FixtureCli, TheNaiveLoopServesCountsAndStopsOnSigterm) {
  spawned_process naive(TRANSIENT_FIXTURE_PATH, {"naive", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"});
  const auto metrics = address_line(naive, "metrics on http://");
  const auto at = address_line(naive, "listening on ");
  ASSERT_TRUE(metrics && at) << naive.stderr_text();
  EXPECT_EQ(get(*at, "/", 2000ms), ok);
  EXPECT_EQ(get(*at, "/slow", 2000ms), ok) << "the naive loop holds nothing back";
  const transient::unique_fd probe = transient::test::connect_to(*metrics);
  ASSERT_TRUE(probe && send_text(probe.get(), "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n"));
  EXPECT_THAT(transient::test::read_at_least(probe.get(), 150, 2000ms), HasSubstr("naive_accepted_total 2\n"));
  naive.signal(SIGTERM);
  EXPECT_EQ(naive.wait(3000ms), 0);
  EXPECT_THAT(naive.stderr_text(), HasSubstr("re-arms on every accept error"));
}

// The fixture's serve is serve with the knob: /slow waits, / does not; `transient serve`
// answers /slow at once.
TEST(FixtureCli, ItsServeHoldsBackSlowRequestsAndTransientServeDoesNot) {
  spawned_process fixture(TRANSIENT_FIXTURE_PATH, {"serve", "--listen", "127.0.0.1:0", "--slow-response", "600ms"});
  const auto at = address_line(fixture, "listening on ");
  ASSERT_TRUE(at) << fixture.stderr_text();
  auto start = clock_type::now();
  EXPECT_EQ(get(*at, "/", 2000ms), ok);
  EXPECT_LT(clock_type::now() - start, 550ms);
  start = clock_type::now();
  EXPECT_EQ(get(*at, "/slow", 3000ms), ok);
  EXPECT_GE(clock_type::now() - start, 590ms) << "the fixture answered /slow before its delay";
  fixture.signal(SIGTERM);
  EXPECT_EQ(fixture.wait(3000ms), 0);
  EXPECT_THAT(fixture.stderr_text(), HasSubstr("transient serve: stopped cleanly"));

  spawned_process serve(TRANSIENT_CLI_PATH, {"serve", "--listen", "127.0.0.1:0"});
  const auto serve_at = address_line(serve, "listening on ");
  ASSERT_TRUE(serve_at) << serve.stderr_text();
  start = clock_type::now();
  EXPECT_EQ(get(*serve_at, "/slow", 2000ms), ok);
  EXPECT_LT(clock_type::now() - start, 550ms) << "transient serve held a /slow request back";
  serve.signal(SIGTERM);
  EXPECT_EQ(serve.wait(3000ms), 0);
}

TEST(FixtureCli, BadModesKnobsAndOptionsAreUsageErrors) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases{
      {{}, "usage: transient-fixture"},
      {{"policy"}, "usage: transient-fixture"},
      {{"serve", "--leak-per-connection", "65"}, "--leak-per-connection: '65' is not a number from 0 to 64"},
      {{"serve", "--leak-per-connection"}, "--leak-per-connection needs a value"},
      {{"serve", "--slow-response", "soon"}, "--slow-response: 'soon' is not a duration"},
      {{"serve", "--slow-response", "25h"}, "from 0 to 24h"},
      {{"serve", "--policy", "naive"}, "unknown option '--policy'"},
      {{"naive", "--threads", "2"}, "the naive loop takes only --listen, --metrics"},
      {{"naive", "--engine", "io_uring"}, "--engine"},
  };
  for (const auto& [args, says] : cases) {
    const auto r = transient::test::run_command(TRANSIENT_FIXTURE_PATH, args, 5000ms);
    EXPECT_EQ(r.exit_code, 2) << testing::PrintToString(args) << r.err;
    EXPECT_THAT(r.err, HasSubstr(says)) << testing::PrintToString(args);
  }
  const auto help = transient::test::run_command(TRANSIENT_FIXTURE_PATH, {"--help"}, 5000ms);
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("not for production"));
}

// A scratch folder with copies of the command and (optionally) the fixture, laid out as the
// package installs them, removed at the end. Copies, not links: the drill finds the fixture
// from /proc/self/exe, which names a link's target.
class scratch_install {
 public:
  explicit scratch_install(bool with_fixture)
      : root_(std::filesystem::temp_directory_path() /
              ("transient_fixture_test_" + std::to_string(::getpid()) + (with_fixture ? "_with" : "_without"))) {
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_ / "bin");
    std::filesystem::copy_file(TRANSIENT_CLI_PATH, command());
    if (with_fixture) {
      std::filesystem::create_directories(root_ / "libexec/transient");
      std::filesystem::copy_file(TRANSIENT_FIXTURE_PATH, root_ / "libexec/transient/transient-fixture");
    }
  }
  ~scratch_install() {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
  scratch_install(const scratch_install&) = delete;
  scratch_install& operator=(const scratch_install&) = delete;

  [[nodiscard]] std::string command() const { return (root_ / "bin/transient").string(); }

 private:
  std::filesystem::path root_;
};

// The JSON object of the drill's scenario `name` (scenario objects hold no nested objects).
std::string scenario_object(const std::string& json, const std::string& name) {
  const std::size_t at = json.find("{\"name\":\"" + name + "\"");
  return at == std::string::npos ? std::string() : json.substr(at, json.find('}', at) - at + 1);
}

const std::vector<std::string> fixture_scenarios{"leak", "naive contrast", "clean stop"};
// The drill's scenarios but 11 (fleet), which also needs HAProxy (drill_fleet_cli_test runs it).

TEST(FixtureCli, TheDrillFindsTheFixtureInLibexecBesideBin) {
  const scratch_install installed(true);
  const auto r = transient::test::run_command(
      installed.command(), {"drill", "--quick", "--json", "--scenarios", "1,2,3,4,5,6,7,8,9,10"}, 90s);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  for (const auto& name : fixture_scenarios) {
    EXPECT_THAT(scenario_object(r.out, name), HasSubstr("\"passed\":true")) << r.out;
  }
}

TEST(FixtureCli, WithoutTheFixtureItsScenariosFailSayingSoAndTheOthersRun) {
  const scratch_install alone(false);
  const auto r = transient::test::run_command(
      alone.command(), {"drill", "--quick", "--json", "--scenarios", "1,2,3,4,5,6,7,8,9,10"}, 90s);
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  for (const auto& name : fixture_scenarios) {
    const std::string object = scenario_object(r.out, name);
    EXPECT_THAT(object, HasSubstr("\"passed\":false")) << r.out;
    EXPECT_THAT(object, HasSubstr("test fixture is missing: no transient-fixture in ")) << object;
    EXPECT_THAT(object, HasSubstr("libexec/transient")) << object;
    EXPECT_THAT(object, HasSubstr("\"fix\":\"install transient-fixture")) << object;
  }
  for (const char* name :
       {"backpressure", "exhaustion and recovery", "port race", "churn at the limit", "slow clients"}) {
    EXPECT_THAT(scenario_object(r.out, name), HasSubstr("\"passed\":true")) << name << ": " << r.out;
  }
}

}  // namespace
