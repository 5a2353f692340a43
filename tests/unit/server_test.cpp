// ctest-labels: threads
// The epoll server on real loopback sockets: serving, the budget, stopping, threads.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "support/loopback.hpp"
#include "support/peer_addresses.hpp"
#include "transient/drivers/server.hpp"
#include "transient/policy/budget.hpp"

namespace {

using namespace std::chrono_literals;
using transient::connection;
using transient::test::connect_to;
using transient::test::read_some;

transient::listener loopback_listener() { return transient::listen(transient::parse_endpoint("127.0.0.1:0")); }

// The listeners of a server with one loopback listener; `where` receives its address.
std::vector<transient::listener> one_loopback_listener(transient::endpoint& where) {
  std::vector<transient::listener> out;
  out.push_back(loopback_listener());
  where = out.front().local_endpoint();
  return out;
}

// Connections kept open by a handler, released by the test.
struct held_connections {
  std::mutex mutex;
  std::deque<connection> held;

  void keep(connection c) {
    const std::lock_guard lock(mutex);
    held.push_back(std::move(c));
  }
  // Sends "a" (the client sees it was served), then keeps the connection.
  void greet_and_keep(connection c) {
    ::send(c.native_handle(), "a", 1, MSG_NOSIGNAL);
    keep(std::move(c));
  }
  std::size_t size() {
    const std::lock_guard lock(mutex);
    return held.size();
  }
  void release_one() {
    const std::lock_guard lock(mutex);
    held.pop_front();
  }
};

// Runs a server on a thread; stops it and joins on destruction.
struct running_server {
  transient::server srv;
  std::future<transient::stop_info> result;

  running_server(std::vector<transient::listener> listeners, transient::connection_handler handler,
                 transient::server_options options = {})
      : srv(std::move(listeners), std::move(handler), std::move(options)) {
    result = std::async(std::launch::async, [this] {
      std::error_code ec;
      return srv.run(ec);
    });
  }
  ~running_server() {
    srv.stop();
    if (result.valid()) {
      result.wait();
    }
  }
  transient::stop_info stop_and_wait() {
    srv.stop();
    return result.get();
  }
};

// A server on one loopback listener, with `options`, whose handler keeps every connection
// (greeting it first with "a" when `greet`), running until the end of the scope; `where` is its
// address.
struct keeping_server {
  transient::endpoint where;
  held_connections held;
  running_server s;
  keeping_server(transient::server_options options, bool greet)
      : s(
            one_loopback_listener(where),
            [this, greet](connection c) { greet ? held.greet_and_keep(std::move(c)) : held.keep(std::move(c)); },
            std::move(options)) {}
};

// A server that sends "x" to every client and counts it, on `listeners` with `options`.
struct counting_server {
  std::atomic<int> served{0};
  running_server s;
  counting_server(std::vector<transient::listener> listeners, transient::server_options options)
      : s(
            std::move(listeners),
            [this](connection c) {
              ::send(c.native_handle(), "x", 1, MSG_NOSIGNAL);
              served.fetch_add(1);
            },
            std::move(options)) {}
};

template <typename Predicate>
bool eventually(Predicate p, std::chrono::milliseconds limit = 3s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (p()) {
      return true;
    }
    std::this_thread::sleep_for(1ms);
  }
  return p();
}

TEST(Server, HandsEachConnectionToTheHandler) {
  transient::endpoint where;
  auto ls = one_loopback_listener(where);
  running_server s(std::move(ls), [](connection c) {
    EXPECT_TRUE(c.is_open());
    EXPECT_TRUE(c.peer().is_loopback());
    ASSERT_EQ(::send(c.native_handle(), "hi", 2, MSG_NOSIGNAL), 2);
  });
  for (int i = 0; i < 20; ++i) {
    const auto client = connect_to(where);
    ASSERT_TRUE(client);
    EXPECT_EQ(read_some(client.get(), 2s), "hi");
  }
  EXPECT_TRUE(eventually([&] { return s.srv.metrics().accepted == 20; }));
  const transient::stop_info info = s.stop_and_wait();
  EXPECT_TRUE(info.ok());
  EXPECT_EQ(info.reason, transient::stop_reason::clean);
  EXPECT_EQ(s.srv.budget().live(), 0U);
}

TEST(Server, ReadsPeerAddressesUnlessTurnedOff) {
  transient::test::expect_peer_addresses_read_unless_turned_off<transient::server>();
}

TEST(Server, BudgetLeavesClientsInTheBacklogUntilARelease) {
  transient::server_options options;
  options.max_connections = 2;
  keeping_server k(options, true);
  std::vector<transient::unique_fd> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(connect_to(k.where));
  }
  EXPECT_EQ(read_some(clients[0].get(), 2s), "a");
  EXPECT_EQ(read_some(clients[1].get(), 2s), "a");
  EXPECT_EQ(read_some(clients[2].get(), 200ms), "") << "the third client was served over budget";
  EXPECT_EQ(k.held.size(), 2U);
  EXPECT_TRUE(eventually([&] { return k.s.srv.health().state == transient::health_state::backpressure; }));
  k.held.release_one();  // from this thread: the budget wakes the paused loop
  EXPECT_EQ(read_some(clients[2].get(), 2s), "a");
  EXPECT_TRUE(eventually([&] { return k.held.size() == 2; }));  // the handler sends, then keeps
  EXPECT_TRUE(k.s.stop_and_wait().ok());
}

TEST(Server, StopsPromptlyWhileIdleOrPausedAndLeaksNothing) {
  const int before = transient::test::open_descriptor_count();
  for (const bool paused : {false, true}) {
    transient::endpoint where;
    auto ls = one_loopback_listener(where);
    held_connections held;
    transient::server_options options;
    options.max_connections = 1;
    std::vector<transient::unique_fd> clients;
    {
      running_server s(
          std::move(ls), [&](connection c) { held.keep(std::move(c)); }, options);
      if (paused) {
        clients.push_back(connect_to(where));
        clients.push_back(connect_to(where));
        ASSERT_TRUE(eventually([&] { return s.srv.health().state == transient::health_state::backpressure; }));
      }
      const auto start = std::chrono::steady_clock::now();
      const transient::stop_info info = s.stop_and_wait();
      const auto took = std::chrono::steady_clock::now() - start;
      EXPECT_TRUE(info.ok());
      // The issue asks for <= 10 ms; the benchmark reports the figure. Here a generous bound
      // that still fails if stop() waited for a timer or a client.
      EXPECT_LT(took, 500ms) << (paused ? "paused" : "idle");
    }
    held.held.clear();
    clients.clear();
  }
  EXPECT_EQ(transient::test::open_descriptor_count(), before);
}

TEST(Server, StopFromAnotherThreadBeforeRun) {
  std::vector<transient::listener> ls;
  ls.push_back(loopback_listener());
  transient::server srv(std::move(ls), [](connection) {});
  std::thread stopper([&] { srv.stop(); });
  stopper.join();
  const transient::stop_info info = srv.run();
  EXPECT_EQ(info.reason, transient::stop_reason::clean);
}

TEST(Server, SeveralThreadsShareListenersAndOneBudget) {
  auto a = loopback_listener();
  auto b = loopback_listener();
  const auto where_a = a.local_endpoint();
  const auto where_b = b.local_endpoint();
  std::vector<transient::listener> ls;
  ls.push_back(std::move(a));
  ls.push_back(std::move(b));
  transient::server_options options;
  options.threads = 3;
  options.max_connections = 8;
  counting_server counting(std::move(ls), options);
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        const auto c = connect_to(t % 2 == 0 ? where_a : where_b);
        EXPECT_EQ(read_some(c.get(), 2s), "x");
      }
    });
  }
  for (auto& t : clients) {
    t.join();
  }
  EXPECT_TRUE(eventually([&] { return counting.served.load() == 200; }));  // the handler sends, then counts
  EXPECT_LE(counting.s.srv.budget().peak(), 8U);
  EXPECT_TRUE(counting.s.stop_and_wait().ok());
  EXPECT_EQ(counting.s.srv.metrics().accepted, 200U);
}

TEST(Server, ReusePortShardsGiveEachLoopItsOwnSocket) {
  transient::listen_options reuse;
  reuse.reuse_port = true;
  auto l = transient::listen(transient::parse_endpoint("127.0.0.1:0"), reuse);
  const auto where = l.local_endpoint();
  std::vector<transient::listener> ls;
  ls.push_back(std::move(l));
  transient::server_options options;
  options.threads = 2;
  options.reuse_port_shards = true;
  counting_server counting(std::move(ls), options);
  EXPECT_EQ(transient::who_listens(where.port()).size(), 2U) << "one socket per loop";
  for (int i = 0; i < 50; ++i) {
    const auto c = connect_to(where);
    EXPECT_EQ(read_some(c.get(), 2s), "x");
  }
  EXPECT_TRUE(eventually([&] { return counting.served.load() == 50; }));  // the handler sends, then counts
  EXPECT_EQ(counting.s.srv.local_endpoints().size(), 1U);
  EXPECT_TRUE(counting.s.stop_and_wait().ok());
}

TEST(Server, ReusePortShardsNeedReusePortListeners) {
  std::vector<transient::listener> ls;
  ls.push_back(loopback_listener());
  transient::server_options options;
  options.threads = 2;
  options.reuse_port_shards = true;
  EXPECT_THROW(transient::server(
                   std::move(ls), [](connection) {}, options),
               std::system_error);
}

TEST(Server, HandlerExceptionStopsTheServerAndPropagates) {
  transient::endpoint where;
  auto ls = one_loopback_listener(where);
  transient::server srv(std::move(ls), [](connection) { throw std::runtime_error("handler failed"); });
  std::thread client([&] { const auto c = connect_to(where); });
  EXPECT_THROW(srv.run(), std::runtime_error);
  client.join();
}

TEST(Server, RejectsBadConfiguration) {
  const auto make = [](transient::server_options options, bool with_listener) {
    std::vector<transient::listener> ls;
    if (with_listener) {
      ls.push_back(loopback_listener());
    }
    transient::server srv(
        std::move(ls), [](connection) {}, std::move(options));
  };
  EXPECT_THROW(make({}, false), std::system_error);
  transient::server_options no_threads;
  no_threads.threads = 0;
  EXPECT_THROW(make(no_threads, true), std::system_error);
  transient::server_options respond;
  respond.policy.shed = transient::shed_mode::respond;
  EXPECT_THROW(make(respond, true), std::system_error);
}

TEST(Server, ShedModesRefuseClientsOverBudget) {
  for (const auto mode : {transient::shed_mode::close, transient::shed_mode::reset, transient::shed_mode::respond}) {
    transient::server_options options;
    options.max_connections = 1;
    options.policy.shed = mode;
    options.refuse = [](int fd, const transient::endpoint&) { ::send(fd, "busy", 4, MSG_NOSIGNAL); };
    keeping_server k(options, false);
    const auto first = connect_to(k.where);
    ASSERT_TRUE(eventually([&] { return k.held.size() == 1; }));
    const auto second = connect_to(k.where);
    if (mode == transient::shed_mode::respond) {
      EXPECT_EQ(read_some(second.get(), 2s), "busy");
    }
    EXPECT_TRUE(transient::test::closed_by_peer(second.get(), 2s)) << to_string(mode);
    EXPECT_TRUE(eventually([&] { return k.s.srv.metrics().shed[0] == 1; })) << to_string(mode);
    EXPECT_EQ(k.held.size(), 1U);
  }
}

// The driver kit's rule, the same in every driver: a refusal writer that throws costs that one
// client only. It is shed (closed) anyway, counted, and the server goes on serving.
TEST(Server, AThrowingRefusalWriterShedsTheClientAndTheServerGoesOn) {
  transient::server_options options;
  options.max_connections = 1;
  options.policy.shed = transient::shed_mode::respond;
  options.refuse = [](int, const transient::endpoint&) { throw std::runtime_error("no refusal today"); };
  keeping_server k(options, false);
  const auto first = connect_to(k.where);
  ASSERT_TRUE(eventually([&] { return k.held.size() == 1; }));
  const auto second = connect_to(k.where);
  EXPECT_TRUE(transient::test::closed_by_peer(second.get(), 2s));
  EXPECT_TRUE(eventually([&] { return k.s.srv.metrics().refusals_failed == 1; }));
  EXPECT_EQ(k.s.srv.metrics().shed[0], 1U);
  EXPECT_FALSE(k.s.srv.health().state == transient::health_state::stopped) << "the server still runs";
  k.held.release_one();
  const auto third = connect_to(k.where);
  EXPECT_TRUE(eventually([&] { return k.held.size() == 1; })) << "the server still serves";
}

// The per-peer cap in the driver: a client over it is shed and its place goes back to the
// budget (live counts the held connection only), so a client from another address is served. Kept, the place would
// count against everyone (shed modes) or leave the loop paused at the full budget (queue).
TEST(Server, PerPeerCapShedsAClientAndGivesItsPlaceBack) {
  for (const auto mode : {transient::shed_mode::queue, transient::shed_mode::close}) {
    SCOPED_TRACE(to_string(mode));
    transient::server_options options;
    options.max_connections = 2;
    options.policy.shed = mode;
    options.policy.peers = std::make_shared<transient::peer_limit>(1);
    options.policy.sink = [](const transient::policy_event&) {};
    keeping_server k(options, true);
    const auto first = connect_to(k.where);  // 127.0.0.1
    ASSERT_EQ(read_some(first.get(), 3s), "a");
    const auto second = connect_to(k.where);  // 127.0.0.1 again: over its cap of 1
    ASSERT_TRUE(transient::test::closed_by_peer(second.get(), 3s)) << "not shed";
    // Once the loop waits again, only the held connection counts (queue mode gives back the
    // place it reserved for an accept when the accept finds the backlog empty).
    EXPECT_TRUE(eventually([&] { return k.s.srv.budget().live() == 1; }))
        << "the shed connection kept its place: live " << k.s.srv.budget().live();
    const auto other = transient::test::connect_from(transient::parse_endpoint("127.0.0.2:0"), k.where);
    ASSERT_TRUE(other);
    EXPECT_EQ(read_some(other.get(), 3s), "a") << "the free place did not serve another address";
    EXPECT_EQ(k.s.srv.budget().live(), 2U);
    EXPECT_TRUE(eventually([&] { return k.held.size() == 2; }));  // the handler sends, then keeps
    EXPECT_TRUE(eventually(
        [&] { return k.s.srv.metrics().shed[static_cast<std::size_t>(transient::shed_reason::peer_limit)] == 1; }));
  }
}

}  // namespace
