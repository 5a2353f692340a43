// The drill's listen_queue_length (tools/drill/drill_listen_queue.cpp): it counts the clients
// queued on the listeners a connection to the drill's address can reach (that address, or a
// wildcard), never another listener on the same port number at another address, whose queue
// made a server the drill watched look "not accepting".
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include "../../tools/drill/drill_target.hpp"
#include "support/loopback.hpp"

namespace {

using transient::endpoint;
using transient::unique_fd;
using transient::tool::listen_queue_length;

// A listener on `at` (port 0: any) that never accepts; empty if it cannot bind (no IPv6).
unique_fd listener_on(const endpoint& at) {
  unique_fd fd(::socket(at.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  const int one = 1;
  if (at.is_v6() && fd) {
    ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  }
  sockaddr_storage address{};
  const socklen_t length = at.to_sockaddr(address);
  if (!fd || ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), length) != 0 ||
      ::listen(fd.get(), 16) != 0) {
    return {};
  }
  return fd;
}

std::uint16_t port_of(const unique_fd& fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&address), &length);
  std::error_code ec;
  return endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&address), length, ec).port();
}

TEST(DrillListenQueue, AnotherAddressOnTheSamePortIsNotCounted) {
  const unique_fd v4 = listener_on(endpoint::loopback_v4(0));
  ASSERT_TRUE(v4);
  const std::uint16_t port = port_of(v4);
  const unique_fd v6 = listener_on(endpoint::loopback_v6(port));
  if (!v6) {
    GTEST_SKIP() << "no [::1]:" << port << " beside 127.0.0.1:" << port << " here (IPv6 off?)";
  }
  EXPECT_EQ(listen_queue_length(endpoint::loopback_v4(port)), 0);
  const unique_fd queued_v6 = transient::test::connect_to(endpoint::loopback_v6(port));
  ASSERT_TRUE(queued_v6);
  EXPECT_EQ(listen_queue_length(endpoint::loopback_v4(port)), 0) << "[::1]'s queue counted for 127.0.0.1";
  EXPECT_EQ(listen_queue_length(endpoint::loopback_v6(port)), 1);
  const unique_fd queued_v4 = transient::test::connect_to(endpoint::loopback_v4(port));
  ASSERT_TRUE(queued_v4);
  EXPECT_EQ(listen_queue_length(endpoint::loopback_v4(port)), 1);
}

TEST(DrillListenQueue, AWildcardListenerIsCountedForItsFamilyOnly) {
  const unique_fd any = listener_on(endpoint::any_v4(0));
  ASSERT_TRUE(any);
  const std::uint16_t port = port_of(any);
  const unique_fd queued = transient::test::connect_to(endpoint::loopback_v4(port));
  ASSERT_TRUE(queued);
  EXPECT_EQ(listen_queue_length(endpoint::loopback_v4(port)), 1);
  EXPECT_EQ(listen_queue_length(endpoint::loopback_v6(port)), -1) << "0.0.0.0 takes no IPv6 connection";
}

TEST(DrillListenQueue, NothingListeningIsMinusOne) {
  unique_fd any = listener_on(endpoint::loopback_v4(0));
  ASSERT_TRUE(any);
  const std::uint16_t port = port_of(any);
  any.reset();
  EXPECT_EQ(listen_queue_length(endpoint::loopback_v4(port)), -1);
}

}  // namespace
