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
using namespace transient::test;

// Beast writes the fields in the order the example sets them, Content-Length last.
constexpr std::string_view ok = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
constexpr std::string_view ok_close =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";

// The example on 127.0.0.1 (any free port) with two threads.
const http_example example{TRANSIENT_EXAMPLE_BEAST_SERVER, "beast_server", ok, ok_close, 5s};

TEST(ExampleBeastServer, AnswersKeepAliveRequestsAndStopsCleanlyOnSigterm) {
  expect_keep_alive_answers_and_a_clean_stop(example);
}

TEST(ExampleBeastServer, AtItsBudgetAClientWaitsUntilAConnectionCloses) {
  expect_a_client_waits_at_the_budget(example);
}

TEST(ExampleBeastServer, UnderEmfileItDoesNotSpinRecoversAtAReleaseAndStopsCleanly) {
  example_server server(example.program, example.name,
                        1000);  // a budget far above the descriptor limit: accept meets EMFILE
  ASSERT_NE(server.at.port(), 0);
  const rlimit limit{64, 64};
  ASSERT_EQ(::prlimit(server.process.pid(), RLIMIT_NOFILE, &limit, nullptr), 0);

  filled_table table;
  ASSERT_NO_FATAL_FAILURE(fill_descriptor_table(
      server.at,
      [](int fd) {
        EXPECT_TRUE(send_text(fd, http_get));
        return read_at_least(fd, ok.size(), 500ms) == ok;
      },
      table));
  ASSERT_NO_FATAL_FAILURE(expect_no_spin_while_exhausted(server.process, table));

  // A connection closes: its descriptor is free, and the waiting client is served.
  table.served.pop_back();
  EXPECT_EQ(read_at_least(table.waiting.get(), ok.size(), 3s), ok)
      << "the waiting client was not served after a release";

  server.process.signal(SIGTERM);
  EXPECT_EQ(server.process.wait(5s), 0);
  const std::string err = server.process.stderr_text();
  EXPECT_NE(err.find("process_fd_limit (Too many open files)"), std::string::npos) << err;
  EXPECT_NE(err.find("transient: accept stopped cleanly"), std::string::npos) << err;
}

}  // namespace
