// `transient serve --engine io_uring` and `transient drill --engine io_uring`: the command
// accepts through a ring (the process holds one), serves, stops cleanly, and passes the drill.
// Skipped, saying why, where io_uring is unavailable.
#include <signal.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <optional>
#include <string>
#include <thread>

#include "support/loopback.hpp"
#include "support/run_command.hpp"
#include "support/spawned_process.hpp"
#include "transient/drivers/uring.hpp"

namespace {

using namespace std::chrono_literals;
using testing::HasSubstr;
using transient::unique_fd;

class UringCli : public testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!transient::uring_available(why)) {
      GTEST_SKIP() << "io_uring unavailable: " << why;
    }
  }
};

// The descriptors of `pid` that are io_uring instances.
int rings_of(pid_t pid) {
  int rings = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    std::error_code link_error;
    const auto target = std::filesystem::read_symlink(entry.path(), link_error).string();
    rings += target.find("io_uring") != std::string::npos ? 1 : 0;
  }
  return rings;
}

// As on epoll, a drain lets go of the listener at once: a client arriving meanwhile is
// refused, and the request in flight is still answered.
TEST_F(UringCli, ADrainRefusesNewClientsAtOnce) {
  // The test fixture's serve: serve's own code, with a slow response to hold the drain.
  transient::test::spawned_process serve(TRANSIENT_FIXTURE_PATH, {"serve", "--listen", "127.0.0.1:0", "--engine",
                                                                  "io_uring", "--slow-response", "1500ms"});
  const std::string line = serve.read_line(transient::test::spawned_process::stream::out, 5s);
  ASSERT_EQ(line.rfind("listening on ", 0), 0U) << line << serve.stderr_text();
  const auto at = transient::parse_endpoint(line.substr(13, line.find(' ', 13) - 13));
  const unique_fd slow = transient::test::connect_to(at);
  ASSERT_TRUE(slow && transient::test::send_text(slow.get(), "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"));
  std::this_thread::sleep_for(100ms);  // serve reads it and holds the response back
  serve.signal(SIGTERM);
  bool refused = false;
  for (const auto deadline = std::chrono::steady_clock::now() + 1000ms;
       !refused && std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(10ms)) {
    refused = !transient::test::connect_to(at);
  }
  EXPECT_TRUE(refused) << "new clients still queued 1 s into the drain";
  EXPECT_FALSE(serve.wait(1ms)) << "the slow request still holds the drain";
  EXPECT_THAT(transient::test::read_at_least(slow.get(), 100, 3000ms), HasSubstr("Connection: close\r\n\r\nok"));
  EXPECT_EQ(serve.wait(3000ms), 0);
}

TEST_F(UringCli, ServeAcceptsThroughARingServesAndStopsCleanly) {
  transient::test::spawned_process serve(
      TRANSIENT_CLI_PATH, {"serve", "--listen", "127.0.0.1:0", "--engine", "io_uring", "--threads", "2"});
  const std::string line = serve.read_line(transient::test::spawned_process::stream::out, 5s);
  ASSERT_EQ(line.rfind("listening on ", 0), 0U) << line << serve.stderr_text();
  const std::string address = line.substr(13, line.find(' ', 13) - 13);
  const auto at = transient::parse_endpoint(address);
  EXPECT_EQ(rings_of(serve.pid()), 2) << "one ring per loop";
  for (int i = 0; i < 20; ++i) {
    const unique_fd c = transient::test::connect_to(at);
    const std::string request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    ASSERT_EQ(::send(c.get(), request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
    EXPECT_THAT(transient::test::read_some(c.get(), 2s), HasSubstr("200 OK"));
  }
  serve.signal(SIGTERM);
  EXPECT_EQ(serve.wait(2000ms), 0);
  EXPECT_THAT(serve.stderr_text(), HasSubstr("stopped cleanly"));
}

TEST(UringCliUsage, UnknownEngineIsAUsageError) {
  const auto r = transient::test::run_command(TRANSIENT_CLI_PATH, {"serve", "--engine", "kqueue"}, 5000ms);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--engine"));
  const auto naive = transient::test::run_command(TRANSIENT_FIXTURE_PATH, {"naive", "--engine", "io_uring"}, 5000ms);
  EXPECT_EQ(naive.exit_code, 2) << "the fixture's naive loop runs on epoll only";
  const auto drill = transient::test::run_command(TRANSIENT_CLI_PATH, {"drill", "--engine", "kqueue"}, 5000ms);
  EXPECT_EQ(drill.exit_code, 2);
}

// Every scenario but 11 (fleet), which needs HAProxy (drill_fleet_cli_test runs it).
TEST_F(UringCli, DrillPassesOnIoUring) {
  const auto r = transient::test::run_command(
      TRANSIENT_CLI_PATH, {"drill", "--quick", "--json", "--engine", "io_uring", "--scenarios", "1,2,3,4,5,6,7,8,9,10"},
      60s);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("{\"passed\":true")) << r.out;
}

}  // namespace
