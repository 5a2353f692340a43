// endpoint: parsing every accepted form, canonical printing, sockaddr round trips, and a clear
// problem for each kind of bad input.
#include "transient/sockets/endpoint.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <string>

#include "transient/errors/errors.hpp"

namespace {

using transient::endpoint;
using transient::parse_endpoint;
using transient::try_parse_endpoint;

TEST(Endpoint, ParsesIpv4) {
  const endpoint e = parse_endpoint("127.0.0.1:8080");
  EXPECT_TRUE(e.is_v4());
  EXPECT_EQ(e.port(), 8080);
  EXPECT_EQ(e, endpoint::v4({127, 0, 0, 1}, 8080));
  EXPECT_TRUE(e.is_loopback());
  EXPECT_FALSE(e.is_unspecified());
  EXPECT_EQ(e.to_string(), "127.0.0.1:8080");
}

TEST(Endpoint, ParsesIpv6InBrackets) {
  const endpoint e = parse_endpoint("[::1]:8080");
  EXPECT_TRUE(e.is_v6());
  EXPECT_EQ(e.port(), 8080);
  EXPECT_TRUE(e.is_loopback());
  EXPECT_EQ(e.to_string(), "[::1]:8080");
}

TEST(Endpoint, ParsesWildcards) {
  EXPECT_EQ(parse_endpoint("0.0.0.0:0"), endpoint::any_v4(0));
  EXPECT_TRUE(parse_endpoint("0.0.0.0:0").is_unspecified());
  const endpoint any6 = parse_endpoint("[::]:443");
  EXPECT_EQ(any6, endpoint::any_v6(443));
  EXPECT_TRUE(any6.is_unspecified());
  EXPECT_EQ(any6.to_string(), "[::]:443");
}

TEST(Endpoint, LocalhostIsIpv4LoopbackWithoutDns) {
  EXPECT_EQ(parse_endpoint("localhost:8080"), endpoint::v4({127, 0, 0, 1}, 8080));
  EXPECT_EQ(parse_endpoint("LocalHost:1"), endpoint::v4({127, 0, 0, 1}, 1));
}

TEST(Endpoint, MissingHostMeansEveryIpv4Interface) {
  EXPECT_EQ(parse_endpoint(":8080"), endpoint::v4({0, 0, 0, 0}, 8080));
  EXPECT_EQ(parse_endpoint(":8080").to_string(), "0.0.0.0:8080");
}

TEST(Endpoint, PrintsCanonically) {
  EXPECT_EQ(parse_endpoint("[0:0:0:0:0:0:0:1]:80").to_string(), "[::1]:80");
  EXPECT_EQ(parse_endpoint("[2001:DB8:0:0::1]:80").to_string(), "[2001:db8::1]:80");
  EXPECT_EQ(parse_endpoint("127.0.0.1:00080").to_string(), "127.0.0.1:80");
  EXPECT_EQ(parse_endpoint("1.2.3.4:65535").to_string(), "1.2.3.4:65535");
}

TEST(Endpoint, V4MappedUnmapsToIpv4) {
  const endpoint mapped = parse_endpoint("[::ffff:127.0.0.1]:9000");
  EXPECT_TRUE(mapped.is_v6());
  EXPECT_TRUE(mapped.is_v4_mapped());
  EXPECT_TRUE(mapped.is_loopback());
  EXPECT_EQ(mapped.unmapped(), endpoint::v4({127, 0, 0, 1}, 9000));
  EXPECT_EQ(mapped.to_string(), "[::ffff:127.0.0.1]:9000");
  EXPECT_FALSE(parse_endpoint("[::1]:9000").is_v4_mapped());
}

TEST(Endpoint, SockaddrRoundTrip) {
  for (const char* text : {"127.0.0.1:8080", "[::1]:443", "0.0.0.0:0", "[fe80::1]:7"}) {
    const endpoint e = parse_endpoint(text);
    sockaddr_storage storage{};
    const socklen_t length = e.to_sockaddr(storage);
    std::error_code ec;
    const endpoint back = endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&storage), length, ec);
    EXPECT_FALSE(ec) << text;
    EXPECT_EQ(back, e) << text;
  }
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(1234);
  in.sin_addr.s_addr = htonl(0x0A000001);
  std::error_code ec;
  const endpoint from = endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&in), sizeof in, ec);
  EXPECT_EQ(from.to_string(), "10.0.0.1:1234");
}

TEST(Endpoint, FromSockaddrRejectsOtherFamiliesAndShortLengths) {
  sockaddr_storage storage{};
  storage.ss_family = AF_UNIX;
  std::error_code ec;
  (void)endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&storage), sizeof storage, ec);
  EXPECT_EQ(ec, std::errc::address_family_not_supported);
  storage.ss_family = AF_INET6;
  (void)endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&storage), sizeof(sockaddr_in), ec);
  EXPECT_EQ(ec, std::errc::invalid_argument);
}

struct bad_input {
  std::string text;
  std::string problem_contains;
};

TEST(Endpoint, BadInputNamesTheProblem) {
  const bad_input cases[] = {
      {"", "empty"},
      {"127.0.0.1", "missing port"},
      {"127.0.0.1:", "missing port"},
      {"127.0.0.1:70000", "70000 is out of range"},
      {"127.0.0.1:123456", "out of range"},
      {"127.0.0.1:-1", "not a decimal number"},
      {"127.0.0.1:80x", "not a decimal number"},
      {"garbage:80", "not an IPv4 address"},
      {"example.com:80", "no DNS"},
      {"256.0.0.1:80", "not an IPv4 address"},
      {"[::1:80", "unterminated bracket"},
      {"[::1]", "missing port after ']'"},
      {"[::1]80", "expected ':' after ']'"},
      {"[]:80", "empty IPv6 address"},
      {"[fe80::1%eth0]:80", "zone ids"},
      {"[1.2.3.4]:80", "not an IPv6 address"},
      {"::1:80", "needs brackets"},
      {"1.2.3.4]:80", "']' without '['"},
      {" 1.2.3.4:80", "space or a non-printable"},
      {std::string("1.2.3.4\0:80", 11), "non-printable"},
  };
  for (const auto& c : cases) {
    const auto result = try_parse_endpoint(c.text);
    EXPECT_FALSE(result) << c.text;
    EXPECT_NE(result.problem.find(c.problem_contains), std::string::npos)
        << "input '" << c.text << "' gave problem: " << result.problem;
    std::error_code ec;
    const endpoint e = parse_endpoint(c.text, ec);
    EXPECT_EQ(ec, transient::error::invalid_endpoint) << c.text;
    EXPECT_EQ(ec, transient::condition::invalid_argument) << c.text;
    EXPECT_EQ(e, endpoint{});
  }
}

TEST(Endpoint, ThrowingOverloadQuotesTextAndProblem) {
  try {
    (void)parse_endpoint("127.0.0.1:99999");
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), transient::error::invalid_endpoint);
    EXPECT_STREQ(e.what(), "invalid endpoint '127.0.0.1:99999': port 99999 is out of range (0-65535)")
        << "the reason once, not followed by ': invalid endpoint' again";
  }
}

TEST(Endpoint, ErrorCodeOverloadCanKeepTheReason) {
  std::error_code ec;
  std::string problem = "stale";
  EXPECT_EQ(parse_endpoint("::1:80", ec, problem), endpoint{});
  EXPECT_EQ(ec, transient::error::invalid_endpoint);
  EXPECT_EQ(problem, "invalid endpoint '::1:80': an IPv6 address needs brackets, e.g. [::1]:8080");
  EXPECT_EQ(parse_endpoint("[::1]:80", ec, problem), endpoint::loopback_v6(80));
  EXPECT_FALSE(ec);
  EXPECT_TRUE(problem.empty());
}

TEST(Endpoint, SuccessClearsErrorCode) {
  std::error_code ec = std::make_error_code(std::errc::io_error);
  EXPECT_EQ(parse_endpoint("[::]:1", ec), endpoint::any_v6(1));
  EXPECT_FALSE(ec);
  EXPECT_TRUE(try_parse_endpoint("[::]:1").problem.empty());
}

}  // namespace
