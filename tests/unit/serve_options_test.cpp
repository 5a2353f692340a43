// serve's command line (tools/serve/serve_options.cpp), parsed directly: every duration option
// swept with the largest values in every unit, so that no value an operator types reaches
// std::chrono's arithmetic out of range.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "../../tools/serve/serve_options.hpp"

namespace {

using namespace std::chrono_literals;
using namespace transient::tool;
using testing::HasSubstr;

serve_parse_result parse(const std::vector<std::string>& args) {
  const std::vector<std::string_view> views(args.begin(), args.end());
  return parse_serve_arguments(views);
}

// The value of the duration option `flag` after parsing `value`.
std::chrono::milliseconds parsed(const std::string& flag, const std::string& value) {
  const serve_parse_result r = parse({flag, value});
  EXPECT_TRUE(r.problem.empty()) << flag << ' ' << value << ": " << r.problem;
  const auto& s = r.settings;
  return flag == "--stall-timeout"    ? s.stall_timeout
         : flag == "--idle-timeout"   ? s.idle_timeout
         : flag == "--header-timeout" ? s.header_timeout
                                      : s.drain_timeout;
}

const std::vector<std::string> duration_flags{"--stall-timeout", "--idle-timeout", "--header-timeout",
                                              "--drain-timeout"};

TEST(ServeOptions, EveryDurationTakesUpTo24HoursInEveryUnit) {
  for (const auto& flag : duration_flags) {
    SCOPED_TRACE(flag);
    EXPECT_EQ(parsed(flag, "24h"), 24h);
    EXPECT_EQ(parsed(flag, "1440m"), 24h);
    EXPECT_EQ(parsed(flag, "86400s"), 24h);
    EXPECT_EQ(parsed(flag, "86400"), 24h);
    EXPECT_EQ(parsed(flag, "86400000ms"), 24h);
    EXPECT_EQ(parsed(flag, "250ms"), 250ms);
    EXPECT_EQ(parsed(flag, "2m"), 2min);
    EXPECT_EQ(parsed(flag, "1h"), 1h);
  }
}

TEST(ServeOptions, EveryDurationRefusesMoreThan24HoursWithOneLineNamingTheRange) {
  for (const auto& flag : duration_flags) {
    SCOPED_TRACE(flag);
    // Just above the range, then the values that overflowed std::chrono before, in each unit.
    for (const char* value : {"25h", "1441m", "86401s", "86401", "86400001ms", "9223372036", "9300000000", "153722867m",
                              "9223372036854775807", "18446744073709551616", "9223372036854775807ms",
                              "2562047788015215h", "-1s", "1.5s", "1d", "s", "", "10 s"}) {
      const serve_parse_result r = parse({flag, value});
      EXPECT_THAT(r.problem, HasSubstr(flag + ": '" + value + "' is not a duration")) << value;
      EXPECT_THAT(r.problem, HasSubstr("to 24h")) << value;
      EXPECT_EQ(r.problem.find('\n'), std::string::npos);
    }
  }
}

TEST(ServeOptions, ZeroIsTakenWhereItMeansOffAndRefusedWhereItWouldCloseEverything) {
  EXPECT_EQ(parsed("--stall-timeout", "0"), 0ms);
  EXPECT_EQ(parsed("--drain-timeout", "0s"), 0ms);
  for (const std::string flag : {"--idle-timeout", "--header-timeout"}) {
    const serve_parse_result r = parse({flag, "0ms"});
    EXPECT_THAT(r.problem, HasSubstr("from 1ms to 24h")) << flag;
  }
}

TEST(ServeOptions, ParseDurationIsTheOnePlaceOfTheRange) {
  EXPECT_EQ(parse_duration("24h"), std::optional<std::chrono::milliseconds>(24h));
  EXPECT_FALSE(parse_duration("24h1"));
  EXPECT_FALSE(parse_duration("86400001ms"));
  EXPECT_FALSE(parse_duration("18446744073709551615ms"));
}

TEST(ServeOptions, FdLimitIsRaiseOrKeep) {
  EXPECT_TRUE(parse({}).settings.raise_fd_limit);
  EXPECT_FALSE(parse({"--fd-limit", "keep"}).settings.raise_fd_limit);
  EXPECT_TRUE(parse({"--fd-limit", "raise"}).settings.raise_fd_limit);
  EXPECT_THAT(parse({"--fd-limit", "65536"}).problem, HasSubstr("--fd-limit: '65536' is not raise or keep"));
}

TEST(ServeOptions, QueueOptionsTakeTheirRangesAndDefaults) {
  const serve_settings defaults = parse({}).settings;
  EXPECT_EQ(defaults.backlog, 0) << "the kernel's maximum, somaxconn";
  EXPECT_EQ(defaults.max_queue_wait, 5s);
  EXPECT_EQ(defaults.ready_queue_fraction, 0.5);
  EXPECT_EQ(parse({"--backlog", "1"}).settings.backlog, 1);
  EXPECT_EQ(parse({"--backlog", "65535"}).settings.backlog, 65535);
  EXPECT_EQ(parse({"--max-queue-wait", "0"}).settings.max_queue_wait, 0ms);
  EXPECT_EQ(parse({"--max-queue-wait", "200ms"}).settings.max_queue_wait, 200ms);
  EXPECT_EQ(parse({"--ready-queue-fraction", "0"}).settings.ready_queue_fraction, 0.0);
  EXPECT_EQ(parse({"--ready-queue-fraction", "1"}).settings.ready_queue_fraction, 1.0);
  EXPECT_EQ(parse({"--ready-queue-fraction", "0.25"}).settings.ready_queue_fraction, 0.25);
  EXPECT_THAT(parse({"--ready-queue-fraction", "1.01"}).problem, HasSubstr("is not a fraction from 0 (off) to 1"));
  EXPECT_THAT(parse({"--backlog", "0"}).problem, HasSubstr("is not a number from 1 to 65535"));
}

// A balancer checks from another machine: the agent's address may be any, unlike the metrics port's.
TEST(ServeOptions, AgentTakesAnyAddressMetricsOnlyLoopback) {
  EXPECT_FALSE(parse({}).settings.agent);
  const serve_parse_result r = parse({"--agent", "0.0.0.0:9300"});
  EXPECT_EQ(r.problem, "");
  ASSERT_TRUE(r.settings.agent);
  EXPECT_EQ(r.settings.agent->to_string(), "0.0.0.0:9300");
  EXPECT_EQ(parse({"--agent", "[::1]:0"}).problem, "");
  EXPECT_THAT(parse({"--agent", "9300"}).problem, HasSubstr("--agent: "));
  EXPECT_THAT(parse({"--metrics", "0.0.0.0:9300"}).problem, HasSubstr("not a loopback address"));
}

}  // namespace
