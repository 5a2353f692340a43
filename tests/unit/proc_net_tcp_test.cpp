// The /proc/net/tcp and tcp6 row parser, on lines recorded from this kernel's format.
#include "sockets/proc_net_tcp.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <tuple>

namespace {

using transient::endpoint;
using transient::detail::parse_tcp_row;
using transient::detail::parse_tcp_table;

// Every field of a row, to compare a parsed row with the expected one at once.
auto fields(const transient::detail::tcp_row& r) {
  return std::tuple(r.local, r.remote, r.state, r.uid, r.inode, r.rx_queue);
}

// Parses `line`, which is a row, and checks every field against `expected`.
void expect_parsed(std::string_view line, const transient::detail::tcp_row& expected) {
  const auto row = parse_tcp_row(line);
  ASSERT_TRUE(row) << line;
  EXPECT_EQ(fields(*row), fields(expected));
}

constexpr const char* header =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";

TEST(ProcNetTcp, ParsesIpv4ListenRow) {
  expect_parsed(
      "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 12345 1 "
      "0000000000000000 100 0 0 10 0",
      {endpoint::v4({127, 0, 0, 1}, 8080), endpoint::v4({0, 0, 0, 0}, 0), 0x0A, 1000, 12345, 0});
}

TEST(ProcNetTcp, ParsesIpv4EstablishedRow) {
  expect_parsed(
      "  12: 0201A8C0:D431 0101A8C0:01BB 01 00000000:00000000 02:000AFC8D 00000000     0        0 98765432 2 "
      "ffff88810a1b2c00 20 4 30 10 -1",
      {endpoint::v4({192, 168, 1, 2}, 0xD431), endpoint::v4({192, 168, 1, 1}, 443), 1, 0, 98765432, 0});
}

TEST(ProcNetTcp, ParsesTheAcceptQueueOfAListenRow) {
  const auto row = parse_tcp_row(
      "   0: 0100007F:1F90 00000000:0000 0A 00000000:0000001F 00:00000000 00000000  1000        0 12345 1 "
      "0000000000000000 100 0 0 10 0");
  ASSERT_TRUE(row);
  EXPECT_EQ(row->rx_queue, 31u);
  std::string problem;
  EXPECT_FALSE(
      parse_tcp_row("   0: 0100007F:1F90 00000000:0000 0A 0000000000000000 00:00000000 00000000  1000        0 "
                    "12345 1 0000000000000000 100 0 0 10 0",
                    &problem));
  EXPECT_EQ(problem, "malformed queues (expected 8 hex digits, ':', 8 hex digits)");
}

TEST(ProcNetTcp, ParsesIpv6Rows) {
  const auto loopback = parse_tcp_row(
      "   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 "
      "00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0");
  ASSERT_TRUE(loopback);
  EXPECT_EQ(loopback->local, endpoint::loopback_v6(80));
  EXPECT_EQ(loopback->local.to_string(), "[::1]:80");
  EXPECT_EQ(loopback->inode, 4242u);

  const auto mapped = parse_tcp_row(
      "   1: 0000000000000000FFFF00000100007F:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 "
      "00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0");
  ASSERT_TRUE(mapped);
  EXPECT_EQ(mapped->local.to_string(), "[::ffff:127.0.0.1]:9000");
  EXPECT_EQ(mapped->local.unmapped(), endpoint::v4({127, 0, 0, 1}, 9000));

  const auto global = parse_tcp_row(
      "   2: B80D0120000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 "
      "00:00000000 00000000     0        0 5 1 0000000000000000 100 0 0 10 0");
  ASSERT_TRUE(global);
  EXPECT_EQ(global->local.to_string(), "[2001:db8::1]:443");
}

TEST(ProcNetTcp, HeaderIsNotARowAndNotAProblem) {
  std::string problem = "stale";
  EXPECT_FALSE(parse_tcp_row(header, &problem));
  EXPECT_TRUE(problem.empty());
}

TEST(ProcNetTcp, MalformedLinesAreRejectedWithAReason) {
  const char* const malformed[] = {
      "",
      "   0: 0100007F:1F90",
      "   0: 0100007F:1F90 00000000:0000 0A",
      "   0 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 1 1",
      "   0: 0100007G:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 1 1",
      "   0: 0100007F1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 1 1",
      "   0: 0100007F:1F9 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 1 1",
      "   0: 0100007F:1F90 00000000:0000 0AB 00000000:00000000 00:00000000 00000000  1000 0 1 1",
      "   0: 0100007F:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1",
      "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  x 0 1 1",
      "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  4294967296 0 1 1",
      "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0 0 99999999999999999999 1",
      "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0 0 -1 1",
  };
  for (const char* line : malformed) {
    std::string problem;
    EXPECT_FALSE(parse_tcp_row(line, &problem)) << line;
    if (line[0] != '\0') {
      EXPECT_FALSE(problem.empty()) << line;
    }
  }
}

TEST(ProcNetTcp, TableCountsMalformedLines) {
  const std::string text = std::string(header) +
                           "\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0 0 11 1\n"
                           "   1: broken\n"
                           "\n"
                           "   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0 0 22 1";
  std::size_t malformed = 99;
  const auto rows = parse_tcp_table(text, &malformed);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].inode, 11u);
  EXPECT_EQ(rows[1].local, endpoint::any_v4(22));
  EXPECT_EQ(malformed, 1u);
}

}  // namespace
