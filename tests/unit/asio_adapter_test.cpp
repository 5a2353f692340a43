// The Asio adapter on real loopback sockets, on one thread: serving in both forms, the
// budget, stopping by cancellation and by closing the acceptor (no handler after, no
// descriptor left), shed modes, and the failures that end a loop.
#include "support/asio_warnings.hpp"  // first: before any Asio header

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <exception>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "asio_support.hpp"
#include "support/loopback.hpp"

namespace {

using namespace std::chrono_literals;
using namespace transient::test;
namespace tasio = adapter;
using tcp = net::ip::tcp;

// A handler that says "hi" and keeps the connection until the test lets it go.
struct keeper {
  std::deque<tasio::accepted_socket>* held;
  int* calls;
  void operator()(tasio::accepted_socket c) const {
    ++*calls;
    EXPECT_TRUE(c.place) << "every served socket carries a permit";
    EXPECT_TRUE(c.peer.address().is_loopback());
    transient::test::net_error_code ec;
    net::write(c.socket, net::buffer("hi", 2), ec);
    EXPECT_FALSE(ec);
    held->push_back(std::move(c));
  }
};

tasio::loop_options quiet_options(std::uint64_t max_connections = 100) {
  tasio::loop_options options;
  options.max_connections = max_connections;
  options.policy.sink = [](const transient::policy_event&) {};
  return options;
}

// A loop served by a keeper on a loopback acceptor, and what it records: the sockets kept,
// the handler's calls, how the loop completed.
struct keeping_loop {
  net::io_context io;
  tcp::acceptor acceptor = loopback_acceptor(io);
  const transient::endpoint where = address_of(acceptor);
  std::deque<tasio::accepted_socket> held;
  int calls = 0;
  loop_outcome outcome;
  transient::test::stop_signal cancel;

  // Starts the loop with `options`; `cancel` stops it.
  void start(const tasio::loop_options& options) {
    tasio::async_accept_loop(acceptor, keeper{&held, &calls}, options, cancel.bind(completion_into(outcome)));
  }
  // With a budget of 1: a first client is served and holds the place, then a second one
  // connects; returns once the loop dealt with the second (data, end of stream or reset).
  void connect_over_the_budget(transient::unique_fd& first, transient::unique_fd& second) {
    first = connect_to(where);
    ASSERT_TRUE(run_until(io, [&] { return calls == 1; }));
    second = connect_to(where);
    ASSERT_TRUE(run_until(io, [&] {
      pollfd p{second.get(), POLLIN, 0};
      return ::poll(&p, 1, 0) > 0;
    }));
  }
};

#if TRANSIENT_TEST_HAS_CO_AWAIT
TEST(AsioAdapter, CoroutineFormServesUntilCancelledThenRunsNoHandlerAndLeaksNothing) {
  net::io_context io;
  auto acceptor = loopback_acceptor(io);
  const auto where = address_of(acceptor);
  const int before = transient::test::open_descriptor_count();
  std::deque<tasio::accepted_socket> held;
  int calls = 0;
  transient::test::stop_signal cancel;
  bool finished = false;
  std::exception_ptr thrown;
  tasio::loop_report report;
  net::co_spawn(io, tasio::accept_loop(acceptor, keeper{&held, &calls}, quiet_options()),
                cancel.bind([&](std::exception_ptr e, tasio::loop_report r) {
                  finished = true;
                  thrown = e;
                  report = std::move(r);
                }));
  {
    std::vector<transient::unique_fd> clients;
    for (int i = 0; i < 5; ++i) {
      clients.push_back(connect_to(where));
      ASSERT_TRUE(clients.back());
    }
    ASSERT_TRUE(run_until(io, [&] { return calls == 5; }));
    for (const auto& client : clients) {
      EXPECT_EQ(read_some(client.get(), 1s), "hi");
    }
  }
  cancel.emit(acceptor);
  ASSERT_TRUE(run_until(io, [&] { return finished; }));
  EXPECT_FALSE(thrown) << "a cancelled loop is a clean stop";
  EXPECT_FALSE(report.error);
  EXPECT_EQ(report.metrics.accepted, 5U);

#if TRANSIENT_TEST_HAS_CANCELLATION
  // After the stop: a new client stays in the backlog, no handler runs.
  const auto late = connect_to(where);
  ASSERT_TRUE(late);
  transient::test::run_for(io, 150ms);
  EXPECT_EQ(calls, 5);
  EXPECT_EQ(read_some(late.get(), 50ms), "");
  const int left_open = 1;  // the late client
#else
  // This Asio has no per-operation cancellation: the stop closed the acceptor, so a new
  // client is refused, and no handler runs.
  EXPECT_FALSE(connect_to(where));
  transient::test::run_for(io, 150ms);
  EXPECT_EQ(calls, 5);
  const int left_open = -1;  // the acceptor is closed
#endif

  // Nothing of the loop is left pending, and its descriptors are closed.
  io.restart();
  io.run_for(1s);
  EXPECT_TRUE(io.stopped()) << "the loop left work behind in the io_context";
  held.clear();
  EXPECT_EQ(transient::test::open_descriptor_count(), before + left_open) << "only the late client is still open";
}
#endif

TEST(AsioAdapter, CompletionFormKeepsClientsInTheBacklogAtTheBudgetUntilARelease) {
  keeping_loop l;
  auto options = quiet_options(2);
  auto budget = tasio::shared_budget::create(2);
  options.budget = budget;
  l.start(options);
  std::vector<transient::unique_fd> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(connect_to(l.where));
  }
  ASSERT_TRUE(run_until(l.io, [&] { return l.calls == 2; }));
  transient::test::run_for(l.io, 200ms);
  EXPECT_EQ(l.calls, 2) << "the third client was served over budget";
  EXPECT_EQ(budget->budget().live(), 2U);
  EXPECT_EQ(read_some(clients[2].get(), 20ms), "");
  l.held.pop_front();  // closes the socket, then releases the permit: the loop resumes
  ASSERT_TRUE(run_until(l.io, [&] { return l.calls == 3; }));
  EXPECT_EQ(read_some(clients[2].get(), 1s), "hi");
  l.cancel.emit(l.acceptor);
  ASSERT_TRUE(run_until(l.io, [&] { return l.outcome.done; }));
  EXPECT_FALSE(l.outcome.error);
  EXPECT_EQ(l.outcome.report.metrics.pauses[static_cast<std::size_t>(transient::pause_reason::capacity)], 2U)
      << "paused at the budget after the second accept and again after the third";
  l.held.clear();
  EXPECT_EQ(budget->budget().live(), 0U);
}

// Two loops share a budget of two. The first serves a client and its next accept holds the
// other place (an idle loop holds one, for its accept in flight); the second loop is idle,
// waiting for readiness with no place. Its client then waits in the queue (queue mode never
// sheds) until a place comes back. An accept armed without a place would take that client
// and have to shed it.
TEST(AsioAdapter, AnIdleLoopSharingAFullBudgetLeavesItsClientInTheQueue) {
  net::io_context io;
  tcp::acceptor first = loopback_acceptor(io);
  tcp::acceptor second = loopback_acceptor(io);
  std::deque<tasio::accepted_socket> held;
  int calls = 0;
  loop_outcome first_outcome;
  loop_outcome second_outcome;
  transient::test::stop_signal cancel_first;
  transient::test::stop_signal cancel_second;
  auto options = quiet_options();
  options.budget = tasio::shared_budget::create(2);
  tasio::async_accept_loop(first, keeper{&held, &calls}, options, cancel_first.bind(completion_into(first_outcome)));
  tasio::async_accept_loop(second, keeper{&held, &calls}, options, cancel_second.bind(completion_into(second_outcome)));
  transient::test::run_for(io, 20ms);  // both loops are idle

  const transient::unique_fd served = connect_to(address_of(first));
  ASSERT_TRUE(run_until(io, [&] { return calls == 1; }));
  const transient::unique_fd waiting = connect_to(address_of(second));
  transient::test::run_for(io, 200ms);
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(closed_by_peer(waiting.get(), 20ms)) << "shed instead of left in the queue";
  held.clear();  // the place comes back: the second loop serves its client
  ASSERT_TRUE(run_until(io, [&] { return calls == 2; }));
  EXPECT_EQ(read_some(waiting.get(), 1s), "hi");

  cancel_first.emit(first);
  cancel_second.emit(second);
  ASSERT_TRUE(run_until(io, [&] { return first_outcome.done && second_outcome.done; }));
  EXPECT_FALSE(first_outcome.error);
  EXPECT_FALSE(second_outcome.error);
  EXPECT_EQ(second_outcome.report.metrics.shed[static_cast<std::size_t>(transient::shed_reason::budget)], 0U);
}

TEST(AsioAdapter, SetsEnableConnectionAborted) {
  net::io_context io;
  auto acceptor = loopback_acceptor(io);
  net::socket_base::enable_connection_aborted before;
  acceptor.get_option(before);
  EXPECT_FALSE(before.value());
  loop_outcome outcome;
  tasio::async_accept_loop(
      acceptor, [](tasio::accepted_socket) {}, quiet_options(), completion_into(outcome));
  net::socket_base::enable_connection_aborted after;
  acceptor.get_option(after);
  EXPECT_TRUE(after.value()) << "Asio would retry ECONNABORTED and EPROTO out of the policy's sight";
  acceptor.close();
  ASSERT_TRUE(run_until(io, [&] { return outcome.done; }));
  EXPECT_FALSE(outcome.error);
}

TEST(AsioAdapter, ClosingTheAcceptorStopsCleanlyWhileAcceptingAndWhilePaused) {
  for (const bool paused : {false, true}) {
    SCOPED_TRACE(paused ? "paused at the budget" : "accepting");
    keeping_loop l;
    auto options = quiet_options(1);
    options.close_check = 50ms;
    tasio::async_accept_loop(l.acceptor, keeper{&l.held, &l.calls}, options, completion_into(l.outcome));
    transient::unique_fd client;
    if (paused) {
      client = connect_to(l.where);
      ASSERT_TRUE(run_until(l.io, [&] { return l.calls == 1; }));
      transient::test::run_for(l.io, 20ms);  // now paused for a release
    } else {
      transient::test::run_for(l.io, 20ms);  // the accept waits in the reactor
    }
    const auto closed_at = std::chrono::steady_clock::now();
    l.acceptor.close();
    ASSERT_TRUE(run_until(
        l.io, [&] { return l.outcome.done; }, 2s));
    EXPECT_LT(std::chrono::steady_clock::now() - closed_at, 1s);
    EXPECT_FALSE(l.outcome.error) << l.outcome.error.message();
    l.io.restart();
    l.io.run_for(1s);
    EXPECT_TRUE(l.io.stopped()) << "the loop left work behind";
  }
}

// A session that takes the socket and the permit apart (as Beast's does) keeps them after
// the loop ended and let go of its budget; the permit alone keeps the budget alive, and the
// two may be dropped in either order.
TEST(AsioAdapter, ASocketAndItsPermitTakenApartOutliveTheLoopAndItsBudget) {
  for (const bool place_first : {false, true}) {
    SCOPED_TRACE(place_first ? "the permit dropped first" : "the socket closed first");
    net::io_context io;
    auto acceptor = loopback_acceptor(io);
    const auto where = address_of(acceptor);
    struct session {
      transient::permit place;
      tcp::socket socket;
    };
    std::deque<session> sessions;
    loop_outcome outcome;
    auto options = quiet_options();
    std::weak_ptr<tasio::shared_budget> watch;
    {
      auto budget = tasio::shared_budget::create(4);
      watch = budget;
      options.budget = std::move(budget);
    }
    tasio::async_accept_loop(
        acceptor,
        [&sessions](tasio::accepted_socket c) {
          sessions.push_back({std::move(c.place), std::move(c.socket)});
        },
        std::move(options), completion_into(outcome));
    const auto client = connect_to(where);
    ASSERT_TRUE(run_until(io, [&] { return sessions.size() == 1; }));
    acceptor.close();
    ASSERT_TRUE(run_until(io, [&] { return outcome.done; }));
    ASSERT_TRUE(run_until(io, [&] { return watch.use_count() == 1; }))
        << "the permit does not hold the budget alone once the loop is gone: " << watch.use_count() << " owners";
    EXPECT_EQ(sessions.front().place.budget()->live(), 1U);
    if (place_first) {
      sessions.front().place.release();
      EXPECT_TRUE(watch.expired());
      sessions.clear();
    } else {
      sessions.front().socket.close();
      sessions.clear();
      EXPECT_TRUE(watch.expired());
    }
    EXPECT_TRUE(closed_by_peer(client.get(), 3s));
  }
}

TEST(AsioAdapter, ShedModesRefuseClientsOverBudget) {
  for (const auto mode : {transient::shed_mode::close, transient::shed_mode::reset, transient::shed_mode::respond}) {
    SCOPED_TRACE(std::string(transient::to_string(mode)));
    keeping_loop l;
    int refused = 0;
    auto options = quiet_options(1);
    options.policy.shed = mode;
    options.refuse = [&](tcp::socket& s, const tcp::endpoint&) {
      ++refused;
      transient::test::net_error_code ec;
      net::write(s, net::buffer("no", 2), ec);
    };
    l.start(options);
    transient::unique_fd first;
    transient::unique_fd second;
    ASSERT_NO_FATAL_FAILURE(l.connect_over_the_budget(first, second));
    transient::test::run_for(l.io, 20ms);  // the refusal and the close arrive together on loopback
    if (mode == transient::shed_mode::reset) {
      char byte = 0;
      EXPECT_EQ(::recv(second.get(), &byte, 1, MSG_DONTWAIT), -1);
      EXPECT_EQ(errno, ECONNRESET);
    }
    const std::string answer = read_some(second.get(), 1ms);
    EXPECT_EQ(l.calls, 1) << "the shed client reached the handler";
    if (mode == transient::shed_mode::respond) {
      EXPECT_EQ(answer, "no");
      EXPECT_EQ(refused, 1);
    } else {
      EXPECT_EQ(answer, "");
      EXPECT_EQ(refused, 0);
    }
    l.cancel.emit(l.acceptor);
    ASSERT_TRUE(run_until(l.io, [&] { return l.outcome.done; }));
    EXPECT_FALSE(l.outcome.error);
    EXPECT_EQ(l.outcome.report.metrics.shed[static_cast<std::size_t>(transient::shed_reason::budget)], 1U);
  }
}

TEST(AsioAdapter, AcceptorThatDoesNotListenFailsWithNotListeningAndADiagnosis) {
  net::io_context io;
  tcp::acceptor acceptor(io);
  acceptor.open(tcp::v4());
  acceptor.bind(tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));  // no listen()
  loop_outcome outcome;
  tasio::async_accept_loop(
      acceptor, [](tasio::accepted_socket) { ADD_FAILURE() << "accepted"; }, quiet_options(), completion_into(outcome));
  ASSERT_TRUE(run_until(io, [&] { return outcome.done; }));
  EXPECT_EQ(outcome.error, transient::condition::not_listening) << outcome.error.message();
  EXPECT_NE(outcome.report.diagnosis.find("not listening"), std::string::npos) << outcome.report.diagnosis;
}

TEST(AsioAdapter, ClosedAcceptorIsAProgrammingError) {
  net::io_context io;
  tcp::acceptor acceptor(io);
  loop_outcome outcome;
  tasio::async_accept_loop(
      acceptor, [](tasio::accepted_socket) {}, quiet_options(), completion_into(outcome));
  EXPECT_FALSE(outcome.done) << "completed inside the initiating function";
  ASSERT_TRUE(run_until(io, [&] { return outcome.done; }));
  EXPECT_EQ(outcome.error, transient::condition::programming_error) << outcome.error.message();
}

#if TRANSIENT_TEST_HAS_CO_AWAIT
TEST(AsioAdapter, HandlerExceptionStopsTheLoopAndTheCoroutineRethrowsIt) {
  net::io_context io;
  auto acceptor = loopback_acceptor(io);
  const auto where = address_of(acceptor);
  bool finished = false;
  std::exception_ptr thrown;
  net::co_spawn(
      io,
      tasio::accept_loop(
          acceptor, [](tasio::accepted_socket) { throw std::runtime_error("handler failed"); }, quiet_options()),
      [&](std::exception_ptr e, tasio::loop_report) {
        finished = true;
        thrown = e;
      });
  const auto client = connect_to(where);
  ASSERT_TRUE(run_until(io, [&] { return finished; }));
  ASSERT_TRUE(thrown);
  EXPECT_THROW(std::rethrow_exception(thrown), std::runtime_error);
  EXPECT_TRUE(closed_by_peer(client.get(), 1s)) << "the socket the handler dropped stays open";
}
#endif

#if TRANSIENT_TEST_HAS_CO_AWAIT
TEST(AsioAdapter, CoroutineFormThrowsTheFailureWithItsDiagnosis) {
  net::io_context io;
  tcp::acceptor acceptor(io);
  acceptor.open(tcp::v4());
  acceptor.bind(tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));  // no listen()
  std::exception_ptr thrown;
  std::error_code ec_form;
  bool finished = false;
  net::co_spawn(io,
                tasio::accept_loop(
                    acceptor, [](tasio::accepted_socket) {}, quiet_options()),
                [&](std::exception_ptr e, tasio::loop_report) { thrown = e; });
  net::co_spawn(io,
                tasio::accept_loop(
                    acceptor, [](tasio::accepted_socket) {}, quiet_options(), ec_form),
                [&](std::exception_ptr e, tasio::loop_report r) {
                  finished = true;
                  EXPECT_FALSE(e);
                  EXPECT_FALSE(r.diagnosis.empty());
                });
  ASSERT_TRUE(run_until(io, [&] { return thrown && finished; }));
  try {
    std::rethrow_exception(thrown);
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), transient::condition::not_listening);
    EXPECT_NE(std::string(e.what()).find("not listening"), std::string::npos) << e.what();
  }
  EXPECT_EQ(ec_form, transient::condition::not_listening);
}
#endif

TEST(AsioAdapter, RejectsBadConfigurationAtOnce) {
  net::io_context io;
  auto acceptor = loopback_acceptor(io);
  loop_outcome outcome;
  auto respond_without_writer = quiet_options();
  respond_without_writer.policy.shed = transient::shed_mode::respond;
  EXPECT_THROW(tasio::async_accept_loop(
                   acceptor, [](tasio::accepted_socket) {}, respond_without_writer, completion_into(outcome)),
               std::system_error);
  auto zero_burst = quiet_options();
  zero_burst.policy.accepts_per_ready = 0;
  EXPECT_THROW(tasio::async_accept_loop(
                   acceptor, [](tasio::accepted_socket) {}, zero_burst, completion_into(outcome)),
               std::system_error);
  EXPECT_FALSE(outcome.done);
}

TEST(AsioAdapter, AcceptedSocketsAreCloseOnExec) {
  net::io_context io;
  auto acceptor = loopback_acceptor(io);
  std::deque<tasio::accepted_socket> held;
  int calls = 0;
  loop_outcome outcome;
  tasio::async_accept_loop(acceptor, keeper{&held, &calls}, quiet_options(), completion_into(outcome));
  const auto client = connect_to(address_of(acceptor));
  ASSERT_TRUE(run_until(io, [&] { return calls == 1; }));
  EXPECT_EQ(::fcntl(held.front().socket.native_handle(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  acceptor.close();
  ASSERT_TRUE(run_until(io, [&] { return outcome.done; }));
}

// The driver kit's rule, as in the epoll server: a refusal writer that throws costs that one
// client only. It is shed (closed) anyway, counted, and the loop goes on.
TEST(AsioAdapter, AThrowingRefusalWriterShedsTheClientAndTheLoopGoesOn) {
  keeping_loop l;
  auto options = quiet_options(1);
  options.policy.shed = transient::shed_mode::respond;
  options.refuse = [](tcp::socket&, const tcp::endpoint&) { throw std::runtime_error("no refusal today"); };
  l.start(options);
  transient::unique_fd first;
  transient::unique_fd second;
  ASSERT_NO_FATAL_FAILURE(l.connect_over_the_budget(first, second));  // end of stream: the loop shed it
  EXPECT_FALSE(l.outcome.done) << "the loop still runs";
  l.held.clear();
  // The accept in flight was decided (shed) while the budget was full: it sheds the next
  // client; the one after is served.
  const auto third = connect_to(l.where);
  const auto fourth = connect_to(l.where);
  EXPECT_TRUE(run_until(l.io, [&] { return l.calls == 2; })) << "the loop still serves";
  l.cancel.emit(l.acceptor);
  ASSERT_TRUE(run_until(l.io, [&] { return l.outcome.done; }));
  EXPECT_FALSE(l.outcome.error);
  EXPECT_EQ(l.outcome.report.metrics.refusals_failed, 2U);
  EXPECT_EQ(l.outcome.report.metrics.shed[static_cast<std::size_t>(transient::shed_reason::budget)], 2U);
}

// The bound on the wait in the accept queue (max_queue_wait): with a budget of one held, three
// clients wait 400 ms in the queue behind a bound of 200 ms and are reset when the place comes
// free; a client arriving afterwards is served; one that waited 40 ms is served with its wait.
// The sleeps are the waits under test.
TEST(AsioAdapter, StaleClientsAreShedAndFreshOnesServedWithTheirWait) {
  keeping_loop l;
  tasio::loop_options options = quiet_options(1);
  options.policy.max_queue_wait = 200ms;
  options.policy.stale_shed = transient::shed_mode::reset;
  l.start(options);
  const transient::unique_fd holder = connect_to(l.where);
  ASSERT_TRUE(run_until(l.io, [&] { return l.calls == 1; }));
  std::vector<transient::unique_fd> stale;
  for (int i = 0; i < 3; ++i) {
    stale.push_back(connect_to(l.where));
  }
  std::this_thread::sleep_for(400ms);
  l.held.pop_front();  // the place comes free
  const auto readable = [](const transient::unique_fd& fd) {
    pollfd p{fd.get(), POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
  };
  ASSERT_TRUE(run_until(l.io, [&] { return std::all_of(stale.begin(), stale.end(), readable); }));
  for (const transient::unique_fd& client : stale) {
    char byte = 0;
    EXPECT_EQ(::recv(client.get(), &byte, 1, MSG_DONTWAIT), -1);
    EXPECT_EQ(errno, ECONNRESET) << "a client that waited over the bound is reset";
  }
  const transient::unique_fd fresh = connect_to(l.where);
  ASSERT_TRUE(run_until(l.io, [&] { return l.calls == 2; })) << "a client arriving afterwards is served";
  const transient::unique_fd waiting = connect_to(l.where);
  std::this_thread::sleep_for(40ms);  // a wait under the bound
  l.held.pop_front();
  ASSERT_TRUE(run_until(l.io, [&] { return l.calls == 3; }));
  EXPECT_GE(l.held.back().queue_wait, 40ms) << "the served socket carries at least what it waited";
  EXPECT_LT(l.held.back().queue_wait, 200ms);
  l.cancel.emit(l.acceptor);
  ASSERT_TRUE(run_until(l.io, [&] { return l.outcome.done; }));
  const transient::policy_metrics& m = l.outcome.report.metrics;
  EXPECT_EQ(m.shed[static_cast<std::size_t>(transient::shed_reason::queue_wait)], 3U);
  EXPECT_EQ(m.accepted, 3U);
  EXPECT_EQ(m.queue_wait_count, 6U);
  EXPECT_GE(m.queue_wait_sum, 3 * 400ms + 40ms);
}

}  // namespace
