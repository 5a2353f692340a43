// basic_server::accept_queues() (transient/drivers/server.hpp), written once and run on each
// engine: a test file instantiates AcceptQueueCases with its server type.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/loopback.hpp"
#include "transient/drivers/server.hpp"
#include "transient/sockets/listen_queue.hpp"
#include "transient/sockets/listener.hpp"

namespace transient::test {

/// Whether the engine of `Server` works here (a test file of an engine that may be missing
/// specializes it).
template <typename Server>
struct accept_queue_engine {
  static bool available(std::string& /*why*/) { return true; }
};

/// A listener on 127.0.0.1 whose accept queue holds `backlog`.
inline listener listener_with_backlog(int backlog) {
  listen_options options;
  options.backlog = backlog;
  return listen(endpoint::loopback_v4(0), options);
}

/// A server of `Server` type on one listener of backlog 8, run on a thread, whose handler
/// keeps every connection until the test ends.
template <typename Server>
struct queue_server {
  std::mutex mutex;
  std::deque<connection> held;  // guarded by mutex
  std::unique_ptr<Server> server;
  endpoint at;
  std::future<stop_info> result;

  explicit queue_server(std::uint64_t budget) {
    server_options options;
    options.max_connections = budget;
    std::vector<listener> listeners;
    listeners.push_back(listener_with_backlog(8));
    server = std::make_unique<Server>(
        std::move(listeners), [this](connection c) { keep(std::move(c)); }, options);
    at = server->local_endpoints().front();
  }
  ~queue_server() {
    server->stop();
    if (result.valid()) {
      result.wait();
    }
  }
  queue_server(const queue_server&) = delete;
  queue_server& operator=(const queue_server&) = delete;

  void start() {
    result = std::async(std::launch::async, [this] {
      std::error_code ec;
      return server->run(ec);
    });
  }
  void keep(connection c) {
    const std::lock_guard lock(mutex);
    held.push_back(std::move(c));
  }
  std::size_t kept() {
    const std::lock_guard lock(mutex);
    return held.size();
  }
  /// The queue of the one listener.
  std::optional<listen_queue> queue() const {
    const std::vector<std::optional<listen_queue>> queues = server->accept_queues();
    EXPECT_EQ(queues.size(), 1U);
    return queues.empty() ? std::nullopt : queues.front();
  }
};

/// Polls `what` every millisecond for up to 5 s.
template <typename Predicate>
bool within_5s(Predicate what) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!what()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

template <typename Server>
class AcceptQueueCases : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why; !accept_queue_engine<Server>::available(why)) {
      GTEST_SKIP() << "engine unavailable: " << why;
    }
  }
};
TYPED_TEST_SUITE_P(AcceptQueueCases);

TYPED_TEST_P(AcceptQueueCases, ClientsBeyondTheBudgetShowInTheQueueUntilTheServerLetsGo) {
  queue_server<TypeParam> s(1);
  EXPECT_EQ(s.queue(), (listen_queue{0, 8})) << "readable before run()";
  s.start();
  std::vector<unique_fd> clients;
  clients.push_back(connect_to(s.at));
  ASSERT_TRUE(within_5s([&] { return s.kept() == 1; }));
  for (int i = 0; i < 3; ++i) {
    clients.push_back(connect_to(s.at));
    ASSERT_TRUE(clients.back());
  }
  EXPECT_TRUE(within_5s([&] { return s.queue() == listen_queue{3, 8}; })) << "3 clients wait behind the budget of 1";
  s.server->stop();
  ASSERT_EQ(s.result.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_FALSE(s.queue()) << "the server has let go of its listener";
  EXPECT_FALSE(connect_to(s.at)) << "and nothing keeps the socket listening";
}

// A reading that meets a descriptor the server closed, and the test's churn reopened as a
// listener of backlog 3, shows limit 3; one that meets it closed finds nothing, and any value
// after that is another socket's.
TYPED_TEST_P(AcceptQueueCases, ReadingsDuringTheStopNeverMeetAnotherSocket) {
  queue_server<TypeParam> s(0);
  s.start();
  std::atomic<bool> finished{false};
  std::atomic<int> readings{0};
  std::atomic<int> foreign{0};  // readings of another socket, or of one after the let go
  // Enough listeners at a time to take the lower free numbers too.
  std::thread churn([&] {
    while (!finished.load()) {
      std::vector<listener> others;
      for (int i = 0; i < 32; ++i) {
        others.push_back(listener_with_backlog(3));
      }
    }
  });
  std::thread reader([&] {
    bool let_go = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!finished.load() && std::chrono::steady_clock::now() < deadline) {
      const std::optional<listen_queue> q = s.queue();
      foreign.fetch_add(q && (let_go || q->limit != 8U) ? 1 : 0);
      let_go = let_go || !q;
      readings.fetch_add(1);
    }
  });
  ASSERT_TRUE(within_5s([&] { return readings.load() > 100; }));
  s.server->stop();
  EXPECT_EQ(s.result.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  const int after = readings.load();
  EXPECT_TRUE(within_5s([&] { return readings.load() > after + 1000; }));
  finished.store(true);
  reader.join();
  churn.join();
  EXPECT_EQ(foreign.load(), 0) << "of " << readings.load() << " readings";
  EXPECT_FALSE(s.queue());
}

REGISTER_TYPED_TEST_SUITE_P(AcceptQueueCases, ClientsBeyondTheBudgetShowInTheQueueUntilTheServerLetsGo,
                            ReadingsDuringTheStopNeverMeetAnotherSocket);

}  // namespace transient::test
