// serve's agent port (tools/serve/serve_agent.cpp), driven directly: the line for each health
// and budget, and the endpoint on real loopback sockets (one line then the end, an agent-send
// string left unread by the checker, its limit, its close).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "../../tools/serve/serve_agent.hpp"
#include "support/agent_check.hpp"
#include "support/loopback.hpp"
#include "transient/sockets/listener.hpp"

namespace {

using namespace std::chrono_literals;
using transient::endpoint;
using transient::policy_metrics;
using transient::unique_fd;
using transient::test::agent_check;
using transient::test::agent_reply;
using transient::tool::agent_endpoint;
using transient::tool::agent_line;
using transient::tool::agent_weight;
using transient::tool::health_report;
using clock_type = std::chrono::steady_clock;

policy_metrics budget(std::uint64_t live, std::uint64_t max) {
  policy_metrics m;
  m.live = live;
  m.max_connections = max;
  return m;
}

health_report health(const std::string& state, bool live, bool ready, const std::string& reason = "",
                     bool failed = false) {
  health_report h;
  h.state = state;
  h.live = live;
  h.ready = ready;
  h.reason = reason;
  h.failed = failed;
  return h;
}

TEST(ServeAgentLine, WeightIsTheFreeShareRoundedDownNeverZeroNeverAboveAHundred) {
  struct row {
    std::uint64_t live;
    std::uint64_t max;
    unsigned weight;
  };
  for (const row& r : std::vector<row>{{0, 8, 100},
                                       {1, 8, 87},  // 87.5
                                       {3, 8, 62},  // 62.5
                                       {4, 8, 50},
                                       {7, 8, 12},  // 12.5
                                       {1, 1000, 99},
                                       {999, 1000, 1},  // 0.1: never 0, HAProxy's drain
                                       {8, 8, 1},       // full but ready (no client waits yet)
                                       {9, 8, 1},       // above the budget: never negative
                                       {0, 0, 100},     // no budget known
                                       {0, 4294967295, 100},
                                       {4294967294, 4294967295, 1}}) {
    EXPECT_EQ(agent_weight(budget(r.live, r.max)), r.weight) << r.live << " of " << r.max;
  }
}

TEST(ServeAgentLine, EachHealthHasItsLine) {
  const policy_metrics rest = budget(0, 100);
  EXPECT_EQ(agent_line(health("accepting", true, true), rest), "up ready 100%\n");
  EXPECT_EQ(agent_line(health("accepting", true, true), budget(37, 100)), "up ready 63%\n");
  // Live but not ready: out of rotation by DRAIN, which only the agent's "ready" undoes.
  EXPECT_EQ(agent_line(health("backpressure", true, false, "connection budget full (100 of 100)"), budget(100, 100)),
            "up drain\n");
  EXPECT_EQ(agent_line(health("degraded", true, false, "accept failing, backing off: Too many open files"), rest),
            "up drain\n");
  EXPECT_EQ(agent_line(health("accepting", true, false, "accept queue 300 of 512"), rest), "up drain\n");
  EXPECT_EQ(agent_line(health("stopped", false, false, "stopping: draining 3 connection(s) in flight"), rest),
            "up drain\n");
  // Stalled: down, with the reason up to its details.
  EXPECT_EQ(agent_line(health("stalled", false, false,
                              "descriptors stayed exhausted with no progress for 1000 ms (stalled: no progress); "
                              "exiting after 1 connection(s) in flight",
                              true),
                       rest),
            "down #stalled: descriptors stayed exhausted with no progress for 1000 ms\n");
  EXPECT_EQ(
      agent_line(health("stopped", false, false, "listener closed; exiting after 0 connection(s) in flight", true),
                 rest),
      "fail #listener closed\n");
}

TEST(ServeAgentLine, TheReasonIsOneShortPrintableLine) {
  const std::string line =
      agent_line(health("stopped", false, false, "bad\r\nthing\t" + std::string(200, 'x') + "; more", true), {});
  EXPECT_EQ(line.rfind("fail #bad  thing ", 0), 0U) << line;
  EXPECT_EQ(line.find('\r'), std::string::npos);
  EXPECT_EQ(line.find('\n'), line.size() - 1);
  EXPECT_EQ(line.size(), std::string("fail #").size() + 80 + 1);
}

// An endpoint on a loopback port of its own, answering `line`.
struct agent_on_loopback {
  explicit agent_on_loopback(std::string line)
      : listener(transient::listen(endpoint::loopback_v4(0))), at(listener.local_endpoint()) {
    agent.emplace(std::move(listener), [line = std::move(line)] { return line; });
  }
  transient::listener listener;
  endpoint at;
  std::optional<agent_endpoint> agent;
};

TEST(ServeAgentEndpoint, AnswersEachConnectionWithOneLineThenTheEnd) {
  agent_on_loopback a("up ready 42%\n");
  for (int i = 0; i < 3; ++i) {
    const agent_reply r = agent_check(a.at);
    EXPECT_EQ(r.text, "up ready 42%\n");
    EXPECT_TRUE(r.closed);
    EXPECT_FALSE(r.reset);
  }
}

// HAProxy may send its agent-send string first. A reply written and closed over input it never
// read resets the connection, and the checker may lose the line it has not read yet.
TEST(ServeAgentEndpoint, TheLineIsReadWholeAfterAnAgentSendString) {
  agent_on_loopback a("up ready 42%\n");
  for (const auto pause : {0ms, 200ms}) {
    const agent_reply r = agent_check(a.at, "backend/server1\n", pause);
    EXPECT_EQ(r.text, "up ready 42%\n") << pause.count() << " ms";
    EXPECT_TRUE(r.closed) << pause.count() << " ms";
    EXPECT_FALSE(r.reset) << pause.count() << " ms";
  }
}

// Connections that never close linger (agent_linger) and hold the small budget; a check beyond
// it is answered at accept and closed, not queued until one of them goes.
TEST(ServeAgentEndpoint, AtItsLimitANewCheckIsAnsweredAtOnce) {
  agent_on_loopback a("up ready 42%\n");
  const auto start = clock_type::now();
  std::vector<unique_fd> idle;
  for (std::uint64_t i = 0; i < transient::tool::agent_connections + 4; ++i) {
    idle.push_back(transient::test::connect_to(a.at));
    ASSERT_TRUE(idle.back());
  }
  for (const unique_fd& c : idle) {  // each got its line: accepted, and now lingering
    ASSERT_EQ(transient::test::read_at_least(c.get(), 13, 2s), "up ready 42%\n");
  }
  const agent_reply r = agent_check(a.at, "backend/server1\n");
  EXPECT_EQ(r.text, "up ready 42%\n");
  EXPECT_TRUE(r.closed);
  // A check queued behind them would wait a whole agent_linger.
  EXPECT_LT(clock_type::now() - start, transient::tool::agent_linger / 2)
      << "the check waited for a lingering connection";
}

TEST(ServeAgentEndpoint, NoLineAfterClose) {
  agent_on_loopback a("up ready 42%\n");
  EXPECT_EQ(agent_check(a.at).text, "up ready 42%\n");
  const unique_fd lingering = transient::test::connect_to(a.at);  // open at the close
  ASSERT_EQ(transient::test::read_at_least(lingering.get(), 13, 2s), "up ready 42%\n");
  a.agent->close();
  EXPECT_FALSE(agent_check(a.at).connected) << "the listener is still open";
  a.agent->close();  // a second close does nothing
}

}  // namespace
