// The loop handler's contract (transient/drivers/server.hpp), written once and run on each engine: a
// test file instantiates LoopHandlerCases with its server type.
#pragma once

#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/checking_echo.hpp"
#include "support/loopback.hpp"
#include "transient/drivers/server.hpp"
#include "transient/sockets/listener.hpp"

namespace transient::test {

/// A server of `Server` type on 127.0.0.1 with checking_echo handlers, run on a thread.
template <typename Server>
struct running_server {
  loop_record record;
  std::unique_ptr<Server> server;
  endpoint at;
  std::future<void> done;

  explicit running_server(unsigned threads, const std::function<void(loop_record&)>& setup = {}) {
    if (setup) {
      setup(record);
    }
    server_options options;
    options.threads = threads;
    std::vector<listener> listeners;
    listeners.push_back(listen(endpoint::loopback_v4(0)));
    server = std::make_unique<Server>(
        std::move(listeners), [this](loop& l) { return std::make_unique<checking_echo>(l, record); }, options);
    at = server->local_endpoints().front();
    done = std::async(std::launch::async, [this] { server->run(); });
  }
  ~running_server() {
    server->stop();
    if (done.valid()) {
      done.wait();
    }
  }
  running_server(const running_server&) = delete;
  running_server& operator=(const running_server&) = delete;

  /// True if run() returned within `limit`.
  bool returns_within(std::chrono::milliseconds limit) { return done.wait_for(limit) == std::future_status::ready; }
  /// Waits (bounded) until `n` connections were handed to handlers.
  bool accepted(int n) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (record.accepted.load() < n && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return record.accepted.load() >= n;
  }
};

/// Whether the engine of `Server` works here (a test file of an engine that may be missing
/// specializes it).
template <typename Server>
struct engine {
  static bool available(std::string& /*why*/) { return true; }
};

/// Twenty rounds of two clients whose input arrives together; each must see its connection
/// closed (the handler closes both at the first input).
template <typename Server>
void send_in_pairs(running_server<Server>& s) {
  for (int round = 0; round < 20; ++round) {
    const unique_fd a = connect_to(s.at);
    const unique_fd b = connect_to(s.at);
    ASSERT_TRUE(s.accepted(2 * (round + 1)));
    ASSERT_TRUE(send_text(a.get(), "1"));
    ASSERT_TRUE(send_text(b.get(), "2"));
    EXPECT_TRUE(closed_by_peer(a.get(), std::chrono::seconds(2)));
    EXPECT_TRUE(closed_by_peer(b.get(), std::chrono::seconds(2)));
  }
}

template <typename Server>
class LoopHandlerCases : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why; !engine<Server>::available(why)) {
      GTEST_SKIP() << "engine unavailable: " << why;
    }
  }
};
TYPED_TEST_SUITE_P(LoopHandlerCases);

TYPED_TEST_P(LoopHandlerCases, EachConnectionIsServedOnTheThreadOfTheLoopThatAcceptedIt) {
  running_server<TypeParam> s(2);
  std::vector<unique_fd> clients;
  for (int i = 0; i < 8; ++i) {
    clients.push_back(connect_to(s.at));
    ASSERT_TRUE(send_text(clients.back().get(), "ping" + std::to_string(i)));
  }
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(read_at_least(clients[static_cast<std::size_t>(i)].get(), 5), "ping" + std::to_string(i));
  }
  s.server->stop();
  ASSERT_TRUE(s.returns_within(std::chrono::seconds(3)));
  EXPECT_EQ(s.record.handlers.load(), 2);
  EXPECT_EQ(s.record.accepting_ended.load(), 2);
  EXPECT_EQ(s.record.wrong_thread.load(), 0);
  for (const unique_fd& c : clients) {
    EXPECT_TRUE(closed_by_peer(c.get(), std::chrono::seconds(2))) << "the handler closed it at the stop";
  }
}

TYPED_TEST_P(LoopHandlerCases, AfterTheStopALoopRunsUntilItsHandlerWatchesNothing) {
  running_server<TypeParam> s(1, [](loop_record& r) { r.keep_after_stop = true; });
  const unique_fd c = connect_to(s.at);
  ASSERT_TRUE(send_text(c.get(), "a"));
  ASSERT_EQ(read_at_least(c.get(), 1), "a");
  s.server->stop();
  EXPECT_FALSE(s.returns_within(std::chrono::milliseconds(300))) << "run() returned with a connection held";
  EXPECT_EQ(s.record.accepting_ended.load(), 1);
  EXPECT_FALSE(connect_to(s.at)) << "the listener closed at the stop";
  ASSERT_TRUE(send_text(c.get(), "b"));  // served during the drain
  EXPECT_EQ(read_at_least(c.get(), 1), "b");
  ::shutdown(c.get(), SHUT_WR);  // its end: the handler closes it and watches nothing
  EXPECT_TRUE(s.returns_within(std::chrono::seconds(3)));
}

TYPED_TEST_P(LoopHandlerCases, AHandlerExceptionStopsTheServerAndRunRethrowsIt) {
  loop_record record;
  record.throw_on_input = true;
  server_options options;
  options.threads = 2;
  std::vector<listener> listeners;
  listeners.push_back(listen(endpoint::loopback_v4(0)));
  TypeParam server(
      std::move(listeners), [&record](loop& l) { return std::make_unique<checking_echo>(l, record); }, options);
  auto run = std::async(std::launch::async, [&server] { server.run(); });
  const unique_fd c = connect_to(server.local_endpoints().front());
  ASSERT_TRUE(send_text(c.get(), "x"));
  ASSERT_EQ(run.wait_for(std::chrono::seconds(3)), std::future_status::ready);
  EXPECT_THROW(run.get(), std::runtime_error);
  EXPECT_EQ(record.accepting_ended.load(), 1) << "the other loop was told, the failed one went at once";
  EXPECT_TRUE(closed_by_peer(c.get(), std::chrono::seconds(2)));
}

// Two clients' input arrives together; the first event closes both connections: the second
// event, returned by the same wait, must not reach the handler.
TYPED_TEST_P(LoopHandlerCases, NoEventReachesAWatcherAfterItsDescriptorIsUnwatched) {
  running_server<TypeParam> s(1, [](loop_record& r) { r.close_all_on_input = true; });
  send_in_pairs(s);
  EXPECT_EQ(s.record.unwatched_events.load(), 0);
}

// The same with forget() and the close: no event of a closed descriptor reaches its watcher.
TYPED_TEST_P(LoopHandlerCases, NoEventReachesAWatcherAfterItsDescriptorIsForgotten) {
  running_server<TypeParam> s(1, [](loop_record& r) {
    r.close_all_on_input = true;
    r.forget_on_close = true;
  });
  send_in_pairs(s);
  EXPECT_EQ(s.record.unwatched_events.load(), 0);
  s.server->stop();
  EXPECT_TRUE(s.returns_within(std::chrono::seconds(3))) << "a forgotten descriptor is no longer counted as watched";
}

TYPED_TEST_P(LoopHandlerCases, TheHandlersTimerRunsWhenDueWithoutAnyEvent) {
  running_server<TypeParam> s(1, [](loop_record& r) { r.timer = std::chrono::milliseconds(150); });
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (s.record.timers.load() == 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(s.record.timers.load(), 1);
}

REGISTER_TYPED_TEST_SUITE_P(LoopHandlerCases, EachConnectionIsServedOnTheThreadOfTheLoopThatAcceptedIt,
                            AfterTheStopALoopRunsUntilItsHandlerWatchesNothing,
                            AHandlerExceptionStopsTheServerAndRunRethrowsIt,
                            NoEventReachesAWatcherAfterItsDescriptorIsUnwatched,
                            NoEventReachesAWatcherAfterItsDescriptorIsForgotten,
                            TheHandlersTimerRunsWhenDueWithoutAnyEvent);

}  // namespace transient::test
