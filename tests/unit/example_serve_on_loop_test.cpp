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
using namespace transient::test;
using transient::unique_fd;

// The example on 127.0.0.1 (any free port) with two threads and `max_connections`.
example_server serve_on_loop(unsigned max_connections) {
  return {TRANSIENT_EXAMPLE_SERVE_ON_LOOP, "serve_on_loop", max_connections};
}

TEST(ExampleServeOnLoop, EchoesOnAKeptConnectionAndStopsCleanlyClosingIt) {
  example_server server = serve_on_loop(0);
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
  example_server server = serve_on_loop(1);
  ASSERT_NE(server.at.port(), 0);
  // The loop sees the first client's end of stream, closes, and its place goes to the next.
  unique_fd second;
  ASSERT_NO_FATAL_FAILURE(expect_a_client_waits_until_a_release(server.at, {"a", "a"}, {"b", "b"}, second));
  server.process.signal(SIGTERM);
  EXPECT_EQ(server.process.wait(3s), 0);
}

}  // namespace
