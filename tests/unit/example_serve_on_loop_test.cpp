// examples/serve_on_loop.cpp end to end: connections served on the loop that accepted them,
// as the README shows. Echo on a kept connection, the budget holding a client in the backlog
// until a connection closes, and SIGTERM as a clean stop that closes what the loops hold.
// ctest-labels: threads
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <string>

#include "support/example_server.hpp"
#include "support/loopback.hpp"

namespace {

using namespace std::chrono_literals;
using transient::unique_fd;
using transient::test::read_at_least;
using transient::test::send_text;

struct example_server : transient::test::example_server {
  explicit example_server(unsigned max_connections)
      : transient::test::example_server(TRANSIENT_EXAMPLE_SERVE_ON_LOOP, "serve_on_loop", max_connections) {}
};

TEST(ExampleServeOnLoop, EchoesOnAKeptConnectionAndStopsCleanlyClosingIt) {
  example_server server(0);
  ASSERT_NE(server.at.port(), 0);
  const unique_fd c = transient::test::connect_to(server.at);
  ASSERT_TRUE(c);
  for (const std::string text : {"one", "two", "three"}) {
    ASSERT_TRUE(send_text(c.get(), text));
    EXPECT_EQ(read_at_least(c.get(), text.size()), text);
  }
  server.process.signal(SIGTERM);
  EXPECT_EQ(server.process.wait(3s), 0);
  EXPECT_TRUE(transient::test::closed_by_peer(c.get(), 2s)) << "the stop closes what the loop holds";
  EXPECT_NE(server.process.stderr_text().find("serve_on_loop: stopped cleanly"), std::string::npos)
      << server.process.stderr_text();
}

TEST(ExampleServeOnLoop, AtItsBudgetAClientWaitsUntilAConnectionCloses) {
  example_server server(1);
  ASSERT_NE(server.at.port(), 0);
  unique_fd first = transient::test::connect_to(server.at);
  ASSERT_TRUE(send_text(first.get(), "a"));
  ASSERT_EQ(read_at_least(first.get(), 1), "a");  // it holds the one place

  const unique_fd second = transient::test::connect_to(server.at);
  ASSERT_TRUE(second) << "the kernel completes the handshake; the client waits in the backlog";
  ASSERT_TRUE(send_text(second.get(), "b"));
  EXPECT_EQ(transient::test::read_some(second.get(), 300ms), "") << "served beyond the budget of 1";

  first.reset();  // the loop sees the end of stream, closes, and its place goes to the next
  EXPECT_EQ(read_at_least(second.get(), 1, 3s), "b");
  server.process.signal(SIGTERM);
  EXPECT_EQ(server.process.wait(3s), 0);
}

}  // namespace
