// examples/beast_server end to end: Beast's HTTP server accepting through the Boost.Asio
// adapter, on an io_context run by two threads. Keep-alive answers, the budget holding a
// client in the backlog until a connection closes, real descriptor exhaustion (RLIMIT_NOFILE
// 64 through prlimit(2)) without a spin and with recovery at a release, and SIGTERM as a
// clean stop.
// ctest-labels: threads
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <chrono>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "support/example_server.hpp"
#include "support/loopback.hpp"
#include "support/spawned_process.hpp"
#include "transient/sockets/endpoint.hpp"

namespace {

using namespace std::chrono_literals;
using transient::unique_fd;
using transient::test::read_at_least;
using transient::test::send_text;
using transient::test::spawned_process;

// Beast writes the fields in the order the example sets them, Content-Length last.
constexpr std::string_view ok = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
constexpr std::string_view ok_close =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
constexpr std::string_view request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";

// The example on 127.0.0.1 (any free port) with two threads and `max_connections`.
struct example_server : transient::test::example_server {
  explicit example_server(unsigned max_connections)
      : transient::test::example_server(TRANSIENT_EXAMPLE_BEAST_SERVER, "beast_server", max_connections) {}
};

TEST(ExampleBeastServer, AnswersKeepAliveRequestsAndStopsCleanlyOnSigterm) {
  example_server server(0);
  ASSERT_NE(server.at.port(), 0);
  const unique_fd c = transient::test::connect_to(server.at);
  ASSERT_TRUE(c);
  for (int i = 0; i < 3; ++i) {  // one connection, several requests
    ASSERT_TRUE(send_text(c.get(), request));
    EXPECT_EQ(read_at_least(c.get(), ok.size()), ok) << "request " << i;
  }
  ASSERT_TRUE(send_text(c.get(), "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
  EXPECT_EQ(read_at_least(c.get(), ok_close.size()), ok_close);
  EXPECT_TRUE(transient::test::closed_by_peer(c.get(), 2s)) << "Connection: close is honoured";

  server.process.signal(SIGTERM);
  EXPECT_EQ(server.process.wait(5s), 0);
  const std::string err = server.process.stderr_text();
  EXPECT_NE(err.find("transient: accept stopped cleanly"), std::string::npos) << err;
}

TEST(ExampleBeastServer, AtItsBudgetAClientWaitsUntilAConnectionCloses) {
  example_server server(1);
  ASSERT_NE(server.at.port(), 0);
  unique_fd first = transient::test::connect_to(server.at);
  ASSERT_TRUE(send_text(first.get(), request));
  ASSERT_EQ(read_at_least(first.get(), ok.size()), ok);  // kept alive: it holds the one place

  const unique_fd second = transient::test::connect_to(server.at);
  ASSERT_TRUE(second) << "the kernel completes the handshake; the client waits in the backlog";
  ASSERT_TRUE(send_text(second.get(), request));
  EXPECT_EQ(transient::test::read_some(second.get(), 300ms), "") << "served beyond the budget of 1";

  first.reset();  // the session ends, its permit is released, the loop resumes
  EXPECT_EQ(read_at_least(second.get(), ok.size(), 3s), ok);

  // A keep-alive client still connected does not hold the process: the stop closes it.
  server.process.signal(SIGTERM);
  EXPECT_EQ(server.process.wait(5s), 0);
  EXPECT_TRUE(transient::test::closed_by_peer(second.get(), 2s));
}

TEST(ExampleBeastServer, UnderEmfileItDoesNotSpinRecoversAtAReleaseAndStopsCleanly) {
  example_server server(1000);  // a budget far above the descriptor limit: accept meets EMFILE
  ASSERT_NE(server.at.port(), 0);
  const rlimit limit{64, 64};
  ASSERT_EQ(::prlimit(server.process.pid(), RLIMIT_NOFILE, &limit, nullptr), 0);

  // Fill the example's descriptor table: every client it accepts is answered; the first one
  // that is not waits in the backlog while accept fails with EMFILE.
  std::vector<unique_fd> served;
  unique_fd waiting;
  for (int i = 0; i < 80 && !waiting; ++i) {
    unique_fd c = transient::test::connect_to(server.at);
    ASSERT_TRUE(c) << i;
    ASSERT_TRUE(send_text(c.get(), request)) << i;
    if (read_at_least(c.get(), ok.size(), 500ms) == ok) {
      served.push_back(std::move(c));
    } else {
      waiting = std::move(c);
    }
  }
  ASSERT_TRUE(waiting) << "80 clients were served under a limit of 64 descriptors";
  EXPECT_GT(served.size(), 40U);
  EXPECT_LT(served.size(), 64U);

  // Exhausted: the loop backs off (up to 1 s between tries); a spinning loop would use a core.
  const long before = server.process.cpu_ticks();
  std::this_thread::sleep_for(1500ms);
  const long after = server.process.cpu_ticks();
  ASSERT_GE(before, 0);
  EXPECT_LE(after - before, 15) << "ticks of CPU in 1.5 s while exhausted (a spin uses about 150)";
  EXPECT_TRUE(transient::test::read_some(waiting.get(), 10ms).empty());

  // A connection closes: its descriptor is free, and the waiting client is served.
  served.pop_back();
  EXPECT_EQ(read_at_least(waiting.get(), ok.size(), 3s), ok) << "the waiting client was not served after a release";

  server.process.signal(SIGTERM);
  EXPECT_EQ(server.process.wait(5s), 0);
  const std::string err = server.process.stderr_text();
  EXPECT_NE(err.find("process_fd_limit (Too many open files)"), std::string::npos) << err;
  EXPECT_NE(err.find("transient: accept stopped cleanly"), std::string::npos) << err;
}

}  // namespace
