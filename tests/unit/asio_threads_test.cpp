// ctest-labels: threads
// The Asio adapter on an io_context run by four threads: two loops (two acceptors) share a
// small budget, permits are released on three other threads, clients connect from two
// more, and the loops are cancelled from outside. Run under TSan by the threads preset.
#include "support/asio_warnings.hpp"  // first: before any Asio header

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "asio_support.hpp"
#include "support/loopback.hpp"

namespace {

using namespace std::chrono_literals;
namespace tasio = transient::test::adapter;
namespace net = transient::test::net;
using tcp = net::ip::tcp;

// Accepted sockets waiting to be let go by the releasing threads.
struct release_queue {
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<tasio::accepted_socket> queue;
  bool closing = false;

  void push(tasio::accepted_socket c) {
    {
      const std::lock_guard lock(mutex);
      queue.push_back(std::move(c));
    }
    ready.notify_one();
  }
  // Destroys queued sockets (closing them, then releasing their permits) on this thread.
  void drain() {
    std::unique_lock lock(mutex);
    for (;;) {
      ready.wait_for(lock, 50ms, [&] { return closing || !queue.empty(); });
      if (queue.empty()) {
        if (closing) {
          return;
        }
        continue;
      }
      tasio::accepted_socket c = std::move(queue.front());
      queue.pop_front();
      lock.unlock();
      std::this_thread::sleep_for(100us);  // hold the connection a little: the budget fills
      { const tasio::accepted_socket gone = std::move(c); }
      lock.lock();
    }
  }
};

TEST(AsioThreads, TwoLoopsOnFourThreadsShareOneBudgetReleasedFromOtherThreads) {
  constexpr int per_client_thread = 150;
  net::io_context io;
  tcp::acceptor first(net::make_strand(io), tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  tcp::acceptor second(net::make_strand(io), tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  const auto where_first = transient::test::address_of(first);
  const auto where_second = transient::test::address_of(second);
  auto budget = tasio::shared_budget::create(6);
  release_queue released;
  std::atomic<int> handled{0};
  std::atomic<int> finished{0};
  std::atomic<int> errors{0};
  transient::test::stop_signal cancel_first;
  transient::test::stop_signal cancel_second;

  tasio::loop_options options;
  options.budget = budget;
  options.policy.sink = [](const transient::policy_event&) {};
  options.socket_executor = [&io] { return net::make_strand(io); };
  auto handler = [&](tasio::accepted_socket c) {
    EXPECT_LE(budget->budget().live(), 6U);
    handled.fetch_add(1);  // before the answer: the client may check the count once it has it
    transient::test::net_error_code ec;
    net::write(c.socket, net::buffer("hi", 2), ec);
    released.push(std::move(c));
  };
  auto completion = [&](std::error_code ec, tasio::loop_report) {
    errors.fetch_add(ec ? 1 : 0);
    finished.fetch_add(1);
  };
  tasio::async_accept_loop(first, handler, options, cancel_first.bind(completion));
  tasio::async_accept_loop(second, handler, options, cancel_second.bind(completion));

  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] { io.run_for(30s); });
  }
  std::vector<std::thread> releasers;
  for (int i = 0; i < 3; ++i) {
    releasers.emplace_back([&] { released.drain(); });
  }
  std::atomic<int> answered{0};
  std::vector<std::thread> clients;
  for (const auto& where : {where_first, where_second}) {
    clients.emplace_back([&, where] {
      for (int i = 0; i < per_client_thread; ++i) {
        const auto client = transient::test::connect_to(where);
        if (client && transient::test::read_some(client.get(), 5s) == "hi") {
          answered.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : clients) {
    t.join();
  }
  EXPECT_EQ(answered.load(), 2 * per_client_thread);
  EXPECT_EQ(handled.load(), 2 * per_client_thread);
  EXPECT_LE(budget->budget().peak(), 6U);

  // Cancel through each acceptor's strand, where the loops' slots are used.
  net::post(first.get_executor(), [&] { cancel_first.emit(first); });
  net::post(second.get_executor(), [&] { cancel_second.emit(second); });
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (finished.load() < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(finished.load(), 2);
  EXPECT_EQ(errors.load(), 0);
  {
    const std::lock_guard lock(released.mutex);
    released.closing = true;
  }
  released.ready.notify_all();
  for (auto& t : releasers) {
    t.join();
  }
  EXPECT_EQ(budget->budget().live(), 0U);
  for (auto& t : threads) {
    t.join();  // the loops left no work behind: run_for returns before its 30 s
  }
}

}  // namespace
