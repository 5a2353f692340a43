// Per-peer cap: keys (IPv4 /32, IPv6 /64, mapped addresses), the cap, bounded memory.
#include "transient/policy/budget.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <string>
#include <vector>

namespace transient {
namespace {

peer_key v4(const char* text) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  EXPECT_EQ(inet_pton(AF_INET, text, &a.sin_addr), 1);
  return peer_key_of(reinterpret_cast<const sockaddr*>(&a), sizeof a);
}

peer_key v6(const char* text) {
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  EXPECT_EQ(inet_pton(AF_INET6, text, &a.sin6_addr), 1);
  return peer_key_of(reinterpret_cast<const sockaddr*>(&a), sizeof a);
}

TEST(PeerKey, Ipv4IsTheWholeAddress) {
  EXPECT_EQ(v4("10.0.0.1"), (peer_key{0x0a000001U, AF_INET}));
  EXPECT_NE(v4("10.0.0.1"), v4("10.0.0.2"));
}

TEST(PeerKey, Ipv6IsThe64BitPrefix) {
  EXPECT_EQ(v6("2001:db8::1"), v6("2001:db8::ffff:1"));
  EXPECT_EQ(v6("2001:db8::1"), (peer_key{0x20010db800000000ULL, AF_INET6}));
  EXPECT_NE(v6("2001:db8::1"), v6("2001:db8:0:1::1"));
}

TEST(PeerKey, Ipv4MappedIpv6CountsAsIpv4) { EXPECT_EQ(v6("::ffff:10.0.0.1"), v4("10.0.0.1")); }

TEST(PeerKey, OtherFamiliesAndShortLengthsAreUnknown) {
  sockaddr_un u{};
  u.sun_family = AF_UNIX;
  EXPECT_FALSE(peer_key_of(reinterpret_cast<const sockaddr*>(&u), sizeof u));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  EXPECT_FALSE(peer_key_of(reinterpret_cast<const sockaddr*>(&a), 4));
  EXPECT_FALSE(peer_key_of(nullptr, 0));
}

TEST(PeerLimit, CapsLiveConnectionsPerPeer) {
  peer_limit limit(3, 1024, 1);
  peer_slot s[5];
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(limit.try_acquire(v4("192.0.2.1"), s[i])) << "connection " << i << " of the cap of 3";
  }
  EXPECT_FALSE(limit.try_acquire(v4("192.0.2.1"), s[3]));
  EXPECT_EQ(limit.count(v4("192.0.2.1")), 3U) << "a refusal leaves the count unchanged";
  EXPECT_TRUE(limit.try_acquire(v4("192.0.2.2"), s[4]));
  limit.release(s[0]);
  EXPECT_TRUE(limit.try_acquire(v4("192.0.2.1"), s[0]));
}

TEST(PeerLimit, AnIpv6SiteSharesOneCap) {
  peer_limit limit(2, 1024, 1);
  peer_slot s[3];
  EXPECT_TRUE(limit.try_acquire(v6("2001:db8::1"), s[0]));
  EXPECT_TRUE(limit.try_acquire(v6("2001:db8::2"), s[1]));
  EXPECT_FALSE(limit.try_acquire(v6("2001:db8::3"), s[2]));
  EXPECT_TRUE(limit.try_acquire(v6("2001:db8:0:1::1"), s[2]));
}

TEST(PeerLimit, UnknownPeersAreNotLimited) {
  peer_limit limit(1, 64, 1);
  peer_slot s;
  for (int i = 0; i < 10; ++i) {
    EXPECT_TRUE(limit.try_acquire(peer_key{}, s));
  }
}

TEST(PeerLimit, MemoryIsFixedAndPeersThatLeftLeaveNothing) {
  peer_limit limit(1, 4096, 3);
  EXPECT_EQ(limit.memory_bytes(), 2U * 4096U * 4U);
  std::vector<peer_slot> slots;
  for (std::uint32_t i = 0; i < 100000; ++i) {  // 100,000 distinct peers come and go
    const peer_key peer{0x0a000000U + i, AF_INET};
    peer_slot s;
    ASSERT_TRUE(limit.try_acquire(peer, s)) << i;
    limit.release(s);
  }
  EXPECT_EQ(limit.memory_bytes(), 2U * 4096U * 4U);
  for (std::uint32_t i = 0; i < 100000; i += 997) {
    EXPECT_EQ(limit.count(peer_key{0x0a000000U + i, AF_INET}), 0U);
  }
}

TEST(PeerLimit, ACapOfOneRefusesAboutHalfAPercentOf2000LivePeersEarly) {
  // The worst case of the sketch: with a cap of 1 a peer is refused early when both of its
  // counters are taken by other peers; with 2,000 peers in 16384 counters per row that is
  // about (2000/16384)^2 / 2, i.e. 0.6 % (about 12) of them. The cap itself always holds.
  peer_limit limit(1, 16384, 5);
  int refused = 0;
  peer_slot s;
  for (std::uint32_t i = 0; i < 2000; ++i) {
    refused += limit.try_acquire(peer_key{0xc0a80000U + i, AF_INET}, s) ? 0 : 1;
  }
  EXPECT_LE(refused, 30);
  for (std::uint32_t i = 0; i < 2000; ++i) {
    EXPECT_FALSE(limit.try_acquire(peer_key{0xc0a80000U + i, AF_INET}, s)) << "the cap holds for every peer";
  }
}

TEST(PeerLimit, ACapOfFourRefusesNoPeerEarly) {
  peer_limit limit(4, 16384, 5);
  peer_slot s;
  for (std::uint32_t i = 0; i < 2000; ++i) {
    for (int c = 0; c < 2; ++c) {  // two live connections per peer, under the cap
      ASSERT_TRUE(limit.try_acquire(peer_key{0xc0a80000U + i, AF_INET}, s)) << i;
    }
  }
}

TEST(PeerLimit, BadSettingsAreRefused) {
  EXPECT_THROW(peer_limit(0), std::system_error);
  EXPECT_THROW(peer_limit(1, std::size_t{1} << 25U), std::system_error);
  EXPECT_EQ(peer_limit(1, 1, 1).memory_bytes(), 2U * 64U * 4U) << "at least 64 counters per row";
}

}  // namespace
}  // namespace transient
