// listen, verify and who_listens on real sockets (127.0.0.1 and ::1 only), including the
// kernel's conflict rules measured in docs/design.md.
#include "transient/sockets/listener.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "transient/errors/errors.hpp"

namespace {

using transient::endpoint;
using transient::listen_options;
using transient::listen_report;
using transient::listener;

bool has_fd_flag(int fd, int flag) { return (::fcntl(fd, F_GETFD) & flag) != 0; }
bool has_status_flag(int fd, int flag) { return (::fcntl(fd, F_GETFL) & flag) != 0; }

std::uint64_t inode_of(int fd) {
  struct stat status {};
  EXPECT_EQ(::fstat(fd, &status), 0);
  return status.st_ino;
}

// A socket of `type` bound to 127.0.0.1 (any port), not listening; empty if the socket or the
// bind failed.
transient::unique_fd bound_loopback_socket(int type) {
  transient::unique_fd fd(::socket(AF_INET, type | SOCK_CLOEXEC, 0));
  sockaddr_storage address{};
  const socklen_t length = endpoint::loopback_v4(0).to_sockaddr(address);
  if (!fd || ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), length) != 0) {
    return {};
  }
  return fd;
}

listen_options reuse_port_options() {
  listen_options options;
  options.reuse_port = true;
  return options;
}

TEST(Listen, Ipv4LoopbackIsVerifiedCloexecAndNonBlocking) {
  listen_report report;
  const listener l = transient::listen(endpoint::loopback_v4(0), {}, report);
  ASSERT_TRUE(l) << report.message;
  EXPECT_FALSE(report.error);
  EXPECT_NE(l.local_endpoint().port(), 0);
  EXPECT_EQ(l.local_endpoint().address_string(), "127.0.0.1");
  EXPECT_TRUE(has_fd_flag(l.native_handle(), FD_CLOEXEC));
  EXPECT_TRUE(has_status_flag(l.native_handle(), O_NONBLOCK));
  EXPECT_TRUE(report.verification.stream);
  EXPECT_TRUE(report.verification.accepting);
  EXPECT_TRUE(report.verification.address_matches);
  EXPECT_TRUE(report.verification.kernel_listener);
  EXPECT_TRUE(report.verification.unique);
  EXPECT_EQ(report.verification.inode, inode_of(l.native_handle()));
  EXPECT_NE(report.verification.cookie, 0u);

  const auto again = transient::verify(l);
  EXPECT_TRUE(again) << again.message;
  EXPECT_TRUE(again.message.empty());
}

TEST(Listen, Ipv6LoopbackIsVerified) {
  const listener l = transient::listen(endpoint::loopback_v6(0));
  ASSERT_TRUE(l);
  EXPECT_EQ(l.local_endpoint().address_string(), "::1");
  const auto report = transient::verify(l);
  EXPECT_TRUE(report) << report.message;
  EXPECT_TRUE(report.kernel_listener);
}

TEST(Listen, WildcardConflictsWithSpecificBothWays) {
  const listener any = transient::listen(endpoint::any_v4(0));
  const std::uint16_t port = any.local_endpoint().port();
  std::error_code ec;
  const listener specific = transient::listen(endpoint::loopback_v4(port), {}, ec);
  EXPECT_FALSE(specific);
  EXPECT_EQ(ec, std::errc::address_in_use);
  EXPECT_EQ(ec, transient::condition::address_in_use);

  const listener loopback = transient::listen(endpoint::loopback_v4(0));
  listen_report report;
  const listener wildcard = transient::listen(endpoint::any_v4(loopback.local_endpoint().port()), {}, report);
  EXPECT_FALSE(wildcard);
  EXPECT_EQ(report.error, std::errc::address_in_use);
  EXPECT_NE(report.message.find("bind"), std::string::npos) << report.message;
}

TEST(Listen, V4MappedConflictsWithIpv4ButIpv6LoopbackDoesNot) {
  const listener v4 = transient::listen(endpoint::loopback_v4(0));
  const std::uint16_t port = v4.local_endpoint().port();
  listen_options dual;
  dual.v6_only = false;
  std::error_code ec;
  const listener mapped =
      transient::listen(transient::parse_endpoint("[::ffff:127.0.0.1]:" + std::to_string(port)), dual, ec);
  EXPECT_FALSE(mapped);
  EXPECT_EQ(ec, std::errc::address_in_use);

  const listener dual_any = transient::listen(endpoint::any_v6(port), dual, ec);
  EXPECT_FALSE(dual_any);
  EXPECT_EQ(ec, std::errc::address_in_use);

  const listener v6 = transient::listen(endpoint::loopback_v6(port), {}, ec);
  EXPECT_TRUE(v6) << ec.message();
}

TEST(Listen, V4MappedListenerIsVerifiedAgainstItsRow) {
  listen_options dual;
  dual.v6_only = false;
  listen_report report;
  const listener mapped = transient::listen(transient::parse_endpoint("[::ffff:127.0.0.1]:0"), dual, report);
  ASSERT_TRUE(mapped) << report.message;
  EXPECT_TRUE(mapped.local_endpoint().is_v4_mapped());
  EXPECT_TRUE(report.verification.kernel_listener);
}

TEST(Listen, NonLocalAddressFailsAtBind) {
  listen_report report;
  // 192.0.2.1 (TEST-NET-1) is never assigned to this machine.
  const listener l = transient::listen(transient::parse_endpoint("192.0.2.1:0"), {}, report);
  EXPECT_FALSE(l);
  EXPECT_EQ(report.error, std::errc::address_not_available);
  EXPECT_NE(report.message.find("192.0.2.1:0: bind"), std::string::npos) << report.message;
}

TEST(Listen, ThrowingOverloadCarriesTheMessage) {
  const listener held = transient::listen(endpoint::loopback_v4(0));
  try {
    (void)transient::listen(held.local_endpoint());
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::address_in_use);
    EXPECT_NE(std::string(e.what()).find(held.local_endpoint().to_string()), std::string::npos) << e.what();
  }
}

TEST(Listen, AddressInUseNamesTheHoldingProcessOnce) {
  const listener held = transient::listen(endpoint::loopback_v4(0));
  const std::string where = held.local_endpoint().to_string();
  const std::string self = "pid " + std::to_string(::getpid()) + " (";
  listen_report report;
  EXPECT_FALSE(transient::listen(held.local_endpoint(), {}, report));
  EXPECT_EQ(report.error, std::errc::address_in_use);
  EXPECT_EQ(report.message.rfind("listen on " + where + ": bind: Address already in use; held by " + self, 0), 0U)
      << report.message;
  ASSERT_EQ(report.holders.size(), 1U);
  EXPECT_EQ(report.holders[0].inode, inode_of(held.native_handle()));
  try {
    (void)transient::listen(held.local_endpoint());
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    const std::string what = e.what();
    EXPECT_EQ(what, report.message) << "what() is the message, the reason said once";
    EXPECT_EQ(what.find("Address already in use"), what.rfind("Address already in use")) << what;
  }
}

TEST(Listen, AddressInUseByAHolderThatCannotBeSeenSaysWhatItMayBe) {
  // A socket bound without SO_REUSEADDR and not listening: bind fails, and no LISTEN row names it.
  transient::unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(fd);
  sockaddr_storage address{};
  socklen_t length = endpoint::loopback_v4(0).to_sockaddr(address);
  ASSERT_EQ(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), length), 0);
  length = sizeof address;
  ASSERT_EQ(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&address), &length), 0);
  std::error_code ec;
  const endpoint taken = endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&address), length, ec);
  ASSERT_FALSE(ec);
  listen_report report;
  EXPECT_FALSE(transient::listen(taken, {}, report));
  EXPECT_EQ(report.error, std::errc::address_in_use);
  EXPECT_TRUE(report.holders.empty());
  EXPECT_EQ(report.message, "listen on " + taken.to_string() +
                                ": bind: Address already in use; the holder cannot be seen from here: another network "
                                "namespace or user, or a socket bound to port " +
                                std::to_string(taken.port()) + " but not listening");
}

TEST(Verify, BoundButNotListeningFails) {
  transient::unique_fd fd = bound_loopback_socket(SOCK_STREAM);
  ASSERT_TRUE(fd);
  std::error_code ec;
  const listener l = listener::adopt(std::move(fd), ec);
  ASSERT_FALSE(ec);
  const auto report = transient::verify(l);
  EXPECT_FALSE(report);
  EXPECT_EQ(report.error, transient::error::not_listening);
  EXPECT_EQ(report.error, transient::condition::not_listening);
  EXPECT_TRUE(report.stream);
  EXPECT_FALSE(report.accepting);
  EXPECT_FALSE(report.kernel_listener);
  EXPECT_NE(report.message.find("bound but not listening"), std::string::npos) << report.message;
  EXPECT_THROW(report.throw_if_failed(), std::system_error);
}

TEST(Verify, DatagramSocketIsNotAStream) {
  transient::unique_fd fd = bound_loopback_socket(SOCK_DGRAM);
  ASSERT_TRUE(fd);
  std::error_code ec;
  const listener l = listener::adopt(std::move(fd), ec);
  EXPECT_EQ(transient::verify(l).error, transient::error::not_stream);
}

TEST(Verify, ShutdownReadStopsListening) {
  const listener l = transient::listen(endpoint::loopback_v4(0));
  EXPECT_FALSE(l.shutdown_read());
  const auto report = transient::verify(l);
  EXPECT_EQ(report.error, transient::error::not_listening) << report.message;
}

TEST(Verify, EmptyListenerIsABadDescriptor) {
  listener l = transient::listen(endpoint::loopback_v4(0));
  const transient::unique_fd fd = l.release();
  EXPECT_FALSE(l);
  EXPECT_TRUE(fd);
  EXPECT_EQ(transient::verify(l).error, std::errc::bad_file_descriptor);
}

TEST(Verify, SecondReusePortListenerIsADuplicateNamingTheOwner) {
  const listener first = transient::listen(endpoint::loopback_v4(0), reuse_port_options());
  const endpoint where = first.local_endpoint();
  // Both asked for SO_REUSEPORT: the kernel lets them share, and verify accepts it.
  listen_report report;
  listener second = transient::listen(where, reuse_port_options(), report);
  ASSERT_TRUE(second) << report.message;
  EXPECT_FALSE(report.verification.others.empty());
  EXPECT_TRUE(report.verification.unique);

  // Seen by code that did not ask for sharing, the same socket is a duplicate listener.
  const listener unaware(second.release(), where, false);
  const auto found = transient::verify(unaware);
  EXPECT_EQ(found.error, transient::error::duplicate_listener);
  EXPECT_EQ(found.error, transient::condition::duplicate_listener);
  ASSERT_EQ(found.others.size(), 1u);
  EXPECT_EQ(found.others[0].inode, inode_of(first.native_handle()));
  EXPECT_NE(found.message.find("pid " + std::to_string(::getpid())), std::string::npos) << found.message;
  EXPECT_NE(found.message.find("transient_test_listener"), std::string::npos) << found.message;
}

TEST(Verify, WildcardAndSpecificReusePortListenersOverlap) {
  const listener any = transient::listen(endpoint::any_v4(0), reuse_port_options());
  const std::uint16_t port = any.local_endpoint().port();
  listen_report report;
  listener specific = transient::listen(endpoint::loopback_v4(port), reuse_port_options(), report);
  ASSERT_TRUE(specific) << report.message;
  const listener unaware(specific.release(), endpoint::loopback_v4(port), false);
  EXPECT_EQ(transient::verify(unaware).error, transient::error::duplicate_listener);
}

TEST(AddressesOverlap, FollowsTheKernelsRules) {
  const auto p = [](const char* text) { return transient::parse_endpoint(text); };
  EXPECT_TRUE(transient::addresses_overlap(p("127.0.0.1:80"), p("127.0.0.1:80")));
  EXPECT_TRUE(transient::addresses_overlap(p("0.0.0.0:80"), p("127.0.0.1:80")));
  EXPECT_TRUE(transient::addresses_overlap(p("[::ffff:127.0.0.1]:80"), p("127.0.0.1:80")));
  EXPECT_TRUE(transient::addresses_overlap(p("[::]:80"), p("[::1]:80")));
  EXPECT_FALSE(transient::addresses_overlap(p("127.0.0.1:80"), p("127.0.0.1:81")));
  EXPECT_FALSE(transient::addresses_overlap(p("127.0.0.1:80"), p("127.0.0.2:80")));
  EXPECT_FALSE(transient::addresses_overlap(p("127.0.0.1:80"), p("[::1]:80")));
  EXPECT_FALSE(transient::addresses_overlap(p("0.0.0.0:22"), p("[::]:22")));
}

TEST(WhoListens, FindsOurOwnProcess) {
  const listener l = transient::listen(endpoint::loopback_v4(0));
  const auto entries = transient::who_listens(l.local_endpoint().port());
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].address, l.local_endpoint());
  EXPECT_EQ(entries[0].inode, inode_of(l.native_handle()));
  EXPECT_EQ(entries[0].uid, ::geteuid());
  ASSERT_EQ(entries[0].owners.size(), 1u);
  EXPECT_EQ(entries[0].owners[0].pid, ::getpid());
  EXPECT_TRUE(entries[0].owners[0].command_known);
  EXPECT_NE(entries[0].owners[0].command.find("transient_test_listener"), std::string::npos);
  EXPECT_FALSE(entries[0].owners_unknown());
}

TEST(WhoListens, SeesBothFamiliesOnOnePort) {
  const listener v4 = transient::listen(endpoint::loopback_v4(0));
  const listener v6 = transient::listen(endpoint::loopback_v6(v4.local_endpoint().port()));
  const auto entries = transient::who_listens(v4.local_endpoint().port());
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_TRUE((entries[0].address == v4.local_endpoint() && entries[1].address == v6.local_endpoint()) ||
              (entries[1].address == v4.local_endpoint() && entries[0].address == v6.local_endpoint()));
}

// A blocking connect on loopback completes when the kernel queues the connection, before any
// accept: `count` such clients of `to`.
std::vector<transient::unique_fd> queued_clients(const endpoint& to, int count) {
  std::vector<transient::unique_fd> clients;
  sockaddr_storage address{};
  const socklen_t length = to.to_sockaddr(address);
  for (int i = 0; i < count; ++i) {
    clients.emplace_back(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    EXPECT_EQ(::connect(clients.back().get(), reinterpret_cast<const sockaddr*>(&address), length), 0);
  }
  return clients;
}

TEST(ListenSockets, CountsTheAcceptQueueWithoutLookingForOwners) {
  const listener l = transient::listen(endpoint::loopback_v4(0));
  const std::uint16_t port = l.local_endpoint().port();
  const auto clients = queued_clients(l.local_endpoint(), 3);
  const auto entries = transient::listen_sockets(port);
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].address, l.local_endpoint());
  EXPECT_EQ(entries[0].inode, inode_of(l.native_handle()));
  EXPECT_EQ(entries[0].queued, 3u);
  EXPECT_TRUE(entries[0].owners.empty());
  // who_listens() reports the same queue, with the owner.
  const transient::unique_fd accepted(::accept4(l.native_handle(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(accepted);
  const auto owned = transient::who_listens(port);
  ASSERT_EQ(owned.size(), 1u);
  EXPECT_EQ(owned[0].queued, 2u);
  ASSERT_EQ(owned[0].owners.size(), 1u);
  EXPECT_EQ(owned[0].owners[0].pid, ::getpid());
}

TEST(ListenSockets, NothingListensOnAClosedPort) {
  std::error_code ec;
  const std::uint16_t port = transient::listen(endpoint::loopback_v4(0)).local_endpoint().port();
  EXPECT_TRUE(transient::listen_sockets(port, ec).empty());
  EXPECT_FALSE(ec);
}

TEST(WhoListens, BoundSocketIsNotAListener) {
  const transient::unique_fd fd = bound_loopback_socket(SOCK_STREAM);
  ASSERT_TRUE(fd);
  std::error_code ec;
  const endpoint bound = listener::adopt(transient::unique_fd(::dup(fd.get())), ec).local_endpoint();
  EXPECT_TRUE(transient::who_listens(bound.port()).empty());
}

TEST(ListenInRange, RefusesBadRangesAndReusePort) {
  std::error_code ec;
  EXPECT_FALSE(transient::listen_in_range(endpoint::loopback_v4(0), 9010, 9000, {}, ec));
  EXPECT_EQ(ec, transient::error::invalid_port_range);
  EXPECT_FALSE(transient::listen_in_range(endpoint::loopback_v4(0), 0, 10, {}, ec));
  EXPECT_EQ(ec, transient::error::invalid_port_range);
  listen_report report;
  EXPECT_FALSE(transient::listen_in_range(endpoint::loopback_v4(0), 23000, 23010, reuse_port_options(), report));
  EXPECT_EQ(report.error, transient::error::reuse_port_refused);
  EXPECT_NE(report.message.find("SO_REUSEPORT"), std::string::npos);
}

TEST(ListenInRange, TakesAPortInTheRangeAndWarnsAboutTheEphemeralRange) {
  listen_report report;
  const listener l = transient::listen_in_range(endpoint::loopback_v4(0), 23200, 23263, {}, report);
  ASSERT_TRUE(l) << report.message;
  EXPECT_GE(l.local_endpoint().port(), 23200);
  EXPECT_LE(l.local_endpoint().port(), 23263);
  EXPECT_TRUE(report.warning.empty()) << report.warning;
  ASSERT_FALSE(report.attempts.empty());
  EXPECT_EQ(report.attempts.back().port, l.local_endpoint().port());
  EXPECT_TRUE(transient::verify(l));

  // 32768-60999 is ip_local_port_range on this machine (docs/design.md).
  const listener risky = transient::listen_in_range(endpoint::loopback_v4(0), 32000, 33000, {}, report);
  ASSERT_TRUE(risky) << report.message;
  EXPECT_NE(report.warning.find("ip_local_port_range"), std::string::npos) << report.warning;
  EXPECT_NE(report.warning.find("32768-33000"), std::string::npos) << report.warning;
}

TEST(ListenInRange, ExhaustionListsThePortsTried) {
  std::vector<listener> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(transient::listen_in_range(endpoint::loopback_v4(0), 23300, 23302));
  }
  listen_report report;
  EXPECT_FALSE(transient::listen_in_range(endpoint::loopback_v4(0), 23300, 23302, {}, report));
  EXPECT_EQ(report.error, transient::error::port_range_exhausted);
  EXPECT_EQ(report.error, transient::condition::address_in_use);
  ASSERT_EQ(report.attempts.size(), 3u);
  EXPECT_EQ(report.bind_collisions + report.listen_collisions, 3u);
  for (const char* port : {"23300", "23301", "23302"}) {
    EXPECT_NE(report.message.find(port), std::string::npos) << report.message;
  }
  try {
    (void)transient::listen_in_range(endpoint::loopback_v4(0), 23300, 23302);
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), transient::error::port_range_exhausted);
    EXPECT_NE(std::string(e.what()).find("23301"), std::string::npos) << e.what();
  }
}

}  // namespace
