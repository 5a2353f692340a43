// The Asio adapter fed every accept errno of docs/errors.md. The kernel will not produce ENFILE,
// EPERM, EPROTO... on demand, so a custom acceptor (the adapter's acceptor is a template
// parameter) completes the first accepts with scripted error codes in Asio's own
// "asio.system" category, then accepts for real. Each case checks what the policy made of
// it: skip, retry, back off (and recover), or stop with the right condition.
#include "support/asio_warnings.hpp"  // first: before any Asio header

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <deque>
#include <numeric>
#include <vector>

#include "asio_support.hpp"
#include "support/loopback.hpp"

namespace {

using namespace std::chrono_literals;
using namespace transient::test;
namespace tasio = adapter;
using tcp = net::ip::tcp;
using transient::condition;

// An errno value as the Asio flavour reports it.
transient::test::net_error_code asio_errno(int value) { return {value, net::error::get_system_category()}; }

// A real acceptor whose next accepts complete with scripted errors (posted, as Asio would).
class scripted_acceptor : public tcp::acceptor {
 public:
  using tcp::acceptor::acceptor;

  std::deque<transient::test::net_error_code> script;  // errors for the next accepts, then real accepts
  int accepts = 0;                                     // async_accept calls

  template <typename Executor, typename Handler>
  void async_accept(const Executor& executor, tcp::endpoint& peer, Handler&& handler) {
    ++accepts;
    if (script.empty()) {
      tcp::acceptor::async_accept(executor, peer, std::forward<Handler>(handler));
      return;
    }
    const transient::test::net_error_code ec = script.front();
    script.pop_front();
    const auto where = net::get_associated_executor(handler, get_executor());
    net::post(where, [h = std::forward<Handler>(handler), ec, executor]() mutable {
      std::move(h)(ec, tcp::socket(executor));
    });
  }
};

scripted_acceptor listening(net::io_context& io) {
  return scripted_acceptor(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
}

std::uint64_t sum(const transient::policy_metrics::by_condition& counts) {
  return std::accumulate(counts.begin(), counts.end(), std::uint64_t{0});
}

// Runs a loop whose first accepts fail with `errors`, with one client waiting.
struct scripted_run {
  net::io_context io;
  scripted_acceptor acceptor = listening(io);
  transient::unique_fd client;
  std::vector<transient::policy_event> events;
  std::vector<tasio::accepted_socket> served;
  transient::test::stop_signal cancel;
  loop_outcome outcome;

  explicit scripted_run(std::vector<transient::test::net_error_code> errors, tasio::loop_options options = {}) {
    acceptor.script.assign(errors.begin(), errors.end());
    options.max_connections = 16;
    options.policy.sink = [this](const transient::policy_event& e) { events.push_back(e); };
    options.policy.seed = 7;
    client = connect_to(address_of(acceptor));
    tasio::async_accept_loop(
        acceptor, [this](tasio::accepted_socket c) { served.push_back(std::move(c)); }, options,
        cancel.bind(completion_into(outcome)));
  }
  bool served_within(std::chrono::milliseconds limit) {
    return run_until(
               io, [&] { return !served.empty() || outcome.done; }, limit) &&
           !served.empty();
  }
  void stop() {
    cancel.emit(acceptor);
    ASSERT_TRUE(run_until(io, [&] { return outcome.done; }));
  }
};

TEST(AsioErrors, DeadPendingConnectionsAreSkippedAndTheNextIsAcceptedAtOnce) {
  for (const int e : {ECONNABORTED, EPROTO, ENOPROTOOPT, ENETDOWN, ENETUNREACH, EHOSTDOWN, EHOSTUNREACH, ENONET,
                      ECONNRESET, EPERM, EACCES}) {
    SCOPED_TRACE(e);
    scripted_run run({asio_errno(e)});
    ASSERT_TRUE(run.served_within(2s));
    // The failed accept, the next one at once (served), and the one waiting for a next client.
    EXPECT_EQ(run.acceptor.accepts, 3);
    run.stop();
    const auto& m = run.outcome.report.metrics;
    EXPECT_EQ(sum(m.skipped), 1U);
    EXPECT_EQ(sum(m.failed), 0U);
    EXPECT_EQ(m.pauses[static_cast<std::size_t>(transient::pause_reason::backoff)], 0U);
    EXPECT_EQ(m.accepted, 1U);
    EXPECT_FALSE(run.outcome.error);
    EXPECT_EQ(run.events.size(), 1U) << "only the stop is reported; a skip is not a log line";
  }
}

TEST(AsioErrors, InterruptedAndWouldBlockRetryWithoutCountingAFailure) {
  for (const int e : {EINTR, EAGAIN}) {
    SCOPED_TRACE(e);
    scripted_run run({asio_errno(e)});
    ASSERT_TRUE(run.served_within(2s));
    run.stop();
    const auto& m = run.outcome.report.metrics;
    EXPECT_EQ(sum(m.failed), 0U);
    EXPECT_EQ(m.retried, e == EINTR ? 1U : 0U);
    EXPECT_EQ(m.accepted, 1U);
  }
}

TEST(AsioErrors, ExhaustionBacksOffOnTheTimerThenRecoversWithTwoLogLines) {
  for (const int e : {EMFILE, ENFILE, ENOBUFS, ENOMEM}) {
    SCOPED_TRACE(e);
    scripted_run run({asio_errno(e), asio_errno(e), asio_errno(e)});
    const auto start = std::chrono::steady_clock::now();
    ASSERT_TRUE(run.served_within(2s));
    // Backoff from 1 ms, doubling, full jitter never below 1 ms: three pauses take >= 3 ms.
    EXPECT_GE(std::chrono::steady_clock::now() - start, 3ms);
    // Three failures, re-armed only when each pause ended, the success, and the next wait.
    EXPECT_EQ(run.acceptor.accepts, 5);
    run.stop();
    const auto& m = run.outcome.report.metrics;
    EXPECT_EQ(sum(m.failed), 3U);
    EXPECT_EQ(m.failed[static_cast<std::size_t>(condition::resource_exhausted)] +
                  m.failed[static_cast<std::size_t>(condition::fd_exhausted)] +
                  m.failed[static_cast<std::size_t>(condition::process_fd_limit)] +
                  m.failed[static_cast<std::size_t>(condition::system_fd_limit)] +
                  m.failed[static_cast<std::size_t>(condition::memory_exhausted)],
              3U);
    EXPECT_EQ(m.pauses[static_cast<std::size_t>(transient::pause_reason::backoff)], 3U);
    ASSERT_EQ(run.events.size(), 3U);
    EXPECT_EQ(run.events[0].kind, transient::policy_event_kind::degraded);
    EXPECT_EQ(run.events[0].error, asio_errno(e));
    EXPECT_EQ(run.events[1].kind, transient::policy_event_kind::recovered);
    EXPECT_EQ(run.events[1].failures, 3U);
    EXPECT_EQ(run.events[2].kind, transient::policy_event_kind::stopped);
  }
}

TEST(AsioErrors, PersistentExhaustionDoesNotSpinAndTheWatchdogStopsWithADiagnosis) {
  tasio::loop_options options;
  options.policy.stall_timeout = 300ms;
  scripted_run run(std::vector<transient::test::net_error_code>(100000, asio_errno(EMFILE)), options);
  ASSERT_TRUE(run_until(
      run.io, [&] { return run.outcome.done; }, 3s));
  EXPECT_TRUE(run.served.empty());
  // 1 + 2 + 4 + ... ms up to 300 ms: about ten accepts (jitter may shorten some delays).
  EXPECT_LE(run.acceptor.accepts, 40) << "the loop re-armed the acceptor while paused";
  EXPECT_GE(run.acceptor.accepts, 3);
  EXPECT_EQ(run.outcome.error, condition::stalled) << run.outcome.error.message();
  EXPECT_NE(run.outcome.report.diagnosis.find("RLIMIT_NOFILE"), std::string::npos) << run.outcome.report.diagnosis;
  ASSERT_GE(run.events.size(), 3U);
  EXPECT_EQ(run.events.front().kind, transient::policy_event_kind::degraded);
  EXPECT_EQ(run.events.back().kind, transient::policy_event_kind::diagnosis);
}

TEST(AsioErrors, NotListeningAndProgrammingErrorsStopTheLoop) {
  struct expectation {
    int errno_value;
    condition expected;
  };
  for (const auto [e, expected] :
       {expectation{EINVAL, condition::not_listening}, expectation{EBADF, condition::programming_error},
        expectation{ENOTSOCK, condition::programming_error}, expectation{EFAULT, condition::programming_error},
        expectation{EOPNOTSUPP, condition::not_supported}}) {
    SCOPED_TRACE(e);
    scripted_run run({asio_errno(e)});
    ASSERT_TRUE(run_until(run.io, [&] { return run.outcome.done; }));
    EXPECT_TRUE(run.served.empty()) << "a failed loop served a client";
    EXPECT_EQ(run.outcome.error, expected) << run.outcome.error.message();
    EXPECT_FALSE(run.outcome.report.diagnosis.empty());
    EXPECT_EQ(run.acceptor.accepts, 1);
  }
}

TEST(AsioErrors, OperationNotSupportedOnAVerifiedListenerIsOneConnectionsFailure) {
  tasio::loop_options options;
  options.policy.listener_verified = true;
  scripted_run run({asio_errno(EOPNOTSUPP)}, options);
  ASSERT_TRUE(run.served_within(2s));
  run.stop();
  EXPECT_EQ(sum(run.outcome.report.metrics.skipped), 1U);
}

TEST(AsioErrors, AnUnknownErrorBacksOffAndIsReportedOnce) {
  scripted_run run({asio_errno(EDOM), asio_errno(EDOM)});
  ASSERT_TRUE(run.served_within(2s));
  run.stop();
  EXPECT_EQ(run.outcome.report.metrics.pauses[static_cast<std::size_t>(transient::pause_reason::backoff)], 2U);
  ASSERT_EQ(run.events.size(), 3U);
  EXPECT_EQ(run.events[0].kind, transient::policy_event_kind::degraded);
  EXPECT_EQ(run.events[1].kind, transient::policy_event_kind::recovered);
}

// Under EMFILE a shed mode other than queue drains the waiting clients with the spare
// descriptor at once (libuv's trick), not one per backoff step: the backoff here is 10 s.
TEST(AsioErrors, UnderEmfileTheSpareShedsEveryWaitingClientAtOnce) {
  tasio::loop_options options;
  options.policy.shed = transient::shed_mode::close;
  options.policy.backoff.initial = 10s;
  options.policy.backoff.cap = 10s;
  scripted_run run({asio_errno(EMFILE)}, options);  // its client waits, and two more
  const transient::unique_fd second = connect_to(address_of(run.acceptor));
  const transient::unique_fd third = connect_to(address_of(run.acceptor));
  const auto all_closed = [&] {
    return std::ranges::all_of(std::array{run.client.get(), second.get(), third.get()},
                               [](int fd) { return transient::test::closed_by_peer(fd, 0ms); });
  };
  EXPECT_TRUE(run_until(run.io, all_closed, 3s));
  run.stop();
  const auto& m = run.outcome.report.metrics;
  EXPECT_EQ(m.shed[static_cast<std::size_t>(transient::shed_reason::budget)], 3U);
  EXPECT_EQ(m.accepted, 0U);
  EXPECT_TRUE(run.served.empty());
  EXPECT_FALSE(run.acceptor.non_blocking()) << "the acceptor's own mode is restored";
}

TEST(AsioErrors, CancelledWhileBackingOffStopsAtOnce) {
  scripted_run run(std::vector<transient::test::net_error_code>(100000, asio_errno(ENOBUFS)));
  transient::test::run_for(run.io, 100ms);
  const int accepts = run.acceptor.accepts;
  run.stop();
  EXPECT_FALSE(run.outcome.error);
  EXPECT_EQ(run.acceptor.accepts, accepts) << "re-armed after the stop";
  run.io.restart();
  run.io.run_for(1s);
  EXPECT_TRUE(run.io.stopped()) << "the backoff timer was left pending";
}

}  // namespace
