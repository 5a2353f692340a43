// The bound on the wait in the accept queue (accept_policy_config::max_queue_wait) on real
// loopback sockets, for any server (the epoll server, the io_uring server): a budget of one,
// held by one client while others wait in the kernel's queue; when the place comes free, those
// that waited too long are shed (reset) and a fresh one is served, with its wait measured.
// Every wait is bounded; the sleeps are the waits under test, not synchronisation.
#pragma once

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "support/loopback.hpp"
#include "transient/drivers/server.hpp"
#include "transient/testing/syscalls.hpp"

namespace transient::test {

/// Makes the server under test over `listeners`, sending each connection to `handler`.
using server_maker = std::function<std::unique_ptr<basic_server>(std::vector<listener> listeners,
                                                                 connection_handler handler, server_options options)>;

/// Connections a handler keeps, each greeted with "a" so that its client sees it was served.
struct kept_connections {
  std::mutex mutex;
  std::deque<connection> held;

  void keep(connection c) {
    const std::lock_guard lock(mutex);  // kept before the client hears it was served
    held.push_back(std::move(c));
    ::send(held.back().native_handle(), "a", 1, MSG_NOSIGNAL);
  }
  std::size_t size() {
    const std::lock_guard lock(mutex);
    return held.size();
  }
  /// The queue_wait() of the connection kept `i`-th.
  std::chrono::milliseconds wait_of(std::size_t i) {
    const std::lock_guard lock(mutex);
    return held.at(i).queue_wait();
  }
  /// Closes the connection kept `i`-th, which releases its place.
  void release(std::size_t i) {
    const std::lock_guard lock(mutex);
    held.at(i).close();
  }
};

/// A server of `make` running on a thread; stopped and joined when it goes.
struct running {
  std::unique_ptr<basic_server> srv;
  std::future<stop_info> result;

  explicit running(std::unique_ptr<basic_server> s) : srv(std::move(s)) {
    result = std::async(std::launch::async, [this] {
      std::error_code ec;
      return srv->run(ec);
    });
  }
  running(const running&) = delete;
  running& operator=(const running&) = delete;
  ~running() {
    srv->stop();
    result.wait();
  }
};

/// True if `fd` reads "a" (served) within a deadline.
inline bool served(int fd) { return read_some(fd, std::chrono::seconds(5)) == "a"; }

/// True if the connection on `fd` is reset by the server within a deadline (the client sees
/// ECONNRESET), without having been served first.
inline bool reset_by_server(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 5000) <= 0) {
    return false;
  }
  char byte = 0;
  return ::recv(fd, &byte, 1, MSG_DONTWAIT) < 0 && errno == ECONNRESET;
}

/// Waits (bounded) until `done` holds.
inline bool eventually(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

/// The settings of the scenario: a budget of one, the wait bounded by `max_queue_wait`, stale
/// clients reset, through the seam `sys` if given.
inline server_options bounded_wait(std::chrono::milliseconds max_queue_wait, const syscalls* sys = nullptr) {
  server_options options;
  options.max_connections = 1;
  options.policy.max_queue_wait = max_queue_wait;
  options.policy.stale_shed = shed_mode::reset;
  options.policy.sink = [](const policy_event&) {};
  options.sys = sys;
  return options;
}

/// The scenario (see the file comment) on the server `make` builds: three clients wait 400 ms
/// behind a held place with a bound of 200 ms and are reset when it comes free; a client
/// arriving afterwards is served; one that waited 40 ms behind it is served with that wait.
inline void stale_clients_are_shed_and_fresh_ones_served(const server_maker& make) {
  using namespace std::chrono_literals;
  kept_connections kept;
  std::vector<listener> listeners;
  listeners.push_back(listen(endpoint::loopback_v4(0)));
  const endpoint where = listeners.front().local_endpoint();
  const running server(make(
      std::move(listeners), [&](connection c) { kept.keep(std::move(c)); }, bounded_wait(200ms)));

  const unique_fd holder = connect_to(where);
  ASSERT_TRUE(holder && served(holder.get()));
  std::vector<unique_fd> stale;
  for (int i = 0; i < 3; ++i) {
    stale.push_back(connect_to(where));
    ASSERT_TRUE(stale.back());
  }
  std::this_thread::sleep_for(400ms);  // the wait under test: twice the bound, in the queue
  kept.release(0);
  for (const unique_fd& client : stale) {
    EXPECT_TRUE(reset_by_server(client.get())) << "a client that waited over the bound is reset";
  }
  const unique_fd fresh = connect_to(where);
  ASSERT_TRUE(fresh && served(fresh.get())) << "a client arriving afterwards is served";
  const unique_fd waiting = connect_to(where);
  ASSERT_TRUE(waiting);
  std::this_thread::sleep_for(40ms);  // a wait under the bound
  kept.release(1);
  ASSERT_TRUE(served(waiting.get()));
  ASSERT_EQ(kept.size(), 3U);
  EXPECT_GE(kept.wait_of(2), 40ms) << "queue_wait() is at least what the client waited";
  EXPECT_LT(kept.wait_of(2), 200ms);

  const auto stale_shed = [&] {
    return server.srv->metrics().shed[static_cast<std::size_t>(shed_reason::queue_wait)] == 3;
  };
  ASSERT_TRUE(eventually([&] { return stale_shed() && server.srv->metrics().queue_wait_count == 6; }))
      << "shed for their wait: " << server.srv->metrics().shed[static_cast<std::size_t>(shed_reason::queue_wait)]
      << ", waits recorded: " << server.srv->metrics().queue_wait_count << "\n"
      << to_prometheus(server.srv->metrics());
  const policy_metrics m = server.srv->metrics();
  EXPECT_EQ(m.accepted, 3U);
  EXPECT_GE(m.queue_wait_sum, 3 * 400ms + 40ms);
  const auto below_quarter_second = m.queue_wait_buckets[0] + m.queue_wait_buckets[1] + m.queue_wait_buckets[2] +
                                    m.queue_wait_buckets[3] + m.queue_wait_buckets[4] + m.queue_wait_buckets[5];
  EXPECT_EQ(below_quarter_second, 3U) << "the holder, the fresh one and the one that waited 40 ms";
  EXPECT_NE(to_prometheus(m).find("transient_shed_total{reason=\"queue_wait\"} 3\n"), std::string::npos);
  EXPECT_NE(to_prometheus(m).find("transient_queue_wait_seconds_count 6\n"), std::string::npos);
}

/// A failed measurement (getsockopt fails) is "unknown": a client that waited over the bound is
/// served, not shed.
inline void a_failed_measurement_never_sheds(const server_maker& make) {
  using namespace std::chrono_literals;
  syscalls sys;
  sys.getsockopt = [](int, int, int, void*, socklen_t*) {
    errno = ENOBUFS;
    return -1;
  };
  kept_connections kept;
  std::vector<listener> listeners;
  listeners.push_back(listen(endpoint::loopback_v4(0)));
  const endpoint where = listeners.front().local_endpoint();
  const running server(make(
      std::move(listeners), [&](connection c) { kept.keep(std::move(c)); }, bounded_wait(100ms, &sys)));
  const unique_fd holder = connect_to(where);
  ASSERT_TRUE(holder && served(holder.get()));
  const unique_fd late = connect_to(where);
  ASSERT_TRUE(late);
  std::this_thread::sleep_for(300ms);  // the wait under test, over the bound
  kept.release(0);
  EXPECT_TRUE(served(late.get())) << "unknown wait: served";
  EXPECT_EQ(server.srv->metrics().shed[static_cast<std::size_t>(shed_reason::queue_wait)], 0U);
}

}  // namespace transient::test
