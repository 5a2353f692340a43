// transient::uring_acceptor in a user's epoll set, beside a transient::acceptor: one loop
// passes every event to both through the same handle(event, now), as the server's loops do,
// and both hand connections to a loop handler once it is set, as the server's loops have them.
// ctest-labels: threads
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <string>

#include "support/loopback.hpp"
#include "transient/drivers/acceptor.hpp"
#include "transient/drivers/server.hpp"
#include "transient/drivers/uring.hpp"

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

TEST(UringAcceptorShape, OneLoopPassesEveryEventToBothAcceptorsThroughTheSameHandle) {
  if (std::string why; !transient::uring_available(why)) {
    GTEST_SKIP() << "io_uring unavailable: " << why;
  }
  const transient::unique_fd epoll(::epoll_create1(EPOLL_CLOEXEC));
  ASSERT_TRUE(epoll);
  int served = 0;
  const auto greet = [&served](transient::connection c) {
    ::send(c.native_handle(), "k", 1, MSG_NOSIGNAL);
    ++served;
  };
  constexpr std::uint64_t first = std::uint64_t{1} << 32U;
  transient::acceptor by_epoll(epoll.get(), transient::listen(transient::endpoint::loopback_v4(0)), {first, first + 1},
                               greet);
  transient::uring_acceptor by_ring(
      epoll.get(), std::make_shared<const transient::listener>(transient::listen(transient::endpoint::loopback_v4(0))),
      {first + 2, first + 3}, greet);
  const transient::unique_fd a = transient::test::connect_to(by_epoll.local_endpoint());
  const transient::unique_fd b = transient::test::connect_to(by_ring.local_endpoint());
  int foreign = 0;
  std::array<epoll_event, 8> events{};
  for (const auto until = clock_type::now() + 5s; served < 2 && clock_type::now() < until;) {
    const int n = ::epoll_wait(epoll.get(), events.data(), static_cast<int>(events.size()), 50);
    const auto now = clock_type::now();
    for (int i = 0; i < n; ++i) {
      const epoll_event& e = events[static_cast<std::size_t>(i)];
      if (!by_epoll.handle(e, now) && !by_ring.handle(e, now)) {
        ++foreign;
      }
    }
    by_epoll.on_time(now);
    by_ring.on_time(now);
  }
  EXPECT_EQ(served, 2);
  EXPECT_EQ(foreign, 0) << "an event neither acceptor took as its own";
  EXPECT_EQ(transient::test::read_some(a.get(), 1s), "k");
  EXPECT_EQ(transient::test::read_some(b.get(), 1s), "k");
  epoll_event other{};
  other.data.u64 = 7;
  EXPECT_FALSE(by_ring.handle(other, clock_type::now())) << "another tag is not the ring's";
}

// A loop handler that only counts the connections it is given (and closes them).
class counting_handler final : public transient::loop_handler {
 public:
  int connections = 0;
  void on_connection(transient::connection /*c*/) override { ++connections; }
  void on_accepting_end() override {}
};

// Connects a client to `a` and runs a loop over `epoll` until `served()` is true (or 5 s).
template <typename Acceptor, typename Served>
void serve_one(int epoll, Acceptor& a, Served served) {
  const transient::unique_fd client = transient::test::connect_to(a.local_endpoint());
  std::array<epoll_event, 8> events{};
  for (const auto until = clock_type::now() + 5s; !served() && clock_type::now() < until;) {
    const int n = ::epoll_wait(epoll, events.data(), static_cast<int>(events.size()), 50);
    const auto now = clock_type::now();
    for (int i = 0; i < n; ++i) {
      a.handle(events[static_cast<std::size_t>(i)], now);
    }
    a.on_time(now);
  }
}

// With a loop handler set, its on_connection takes each connection and the connection handler
// none; set back to null, the connection handler takes them again.
template <typename Acceptor>
void check_loop_handler(int epoll, Acceptor& a, const int& by_function) {
  counting_handler loop_handler;
  a.set_loop_handler(&loop_handler);
  serve_one(epoll, a, [&] { return loop_handler.connections == 1; });
  EXPECT_EQ(loop_handler.connections, 1);
  EXPECT_EQ(by_function, 0);
  a.set_loop_handler(nullptr);
  serve_one(epoll, a, [&] { return by_function == 1; });
  EXPECT_EQ(by_function, 1);
  EXPECT_EQ(loop_handler.connections, 1);
}

TEST(UringAcceptorShape, AnEpollAcceptorHandsConnectionsToTheLoopHandlerSet) {
  const transient::unique_fd epoll(::epoll_create1(EPOLL_CLOEXEC));
  ASSERT_TRUE(epoll);
  int by_function = 0;
  constexpr std::uint64_t first = std::uint64_t{1} << 32U;
  transient::acceptor a(epoll.get(), transient::listen(transient::endpoint::loopback_v4(0)), {first, first + 1},
                        [&by_function](transient::connection /*c*/) { ++by_function; });
  check_loop_handler(epoll.get(), a, by_function);
}

TEST(UringAcceptorShape, ARingAcceptorHandsConnectionsToTheLoopHandlerSet) {
  if (std::string why; !transient::uring_available(why)) {
    GTEST_SKIP() << "io_uring unavailable: " << why;
  }
  const transient::unique_fd epoll(::epoll_create1(EPOLL_CLOEXEC));
  ASSERT_TRUE(epoll);
  int by_function = 0;
  constexpr std::uint64_t first = std::uint64_t{1} << 32U;
  transient::uring_acceptor a(
      epoll.get(), std::make_shared<const transient::listener>(transient::listen(transient::endpoint::loopback_v4(0))),
      {first, first + 1}, [&by_function](transient::connection /*c*/) { ++by_function; });
  check_loop_handler(epoll.get(), a, by_function);
}

}  // namespace
