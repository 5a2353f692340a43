// transient::uring_acceptor in a user's epoll set, beside a transient::acceptor: one loop
// passes every event to both through the same handle(event, now), as the server's loops do.
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

}  // namespace
