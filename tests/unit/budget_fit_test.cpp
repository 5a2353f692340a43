// A budget above the descriptors the process can still open is said once, at start, by each
// driver: the check itself, the epoll server and the Asio adapter (`transient serve` in
// serve_cli_test.cpp). Real RLIMIT_NOFILE and real descriptors; the budgets are set above
// the limit rather than the limit lowered, so the test process keeps its own.
#include "support/asio_warnings.hpp"  // first: before any Asio header

#include "transient/policy/budget.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "asio_support.hpp"
#include "transient/adapters/asio.hpp"
#include "transient/diagnosis/diagnostics.hpp"
#include "transient/drivers/server.hpp"

namespace {

using namespace std::chrono_literals;

std::uint64_t soft_limit() {
  std::error_code ec;
  const std::uint64_t limit = transient::fd_soft_limit(ec);
  EXPECT_FALSE(ec);
  return limit;
}

// The warnings a sink received, as the line the default sink writes (an event's text is
// valid only during the call).
struct warning_lines {
  std::vector<std::string> lines;
  std::vector<transient::policy_event> events;  // text and source cleared

  transient::policy_event_sink sink() {
    return [this](const transient::policy_event& e) {
      if (e.kind == transient::policy_event_kind::warning) {
        lines.push_back(transient::format(e));
        transient::policy_event copy = e;
        copy.text = {};
        copy.source = {};
        events.push_back(copy);
      }
    };
  }
};

TEST(BudgetFit, ABudgetAboveTheDescriptorsLeftNamesTheBudgetTheLimitWhatIsOpenAndWhatFits) {
  const std::uint64_t limit = soft_limit();
  ASSERT_LT(limit, transient::connection_budget::max_limit - 100) << "RLIMIT_NOFILE is unlimited here";
  const std::uint64_t open_now = transient::take_fd_census().total;
  const transient::budget_fit fit = transient::check_budget_fit(limit + 10);
  EXPECT_FALSE(fit);
  EXPECT_EQ(fit.fd_limit, limit);
  EXPECT_EQ(fit.open, open_now);
  EXPECT_EQ(fit.fits, limit - open_now);
  const std::string budget = std::to_string(limit + 10);
  EXPECT_EQ(fit.warning, "the connection budget of " + budget +
                             " is more than the descriptors left: RLIMIT_NOFILE is " + std::to_string(limit) + " and " +
                             std::to_string(open_now) + " are open, so at most " + std::to_string(limit - open_now) +
                             " connections fit; descriptors will run out first, and the stall watchdog may stop a "
                             "server whose clients are legitimate. Use a budget of " +
                             std::to_string(limit - open_now) + " (0: the automatic one) or raise the limit to " +
                             std::to_string(limit + 10 + open_now) + " (ulimit -n)");
}

TEST(BudgetFit, ABudgetThatFitsSaysNothing) {
  const transient::budget_fit fit = transient::check_budget_fit(8);
  EXPECT_TRUE(fit) << fit.warning;
  EXPECT_TRUE(fit.warning.empty());
  warning_lines seen;
  static_cast<void>(transient::warn_if_budget_does_not_fit(8, seen.sink()));
  EXPECT_TRUE(seen.lines.empty());
}

TEST(BudgetFit, TheServerWarnsOnceAtConstructionThroughItsSink) {
  const std::uint64_t limit = soft_limit();
  warning_lines seen;
  transient::server_options options;
  options.max_connections = limit + 10;
  options.threads = 2;  // one warning per server, not per loop
  options.policy.sink = seen.sink();
  {
    std::vector<transient::listener> listeners;
    listeners.push_back(transient::listen(transient::parse_endpoint("127.0.0.1:0")));
    const transient::server srv(
        std::move(listeners), [](transient::connection) {}, options);
    ASSERT_EQ(seen.lines.size(), 1U);
    EXPECT_EQ(seen.events[0].max_connections, limit + 10);
    EXPECT_EQ(seen.events[0].fd_limit, limit);
    const std::string& line = seen.lines[0];
    EXPECT_EQ(line.rfind("transient: warning: the connection budget of " + std::to_string(limit + 10) +
                             " is more than the descriptors left: RLIMIT_NOFILE is " + std::to_string(limit) + " and ",
                         0),
              0U)
        << line;
    EXPECT_NE(line.find(" are open, so at most "), std::string::npos) << line;
  }
  options.max_connections = 8;
  std::vector<transient::listener> again;
  again.push_back(transient::listen(transient::parse_endpoint("127.0.0.1:0")));
  const transient::server quiet(
      std::move(again), [](transient::connection) {}, options);
  EXPECT_EQ(seen.lines.size(), 1U) << "a budget that fits says nothing";
}

TEST(BudgetFit, TheAsioAdapterWarnsOnceForABudgetSharedByTwoLoops) {
  const std::uint64_t limit = soft_limit();
  asio::io_context io;
  auto first = transient::test::loopback_acceptor(io);
  auto second = transient::test::loopback_acceptor(io);
  warning_lines seen;
  transient::asio::loop_options options;
  options.budget = transient::asio::shared_budget::create(limit + 10);
  options.policy.sink = seen.sink();
  transient::test::loop_outcome a;
  transient::test::loop_outcome b;
  transient::asio::async_accept_loop(
      first, [](transient::asio::accepted_socket) {}, options, transient::test::completion_into(a));
  transient::asio::async_accept_loop(
      second, [](transient::asio::accepted_socket) {}, options, transient::test::completion_into(b));
  transient::test::run_for(io, 20ms);
  first.close();
  second.close();
  ASSERT_TRUE(transient::test::run_until(io, [&] { return a.done && b.done; }));
  ASSERT_EQ(seen.lines.size(), 1U);
  EXPECT_EQ(seen.lines[0].rfind("transient: warning: the connection budget of " + std::to_string(limit + 10) + " ", 0),
            0U)
      << seen.lines[0];
  EXPECT_EQ(seen.events[0].fd_limit, limit);
}

}  // namespace
