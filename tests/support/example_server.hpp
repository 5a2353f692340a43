// An example server (examples/asio_server.cpp, beast_server.cpp, serve_on_loop.cpp) run as a
// child on 127.0.0.1, any free port, two threads, and the address it says it listens on; and
// the scenarios the examples' tests share: keep-alive answers and a clean stop, a client held
// at the budget until a release, and real descriptor exhaustion without a spin.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "support/loopback.hpp"
#include "support/spawned_process.hpp"
#include "transient/sockets/endpoint.hpp"

namespace transient::test {

struct example_server {
  spawned_process process;
  transient::endpoint at;  ///< Port 0 if the example did not say where it listens.

  /// Starts `program` with `max_connections` and reads "`name`: listening on ADDRESS with 2
  /// thread(s)" from its stderr (at most 5 s).
  example_server(const std::string& program, const std::string& name, unsigned max_connections)
      : process(program, {"0", "2", std::to_string(max_connections), "127.0.0.1"}) {
    const std::string line = process.read_line(spawned_process::stream::err, std::chrono::seconds(5));
    const std::string prefix = name + ": listening on ";
    std::error_code ec;
    if (line.rfind(prefix, 0) == 0) {
      at = transient::parse_endpoint(line.substr(prefix.size(), line.find(' ', prefix.size()) - prefix.size()), ec);
    }
    EXPECT_TRUE(line.rfind(prefix, 0) == 0 && !ec) << line;
  }
};

/// An HTTP example (asio_server, beast_server) and how it answers a plain GET.
struct http_example {
  const char* program;                    ///< The built example.
  std::string name;                       ///< Its name, as its lines start.
  std::string_view ok;                    ///< Its answer to a keep-alive GET.
  std::string_view ok_close;              ///< Its answer to a GET with "Connection: close".
  std::chrono::milliseconds stop_within;  ///< How long a SIGTERM stop may take.
};

/// A plain keep-alive GET.
inline constexpr std::string_view http_get = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";

/// Several requests on one connection are answered, "Connection: close" closes it, and SIGTERM
/// stops the example cleanly.
inline void expect_keep_alive_answers_and_a_clean_stop(const http_example& example) {
  example_server server(example.program, example.name, 0);
  ASSERT_NE(server.at.port(), 0);
  const unique_fd c = connect_to(server.at);
  ASSERT_TRUE(c);
  for (int i = 0; i < 3; ++i) {  // one connection, several requests
    ASSERT_TRUE(send_text(c.get(), http_get));
    EXPECT_EQ(read_at_least(c.get(), example.ok.size()), example.ok) << "request " << i;
  }
  ASSERT_TRUE(send_text(c.get(), "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
  EXPECT_EQ(read_at_least(c.get(), example.ok_close.size()), example.ok_close);
  EXPECT_TRUE(closed_by_peer(c.get(), std::chrono::seconds(2))) << "Connection: close is honoured";

  server.process.signal(SIGTERM);
  EXPECT_EQ(server.process.wait(example.stop_within), 0);
  const std::string err = server.process.stderr_text();
  EXPECT_NE(err.find("transient: accept stopped cleanly"), std::string::npos) << err;
}

/// What a client sends and the answer it expects.
struct exchange {
  std::string_view request;
  std::string_view answer;
};

/// With a budget of 1 (the example at `at`): a first client is answered and holds the one
/// place, a second one waits in the backlog unanswered, and is answered once the first one
/// closes. The second client, still connected, is left in `second`.
inline void expect_a_client_waits_until_a_release(const endpoint& at, exchange first_client, exchange second_client,
                                                  unique_fd& second) {
  unique_fd first = connect_to(at);
  ASSERT_TRUE(send_text(first.get(), first_client.request));
  ASSERT_EQ(read_at_least(first.get(), first_client.answer.size()), first_client.answer);  // it holds the one place

  second = connect_to(at);
  ASSERT_TRUE(second) << "the kernel completes the handshake; the client waits in the backlog";
  ASSERT_TRUE(send_text(second.get(), second_client.request));
  EXPECT_EQ(read_some(second.get(), std::chrono::milliseconds(300)), "") << "served beyond the budget of 1";

  first.reset();  // the session ends, its permit is released, the loop resumes
  EXPECT_EQ(read_at_least(second.get(), second_client.answer.size(), std::chrono::seconds(3)), second_client.answer);
}

/// An HTTP example at its budget of 1 holds a second client until the first closes; a
/// keep-alive client still connected does not hold the process: the stop closes it.
inline void expect_a_client_waits_at_the_budget(const http_example& example) {
  example_server server(example.program, example.name, 1);
  ASSERT_NE(server.at.port(), 0);
  unique_fd second;
  ASSERT_NO_FATAL_FAILURE(
      expect_a_client_waits_until_a_release(server.at, {http_get, example.ok}, {http_get, example.ok}, second));
  server.process.signal(SIGTERM);
  EXPECT_EQ(server.process.wait(example.stop_within), 0);
  EXPECT_TRUE(closed_by_peer(second.get(), std::chrono::seconds(2)));
}

/// The clients an exhausted example answered, and the first one it did not.
struct filled_table {
  std::vector<unique_fd> served;
  unique_fd waiting;
};

/// Connects clients to the example at `at`, limited to 64 descriptors, until one is not
/// `answered` within 500 ms: every client it accepts is answered; the first one that is not
/// waits in the backlog while accept fails with EMFILE.
inline void fill_descriptor_table(const endpoint& at, const std::function<bool(int fd)>& answered,
                                  filled_table& table) {
  for (int i = 0; i < 80 && !table.waiting; ++i) {
    unique_fd c = connect_to(at);
    ASSERT_TRUE(c) << i;
    if (answered(c.get())) {
      table.served.push_back(std::move(c));
    } else {
      table.waiting = std::move(c);
    }
  }
  ASSERT_TRUE(table.waiting) << "80 clients were served under a limit of 64 descriptors";
  EXPECT_GT(table.served.size(), 40U);
  EXPECT_LT(table.served.size(), 64U);
}

/// While exhausted, the example's loop backs off (up to 1 s between tries) and leaves the
/// waiting client unanswered; a spinning loop would use a core.
inline void expect_no_spin_while_exhausted(const spawned_process& example, const filled_table& table) {
  const long before = example.cpu_ticks();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const long after = example.cpu_ticks();
  ASSERT_GE(before, 0);
  EXPECT_LE(after - before, 15) << "ticks of CPU in 1.5 s while exhausted (a spin uses about 150)";
  EXPECT_TRUE(read_some(table.waiting.get(), std::chrono::milliseconds(10)).empty());
}

}  // namespace transient::test
