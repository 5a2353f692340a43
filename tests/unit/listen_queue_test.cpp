// The accept queue read from the kernel (listen_queue.hpp), on real loopback sockets: a
// listener's queue length and limit, a connection's time in the queue, the namespace counters.
#include "transient/sockets/listen_queue.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <thread>
#include <vector>

#include "transient/errors/errors.hpp"
#include "transient/sockets/listener.hpp"

namespace {

using namespace std::chrono_literals;
using transient::endpoint;
using transient::unique_fd;

// A blocking client connected to `at` (the kernel completes the handshake without accept).
unique_fd connect_to(const endpoint& at) {
  unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_storage address{};
  const socklen_t length = at.to_sockaddr(address);
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), length), 0);
  return fd;
}

TEST(ListenQueue, CountsTheConnectionsWaitingAndTheLimit) {
  transient::listen_options options;
  options.backlog = 16;
  const transient::listener l = transient::listen(endpoint::loopback_v4(0), options);
  EXPECT_EQ(transient::queue_of(l.native_handle()), (transient::listen_queue{0, 16}));
  std::vector<unique_fd> clients;
  for (int i = 0; i < 5; ++i) {
    clients.push_back(connect_to(l.local_endpoint()));
  }
  const transient::listen_queue q = transient::queue_of(l.native_handle());
  EXPECT_EQ(q.length, 5U);
  EXPECT_DOUBLE_EQ(q.fill(), 5.0 / 16.0);
  unique_fd accepted(::accept4(l.native_handle(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(accepted);
  EXPECT_EQ(transient::queue_of(l.native_handle()).length, 4U);
}

TEST(ListenQueue, RefusesASocketThatDoesNotListen) {
  unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  std::error_code ec;
  EXPECT_EQ(transient::queue_of(fd.get(), ec), transient::listen_queue{});
  EXPECT_EQ(ec, transient::condition::not_listening);
  EXPECT_THROW((void)transient::queue_of(-1), std::system_error);
}

TEST(ListenQueue, MeasuresTheWaitFromTheHandshakeNotFromLaterData) {
  const transient::listener l = transient::listen(endpoint::loopback_v4(0));
  const unique_fd client = connect_to(l.local_endpoint());
  std::this_thread::sleep_for(150ms);
  ASSERT_EQ(::send(client.get(), "GET /", 5, MSG_NOSIGNAL), 5);  // data later than the handshake
  std::this_thread::sleep_for(100ms);
  unique_fd accepted(::accept4(l.native_handle(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(accepted);
  // At least the sleeps (the clock may run late on a loaded machine, never early).
  EXPECT_GE(transient::queue_wait_of(accepted.get()), 250ms);
}

TEST(ListenQueue, ReadsTheNamespaceCounters) {
  std::error_code ec;
  const transient::listen_drops before = transient::read_listen_drops(ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_LE(before.overflows, before.drops);
}

}  // namespace
