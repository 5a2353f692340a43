// ctest-labels: threads
// `transient serve --agent`, end to end: the line HAProxy's agent-check reads on each new
// connection, through rest, a budget partly held, a full budget, the drain on SIGTERM until the
// process exits, and a descriptor leak until the stall (when the agent must answer without a
// free descriptor).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/agent_check.hpp"
#include "support/loopback.hpp"
#include "support/serve_process.hpp"

namespace {

using namespace std::chrono_literals;
using namespace transient::test;
using clock_type = std::chrono::steady_clock;
using testing::HasSubstr;
using transient::endpoint;
using transient::unique_fd;

constexpr std::string_view ok = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
constexpr std::string_view get = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
constexpr std::string_view get_slow = "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n";

// Checks the agent at `at` every 20 ms until a line starts with `prefix`, at most `timeout`;
// the last line.
std::string line_until(const endpoint& at, const std::string& prefix, std::chrono::milliseconds timeout) {
  const auto deadline = clock_type::now() + timeout;
  std::string line = agent_check(at).text;
  while (line.rfind(prefix, 0) != 0 && clock_type::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    line = agent_check(at).text;
  }
  return line;
}

// A connection to `at` that was served one request (so it surely holds a place).
unique_fd served_connection(const endpoint& at) {
  unique_fd c = connect_to(at);
  if (!c || !send_text(c.get(), get) || read_response(c.get(), 2000ms) != ok) {
    return {};
  }
  return c;
}

TEST(ServeAgent, SaysUpReadyWithTheFreeShareOfTheBudgetThenDrainWhenFull) {
  serve_process serve({"--max-connections", "8", "--agent", "127.0.0.1:0"});
  ASSERT_TRUE(serve.at && serve.agent) << serve.stderr_text();
  agent_reply r = agent_check(*serve.agent);
  EXPECT_EQ(r.text, "up ready 100%\n");
  EXPECT_TRUE(r.closed);
  EXPECT_FALSE(r.reset);
  std::vector<unique_fd> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(served_connection(*serve.at));
    ASSERT_TRUE(held.back());
  }
  EXPECT_EQ(line_until(*serve.agent, "up ready 62%", 2000ms), "up ready 62%\n") << "5 of 8 places free";
  for (int i = 0; i < 5; ++i) {
    held.push_back(served_connection(*serve.at));
    ASSERT_TRUE(held.back());
  }
  const unique_fd waiting = connect_to(*serve.at);  // in the backlog: the budget is full
  ASSERT_TRUE(waiting && send_text(waiting.get(), get));
  EXPECT_EQ(line_until(*serve.agent, "up drain", 2000ms), "up drain\n");
  held.clear();
  EXPECT_EQ(read_response(waiting.get(), 2000ms), ok) << "the waiting client is served after the release";
  EXPECT_EQ(line_until(*serve.agent, "up ready 87%", 2000ms), "up ready 87%\n") << "the waiting client holds one";
  serve.signal(SIGTERM);
}

// Under --shed 503 a full budget does not pause accepting (new clients are answered 503), yet
// the instance has no room: the agent says drain and /readyz 503 all the same, so that a load
// balancer stops sending it clients it would only refuse.
TEST(ServeAgent, AFullBudgetThatShedsIsNotReadyEither) {
  serve_process serve(
      {"--max-connections", "2", "--shed", "503", "--agent", "127.0.0.1:0", "--metrics", "127.0.0.1:0"});
  ASSERT_TRUE(serve.at && serve.agent && serve.metrics) << serve.stderr_text();
  std::vector<unique_fd> held;
  for (int i = 0; i < 2; ++i) {
    held.push_back(served_connection(*serve.at));
    ASSERT_TRUE(held.back());
  }
  EXPECT_EQ(line_until(*serve.agent, "up drain", 2000ms), "up drain\n");
  const unique_fd probe = connect_to(*serve.metrics);
  ASSERT_TRUE(probe);
  const auto [status, body] = query(probe.get(), "/readyz");
  EXPECT_EQ(status, 503);
  EXPECT_THAT(body, HasSubstr("connection budget full (2 of 2): new clients are answered 503"));
  held.clear();
  EXPECT_EQ(line_until(*serve.agent, "up ready 100%", 2000ms), "up ready 100%\n") << "both places free again";
  serve.signal(SIGTERM);
}

// HAProxy's agent-send string comes first and the agent never needs it: the line still arrives
// whole, and the connection ends without a reset.
TEST(ServeAgent, TheLineArrivesWholeAfterAnAgentSendString) {
  serve_process serve({"--agent", "127.0.0.1:0"});
  ASSERT_TRUE(serve.at && serve.agent) << serve.stderr_text();
  for (const auto pause : {0ms, 200ms}) {
    const agent_reply r = agent_check(*serve.agent, "be_app/serve1\n", pause);
    EXPECT_EQ(r.text, "up ready 100%\n") << pause.count() << " ms";
    EXPECT_TRUE(r.closed);
    EXPECT_FALSE(r.reset);
  }
}

// SIGTERM: the agent says drain at once and goes on answering while a slow request finishes,
// until the process exits.
TEST(ServeAgent, AnswersDrainFromTheStopSignalUntilTheProcessExits) {
  serve_process serve({"--agent", "127.0.0.1:0", "--slow-response", "2s"}, TRANSIENT_FIXTURE_PATH);
  ASSERT_TRUE(serve.at && serve.agent) << serve.stderr_text();
  const unique_fd slow = connect_to(*serve.at);
  ASSERT_TRUE(slow && send_text(slow.get(), get_slow));
  ASSERT_EQ(line_until(*serve.agent, "up ready 9", 2000ms).rfind("up ready 9", 0), 0U);  // one place of many taken
  const auto sent = clock_type::now();
  serve.signal(SIGTERM);
  EXPECT_EQ(line_until(*serve.agent, "up drain", 500ms), "up drain\n");
  EXPECT_LT(clock_type::now() - sent, 500ms);
  int drains = 0;
  while (clock_type::now() - sent < 5s) {
    const agent_reply r = agent_check(*serve.agent);
    if (r.text.empty()) {
      break;  // the slow response was written and the process exits (a check in its backlog is reset)
    }
    EXPECT_EQ(r.text, "up drain\n");
    drains += r.text == "up drain\n" ? 1 : 0;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_GE(drains, 10) << "the agent did not answer through the drain (2 s)";
  EXPECT_THAT(read_response(slow.get(), 1000ms), HasSubstr("\r\n\r\nok"));
  EXPECT_EQ(serve.wait(3000ms), 0);
}

// A leak exhausts the descriptors: drain while degraded, then down once stalled, each on a new
// connection as HAProxy makes them, though no descriptor is free (the agent's spare one).
TEST(ServeAgent, SaysDrainWhenDegradedThenDownOnceStalled) {
  const std::unique_ptr<serve_process> started =
      serve_under_fd_limit(64,
                           {"--leak-per-connection", "4", "--stall-timeout", "1500ms", "--agent", "127.0.0.1:0",
                            "--slow-response", "5s", "--fd-limit", "keep"},
                           TRANSIENT_FIXTURE_PATH);
  serve_process& serve = *started;
  ASSERT_TRUE(serve.at && serve.agent) << serve.stderr_text();
  EXPECT_EQ(agent_check(*serve.agent).text.rfind("up ready ", 0), 0U);
  const unique_fd slow = connect_to(*serve.at);  // keeps the process up after the stall
  ASSERT_TRUE(slow && send_text(slow.get(), get_slow));
  const unique_fd pending = exhaust_by_leak(*serve.at);
  ASSERT_TRUE(pending) << "the leak never exhausted the descriptors";
  EXPECT_EQ(line_until(*serve.agent, "up drain", 1000ms), "up drain\n") << "degraded";
  const std::string down = line_until(*serve.agent, "down", 4000ms);
  EXPECT_EQ(down, "down #stalled: descriptors stayed exhausted with no progress for 1500 ms\n") << serve.stderr_text();
  EXPECT_EQ(serve.wait(8000ms), 1);
  EXPECT_THAT(serve.stderr_text(), HasSubstr("stopped: stalled"));
}

}  // namespace
