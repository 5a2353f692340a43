// examples/own_loop end to end, under real descriptor exhaustion: the example (a user's
// epoll loop with a transient::acceptor, echoing run-to-completion) gets RLIMIT_NOFILE 64
// through prlimit(2) once it listens, and a budget far above that, so accept fails with
// EMFILE. The loop must not spin while exhausted, must serve the waiting client once a
// connection closes, and must stop cleanly on SIGTERM.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "support/example_server.hpp"
#include "support/loopback.hpp"
#include "support/spawned_process.hpp"
#include "transient/sockets/endpoint.hpp"

namespace {

using namespace std::chrono_literals;
using namespace transient::test;

// Sends "ping" and expects `expected` back (what was sent before, unanswered, comes first).
bool echoes(int fd, std::chrono::milliseconds timeout, const std::string& expected = "ping") {
  if (::send(fd, "ping", 4, MSG_NOSIGNAL) != 4) {
    return false;
  }
  std::string got;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (got.size() < expected.size() && std::chrono::steady_clock::now() < deadline) {
    got += transient::test::read_some(fd, 50ms);
  }
  return got == expected;
}

TEST(ExampleOwnLoop, UnderEmfileItDoesNotSpinRecoversAtAReleaseAndStopsCleanly) {
  spawned_process example(TRANSIENT_EXAMPLE_OWN_LOOP, {"0", "1000", "127.0.0.1"});
  const std::string line = example.read_line(spawned_process::stream::err, 5s);
  const std::string prefix = "own_loop: listening on ";
  ASSERT_EQ(line.rfind(prefix, 0), 0U) << line;
  const transient::endpoint at = transient::parse_endpoint(line.substr(prefix.size()));
  const rlimit limit{64, 64};
  ASSERT_EQ(::prlimit(example.pid(), RLIMIT_NOFILE, &limit, nullptr), 0);

  filled_table table;
  ASSERT_NO_FATAL_FAILURE(fill_descriptor_table(
      at, [](int fd) { return echoes(fd, 500ms); }, table));
  ASSERT_NO_FATAL_FAILURE(expect_no_spin_while_exhausted(example, table));

  // A connection closes: its descriptor and its place are free, and the waiting client is served.
  table.served.pop_back();
  const auto released = std::chrono::steady_clock::now();
  EXPECT_TRUE(echoes(table.waiting.get(), 3s, "pingping")) << "the waiting client was not served after a release";
  // The release wakes the paused loop at once; the backoff timer alone would take up to 1 s.
  EXPECT_LT(std::chrono::steady_clock::now() - released, 900ms);

  example.signal(SIGTERM);
  EXPECT_EQ(example.wait(5s), std::optional<int>(0));
  const std::string err = example.stderr_text();
  EXPECT_NE(err.find("process_fd_limit (Too many open files)"), std::string::npos) << err;
  EXPECT_NE(err.find("own_loop: stopped cleanly"), std::string::npos) << err;
}

}  // namespace
