// ctest-labels: threads
// `transient serve` end to end: protocol conformance (pipelining, oversized and malformed
// requests, idle timeout), bad flags, SIGTERM, and systemd's READY=1 after verification; the
// loops run to completion (one thread per loop, one budget for all loops).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <poll.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/loopback.hpp"
#include "support/process_threads.hpp"
#include "support/run_command.hpp"
#include "support/sanitizers.hpp"
#include "support/spawned_process.hpp"

namespace {

using namespace std::chrono_literals;
using namespace transient::test;
using testing::HasSubstr;
using transient::unique_fd;

constexpr std::string_view ok = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";

// A running `transient serve`. Killed when destroyed.
class serve_process : public transient::test::spawned_process {
 public:
  explicit serve_process(std::vector<std::string> args) : spawned_process(TRANSIENT_CLI_PATH, with_serve(args)) {}

  // The address of the first line "listening on ADDRESS (verified)", read within 5 s.
  std::optional<transient::endpoint> listening() {
    const std::string line = read_line(stream::out, 5s);
    const std::string prefix = "listening on ";
    if (line.rfind(prefix, 0) != 0 || line.find(" (verified)") == std::string::npos) {
      return std::nullopt;
    }
    std::error_code ec;
    const auto at =
        transient::parse_endpoint(line.substr(prefix.size(), line.find(' ', prefix.size()) - prefix.size()), ec);
    return ec ? std::nullopt : std::optional(at);
  }

 private:
  static std::vector<std::string> with_serve(std::vector<std::string> args) {
    args.insert(args.begin(), "serve");
    return args;
  }
};

class ServeCli : public testing::Test {
 protected:
  void start(std::vector<std::string> extra = {}) {
    extra.insert(extra.begin(), {"--listen", "127.0.0.1:0"});
    server_ = std::make_unique<serve_process>(extra);
    const auto at = server_->listening();
    ASSERT_TRUE(at.has_value()) << server_->stderr_text();
    at_ = *at;
  }
  std::unique_ptr<serve_process> server_;
  transient::endpoint at_;
};

TEST_F(ServeCli, AnswersPipelinedRequestsInOrderOnOneConnection) {
  start();
  const unique_fd c = transient::test::connect_to(at_);
  ASSERT_TRUE(c);
  ASSERT_TRUE(send_text(
      c.get(),
      "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n"));
  const std::string three = std::string(ok) + std::string(ok) + std::string(ok);
  EXPECT_EQ(read_at_least(c.get(), three.size()), three);
  // The connection stays open (keep-alive) for a fourth request, split across two writes.
  ASSERT_TRUE(send_text(c.get(), "GET /4 HTTP/1.1\r\nHo"));
  EXPECT_EQ(transient::test::read_some(c.get(), 100ms), "");
  ASSERT_TRUE(send_text(c.get(), "st: a\r\n\r\n"));
  EXPECT_EQ(read_at_least(c.get(), ok.size()), ok);
}

TEST_F(ServeCli, MaxConnectionsZeroIsAutoAsInTheLibrary) {
  start({"--max-connections", "0"});
  unique_fd c = transient::test::connect_to(at_);
  ASSERT_TRUE(c);
  ASSERT_TRUE(send_text(c.get(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_EQ(read_at_least(c.get(), ok.size()), ok);
  c.reset();  // the drain would wait for its next request
  server_->signal(SIGTERM);
  EXPECT_EQ(server_->wait(2000ms), 0);
  // The automatic budget fits the descriptor limit: no warning; the stop is said once.
  const std::string err = server_->stderr_text();
  EXPECT_EQ(err.rfind("transient serve: stopped cleanly; descriptors open: ", 0), 0U) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
}

TEST_F(ServeCli, ConnectionCloseIsHonoured) {
  start();
  const unique_fd c = transient::test::connect_to(at_);
  ASSERT_TRUE(send_text(c.get(), "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
  const std::string response = read_at_least(c.get(), 1000);
  EXPECT_THAT(response, HasSubstr("Connection: close\r\n\r\nok"));
  EXPECT_TRUE(transient::test::closed_by_peer(c.get(), 1000ms));
}

TEST_F(ServeCli, OversizedRequestGets400AndClose) {
  start();
  const unique_fd c = transient::test::connect_to(at_);
  ASSERT_TRUE(send_text(c.get(), "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(9000, 'a')));
  const std::string response = read_at_least(c.get(), 1000);
  EXPECT_EQ(response.rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0U) << response;
  EXPECT_THAT(response, HasSubstr("larger than 8192 bytes"));
  EXPECT_TRUE(transient::test::closed_by_peer(c.get(), 2000ms));
}

TEST_F(ServeCli, MalformedRequestGets400AfterEarlierAnswers) {
  start();
  const unique_fd c = transient::test::connect_to(at_);
  ASSERT_TRUE(send_text(c.get(), "GET / HTTP/1.1\r\nHost: a\r\n\r\nGARBAGE\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"));
  const std::string response = read_at_least(c.get(), 4000);
  ASSERT_EQ(response.rfind(std::string(ok) + "HTTP/1.1 400 Bad Request\r\n", 0), 0U) << response;
  EXPECT_THAT(response, HasSubstr("malformed request line"));
  EXPECT_EQ(response.find("ok", ok.size()), std::string::npos) << "nothing is answered after a 400";
  EXPECT_TRUE(transient::test::closed_by_peer(c.get(), 2000ms));
}

TEST_F(ServeCli, IdleConnectionIsClosedAfterTheTimeout) {
  start({"--idle-timeout", "300ms"});
  const unique_fd idle = transient::test::connect_to(at_);
  const unique_fd busy = transient::test::connect_to(at_);
  ASSERT_TRUE(idle && busy);
  const auto start_time = std::chrono::steady_clock::now();
  EXPECT_FALSE(transient::test::closed_by_peer(idle.get(), 150ms)) << "closed before the idle timeout";
  EXPECT_TRUE(transient::test::closed_by_peer(idle.get(), 2000ms)) << "not closed after the idle timeout";
  const auto elapsed = std::chrono::steady_clock::now() - start_time;
  EXPECT_GE(elapsed, 290ms);
  EXPECT_LT(elapsed, 1500ms);
}

// An idle keep-alive connection waits for its next request while serve drains (it may be on
// its way), so the drain here is bounded: the connection is closed at its end.
TEST_F(ServeCli, SigtermStopsCleanly) {
  start({"--drain-timeout", "300ms"});
  const unique_fd c = transient::test::connect_to(at_);
  ASSERT_TRUE(send_text(c.get(), "GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
  EXPECT_EQ(read_at_least(c.get(), ok.size()), ok);
  server_->signal(SIGTERM);
  EXPECT_EQ(server_->wait(2000ms), 0);
  EXPECT_TRUE(transient::test::closed_by_peer(c.get(), 1000ms)) << "open connections are closed at stop";
  const std::string err = server_->stderr_text();
  EXPECT_THAT(err, HasSubstr("transient serve: stopped cleanly"));
  EXPECT_FALSE(transient::test::connect_to(at_)) << "nothing listens after the stop";
}

// The answer to one GET / on a new connection (what arrives within about 2 s, up to ok's size).
std::string answer_to_get(const transient::endpoint& at) {
  const unique_fd c = transient::test::connect_to(at);
  return c && send_text(c.get(), "GET / HTTP/1.1\r\nHost: a\r\n\r\n") ? read_at_least(c.get(), ok.size()) : "";
}

// One GET / on a new connection; true if the answer is `ok`.
bool served(const transient::endpoint& at) { return answer_to_get(at) == ok; }

// Run to completion: a loop accepts and serves its own connections, so --threads N is N
// loop threads (no I/O thread behind the accept loop), the first the main thread, and no
// other: an upgrade's thread starts only when a signal (SIGHUP, SIGUSR2) asks for one.
TEST_F(ServeCli, EachLoopIsOneThreadThatServesWhatItAccepts) {
  for (const char* threads : {"1", "2"}) {
    SCOPED_TRACE(std::string("--threads ") + threads);
    start({"--threads", threads});
    for (int i = 0; i < 20; ++i) {
      ASSERT_TRUE(served(at_)) << "connection " << i;
    }
    // ThreadSanitizer's runtime starts a thread of its own in a process that creates threads.
    // No other thread runs: upgrades start theirs when one is asked for.
    const int loops = std::stoi(threads);
    EXPECT_GE(transient::test::thread_count(server_->pid()), loops);
    EXPECT_LE(transient::test::thread_count(server_->pid()), loops + (transient::test::thread_sanitizer ? 1 : 0));
    server_->signal(SIGTERM);
    EXPECT_EQ(server_->wait(2000ms), 0);
    EXPECT_THAT(server_->stderr_text(), HasSubstr("transient serve: stopped cleanly"));
  }
}

// All loops draw from one budget: with --max-connections 2 and two loops, two held
// connections fill it for both loops, and every further client gets the 503, whichever loop
// the kernel wakes for it; after one held connection closes, a new client is served.
TEST_F(ServeCli, LoopsShareOneBudget) {
  start({"--threads", "2", "--max-connections", "2", "--shed", "503"});
  std::vector<unique_fd> held;
  for (int i = 0; i < 2; ++i) {
    held.push_back(transient::test::connect_to(at_));
    ASSERT_TRUE(send_text(held.back().get(), "GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    ASSERT_EQ(read_at_least(held.back().get(), ok.size()), ok);
  }
  for (int i = 0; i < 6; ++i) {
    const unique_fd c = transient::test::connect_to(at_);
    ASSERT_TRUE(c);
    const std::string response = read_at_least(c.get(), 12);
    EXPECT_EQ(response.rfind("HTTP/1.1 503", 0), 0U) << "client " << i << " got: " << response;
  }
  // Release a place: serve sees the end of stream and closes its side, which this client sees.
  ::shutdown(held.back().get(), SHUT_WR);
  ASSERT_TRUE(transient::test::closed_by_peer(held.back().get(), 5000ms)) << "serve did not close the connection";
  // The place is given back right after that close: until a loop sees it, a client still gets
  // the 503, and then one is served, within a deadline rather than a count of tries (which a
  // loaded machine runs through before serve's loops run at all).
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  std::string answer;
  while (answer != ok && std::chrono::steady_clock::now() < deadline) {
    answer = answer_to_get(at_);
    ASSERT_TRUE(answer == ok || answer.rfind("HTTP/1.1 503", 0) == 0) << "got: " << answer;
  }
  EXPECT_EQ(answer, ok) << "not served after a place was released";
  held.clear();  // the drain would wait for their next requests
  server_->signal(SIGTERM);
  EXPECT_EQ(server_->wait(2000ms), 0);
}

TEST_F(ServeCli, NotifiesSystemdOnlyAfterListening) {
  const std::string path = "/tmp/transient-notify-" + std::to_string(::getpid());
  ::unlink(path.c_str());
  const unique_fd sink(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  path.copy(address.sun_path, path.size());
  ASSERT_EQ(::bind(sink.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
  start();
  ::unsetenv("NOTIFY_SOCKET");
  const std::string message = transient::test::read_some(sink.get(), 2000ms);
  ::unlink(path.c_str());
  EXPECT_EQ(message, "READY=1");
  // By the time READY=1 is sent the port really listens.
  const unique_fd c = transient::test::connect_to(at_);
  EXPECT_TRUE(c);
}

TEST_F(ServeCli, PortRangeHuntsAFreePort) {
  server_ = std::make_unique<serve_process>(std::vector<std::string>{"--port-range", "9100-9199"});
  const auto at = server_->listening();
  ASSERT_TRUE(at.has_value()) << server_->stderr_text();
  EXPECT_GE(at->port(), 9100);
  EXPECT_LE(at->port(), 9199);
  EXPECT_TRUE(at->is_loopback());
}

// The churn of issue 16: RLIMIT_NOFILE 64, a budget of 100, idle connections holding all but
// one descriptor, then 2 rounds of 100 short clients, one after another. Each takes the last
// descriptor and the accept after it fails with EMFILE until it leaves: one pair of lines per
// client without the episode rule. With it: the budget warning, one episode, the stop.
TEST(ServeCliChurn, TwoHundredClientsAtTheDescriptorLimitAreServedWithAtMostFourLines) {
  transient::test::spawned_process serve(
      "/bin/sh",
      {"-c", "ulimit -n 64 && exec \"$0\" serve --listen 127.0.0.1:0 --max-connections 100", TRANSIENT_CLI_PATH});
  const std::string first = serve.read_line(transient::test::spawned_process::stream::out, 5s);
  const std::string prefix = "listening on ";
  ASSERT_EQ(first.rfind(prefix, 0), 0U) << first << serve.stderr_text();
  std::error_code ec;
  const transient::endpoint at =
      transient::parse_endpoint(first.substr(prefix.size(), first.find(' ', prefix.size()) - prefix.size()), ec);
  ASSERT_FALSE(ec) << first;
  const std::string request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  // Idle keep-alive connections until one gets no answer: the descriptors are used up.
  std::vector<unique_fd> idle;
  unique_fd waiting;
  for (int i = 0; i < 100 && !waiting; ++i) {
    unique_fd c = transient::test::connect_to(at);
    ASSERT_TRUE(c);
    ASSERT_TRUE(send_text(c.get(), request));
    if (transient::test::read_some(c.get(), 300ms).empty()) {
      waiting = std::move(c);
    } else {
      idle.push_back(std::move(c));
    }
  }
  ASSERT_TRUE(waiting) << "the server never ran out of descriptors";
  ASSERT_GE(idle.size(), 40U);
  idle.erase(idle.begin());  // one descriptor free: the waiting client is served
  EXPECT_EQ(read_at_least(waiting.get(), ok.size()), ok);
  waiting.reset();
  int served = 0;
  for (int i = 0; i < 200; ++i) {
    const unique_fd c = transient::test::connect_to(at);
    ASSERT_TRUE(c);
    ASSERT_TRUE(send_text(c.get(), "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    served += read_at_least(c.get(), ok.size()).rfind("HTTP/1.1 200 OK\r\n", 0) == 0 ? 1 : 0;
  }
  EXPECT_EQ(served, 200);
  // The episode ends 1 s (the quiet period) after the churn, by the server's timer: no
  // client and no stop is needed for the line.
  std::string err;
  for (int i = 0; i < 10 && err.find("accept recovered") == std::string::npos; ++i) {
    const std::string line = serve.read_line(transient::test::spawned_process::stream::err, 500ms);
    err += line.empty() ? "" : line + "\n";  // empty: nothing within 500 ms
  }
  idle.clear();  // the drain would wait for their next requests
  serve.signal(SIGTERM);
  EXPECT_EQ(serve.wait(5000ms), 0);
  err += serve.stderr_text();
  EXPECT_LE(std::count(err.begin(), err.end(), '\n'), 4) << err;
  const std::string source = "transient: " + at.to_string() + ": ";
  EXPECT_EQ(err.rfind("transient: warning: the connection budget of 100 is more than the descriptors left: "
                      "RLIMIT_NOFILE is 64 and ",
                      0),
            0U)
      << err;
  EXPECT_THAT(err, HasSubstr("\n" + source + "accept degraded: process_fd_limit (Too many open files); live "));
  EXPECT_THAT(err, HasSubstr("\n" + source + "accept recovered after ")) << err;
  EXPECT_THAT(err, testing::ContainsRegex("failures, [0-9]+ flaps\\); live [0-9]+/100, fd limit 64\n"));
  EXPECT_THAT(err, HasSubstr("\ntransient serve: stopped cleanly; descriptors open: "));
}

TEST(ServeCliUsage, BadFlagsGetOneLineAndExitTwo) {
  expect_usage_error("serve", {"--bogus"}, "unknown option '--bogus'");
  expect_usage_error("serve", {"--listen"}, "--listen needs a value");
  expect_usage_error("serve", {"--listen", "127.0.0.1:99999"}, "out of range");
  expect_usage_error("serve", {"--max-connections", "-1"},
                     "--max-connections: '-1' is not 'auto' or a number from 0 (auto)");
  expect_usage_error("serve", {"--max-connections", "many"}, "'many' is not 'auto' or a number");
  expect_usage_error("serve", {"--threads", "0"}, "--threads: '0'");
  expect_usage_error("serve", {"--shed", "drop"}, "'drop' is not queue, close, reset or 503");
  expect_usage_error("serve", {"--stall-timeout", "soon"}, "'soon' is not a duration");
  expect_usage_error("serve", {"--idle-timeout", "0"}, "--idle-timeout");
  expect_usage_error("serve", {"--port-range", "9100-9000"}, "not a range FIRST-LAST");
  expect_usage_error("serve", {"--metrics", "0.0.0.0:9090"}, "not a loopback address");
  expect_usage_error("serve", {"--agent", "somewhere"}, "--agent: ");
  expect_usage_error("serve", {"extra"}, "unexpected argument 'extra'");
}

// The test knobs belong to the test fixture (tools/fixture): the production command refuses
// them as it refuses any unknown option.
TEST(ServeCliUsage, TheTestKnobsAreUsageErrors) {
  expect_usage_error("serve", {"--policy", "naive"}, "unknown option '--policy'");
  expect_usage_error("serve", {"--policy", "transient"}, "unknown option '--policy'");
  expect_usage_error("serve", {"--leak-per-connection", "4"}, "unknown option '--leak-per-connection'");
  expect_usage_error("serve", {"--slow-response", "300ms"}, "unknown option '--slow-response'");
}

TEST(ServeCliUsage, HelpNamesEveryOptionAndNoTestKnob) {
  const auto r = transient::test::run_command(TRANSIENT_CLI_PATH, {"serve", "--help"}, 5000ms);
  EXPECT_EQ(r.exit_code, 0);
  for (const char* option : {"--listen", "--port-range", "--max-connections", "--threads", "--shed", "--stall-timeout",
                             "--idle-timeout", "--metrics", "--agent", "--engine"}) {
    EXPECT_THAT(r.out, HasSubstr(option));
  }
  for (const char* knob : {"--policy", "naive", "--slow-response", "/slow"}) {
    EXPECT_THAT(r.out, testing::Not(HasSubstr(knob)));
  }
  // The help is wrapped to the terminal's width: the sentence is checked with its spaces joined.
  std::string joined;
  for (const char c : r.out) {
    if (!(std::isspace(static_cast<unsigned char>(c)) != 0 && !joined.empty() && joined.back() == ' ')) {
      joined += std::isspace(static_cast<unsigned char>(c)) != 0 ? ' ' : c;
    }
  }
  EXPECT_THAT(joined, HasSubstr("0 also means auto, as in the library"));
  EXPECT_THAT(r.out, testing::Not(HasSubstr("leak")));
}

}  // namespace
