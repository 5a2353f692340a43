// A stopping io_uring acceptor looks at the backlog once more after its cancelled request's
// last completion (uring_acceptor.cpp, sweep()): a client there is served while the stopped
// policy has a place for it. An accept request is an exclusive waiter on the listener, so a
// client whose wake-up went to a request that a cancel then reached waits unseen by every
// other request armed on the socket (a successor's, after an upgrade in place); the kernel
// will not show that race on demand, so the test leaves a client in the backlog the way a
// pause does, and stops the acceptor before it hears of the release.
// ctest-labels: threads
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/loopback.hpp"
#include "transient/drivers/uring.hpp"
#include "transient/sockets/listen_queue.hpp"

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

struct stopping_with_a_client_queued {
  // Shared with the test, so that the socket outlives the acceptor's stop (as a successor's copy does).
  std::shared_ptr<const transient::listener> socket =
      std::make_shared<const transient::listener>(transient::listen(transient::endpoint::loopback_v4(0)));
  std::vector<transient::connection> held;
  std::optional<transient::uring_acceptor> acceptor;
  transient::unique_fd first;
  transient::unique_fd queued;

  // Serves a first client, which fills a budget of one (the acceptor pauses: no request in
  // the ring), and leaves a second one in the backlog.
  void start() {
    transient::acceptor_options options;
    options.max_connections = 1;
    acceptor.emplace(
        socket,
        [this](transient::connection c) {
          ::send(c.native_handle(), "k", 1, MSG_NOSIGNAL);
          held.push_back(std::move(c));
        },
        options);
    first = transient::test::connect_to(acceptor->local_endpoint());
    for (const auto until = clock_type::now() + 3s; held.empty() && clock_type::now() < until;) {
      acceptor->wait(10ms);
    }
    ASSERT_EQ(held.size(), 1U);
    acceptor->wait(10ms);
    ASSERT_FALSE(acceptor->armed()) << "paused at the budget";
    queued = transient::test::connect_to(acceptor->local_endpoint());
  }
};

TEST(UringStopSweep, AClientLeftInTheBacklogIsServedByACleanStopWithAPlaceFree) {
  if (std::string why; !transient::uring_available(why)) {
    GTEST_SKIP() << "io_uring unavailable: " << why;
  }
  stopping_with_a_client_queued s;
  s.start();
  s.held.clear();      // the place comes back; the acceptor has not heard of it yet
  s.acceptor->stop();  // ... and the stop comes first
  s.acceptor->wait(100ms);
  ASSERT_TRUE(s.acceptor->done());
  EXPECT_TRUE(s.acceptor->result().ok());
  EXPECT_EQ(s.held.size(), 1U) << "the queued client was left in the backlog";
  EXPECT_EQ(transient::test::read_some(s.queued.get(), 1s), "k");
}

TEST(UringStopSweep, AStopWithNoPlaceFreeLeavesTheBacklogToTheNextHolder) {
  if (std::string why; !transient::uring_available(why)) {
    GTEST_SKIP() << "io_uring unavailable: " << why;
  }
  stopping_with_a_client_queued s;
  s.start();
  s.acceptor->stop();  // the first client still holds the only place
  s.acceptor->wait(100ms);
  ASSERT_TRUE(s.acceptor->done());
  EXPECT_EQ(s.held.size(), 1U);
  EXPECT_EQ(transient::queue_of(s.socket->native_handle()).length, 1U) << "taken from the backlog only to be shed";
}

}  // namespace
