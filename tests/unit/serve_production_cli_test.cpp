// ctest-labels: threads
// `transient serve` in production, end to end: the request head timeout (slow clients), the
// per-peer cap (several loopback addresses), /healthz and /readyz through accepting,
// backpressure, degraded, stalled and stopped, systemd's STATUS= and WATCHDOG=1 on a fake
// NOTIFY_SOCKET, the graceful drain on SIGTERM, and socket activation by
// systemd-socket-activate.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/loopback.hpp"
#include "support/resident_memory.hpp"
#include "support/run_command.hpp"
#include "support/serve_process.hpp"
#include "support/spawned_process.hpp"

namespace {

using namespace std::chrono_literals;
using namespace transient::test;
using clock_type = std::chrono::steady_clock;
using testing::HasSubstr;
using transient::endpoint;
using transient::unique_fd;

constexpr std::string_view ok = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
constexpr std::string_view get = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
constexpr std::string_view get_slow = "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n";

// A connection from `source` (a loopback address, port chosen by the kernel) to `to`.
unique_fd connect_from(const char* source, const endpoint& to) {
  unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in local{};
  local.sin_family = AF_INET;
  ::inet_pton(AF_INET, source, &local.sin_addr);
  sockaddr_storage remote{};
  const socklen_t length = to.to_sockaddr(remote);
  if (!fd || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&local), sizeof local) != 0 ||
      ::connect(fd.get(), reinterpret_cast<sockaddr*>(&remote), length) != 0) {
    return {};
  }
  return fd;
}

// Queries `path` on `fd` every 20 ms until the status is `status` and the body names `state`,
// for at most `timeout`; the last answer.
std::pair<int, std::string> query_until(int fd, const std::string& path, int status, const std::string& state,
                                        std::chrono::milliseconds timeout) {
  const auto deadline = clock_type::now() + timeout;
  std::pair<int, std::string> r = query(fd, path);
  while (!(r.first == status && r.second.find("\"state\":\"" + state + "\"") != std::string::npos) &&
         clock_type::now() < deadline && r.first != 0) {
    std::this_thread::sleep_for(20ms);
    r = query(fd, path);
  }
  return r;
}

// The value of the Prometheus sample `name` on the metrics connection `fd` (-1: absent).
double metric(int fd, const std::string& name) {
  const std::string text = query(fd, "/metrics").second;
  const std::size_t at = text.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + name.size() + 2));
}

// A connection to `at` with a /slow request in flight: it is first served a plain request, so
// it is surely accepted and its next request is read at once. Empty if any step failed.
unique_fd slow_request_in_flight(const endpoint& at) {
  unique_fd fd = transient::test::connect_to(at);
  if (!fd || !send_text(fd.get(), get) || read_response(fd.get(), 2000ms) != ok || !send_text(fd.get(), get_slow)) {
    return {};
  }
  std::this_thread::sleep_for(100ms);  // serve reads it and holds the response back
  return fd;
}

// Milliseconds until the peer closes `fd` (at most `timeout`; nullopt if it did not).
std::optional<double> ms_until_closed(int fd, clock_type::time_point since, std::chrono::milliseconds timeout) {
  if (!transient::test::closed_by_peer(fd, timeout)) {
    return std::nullopt;
  }
  return std::chrono::duration<double, std::milli>(clock_type::now() - since).count();
}

long count_prefix(const std::vector<std::string>& messages, std::string_view prefix) {
  return std::count_if(messages.begin(), messages.end(), [&](const std::string& m) { return m.rfind(prefix, 0) == 0; });
}

TEST(ServeProduction, HeaderTimeoutClosesSilentAndTricklingClientsButNotActiveOnes) {
  serve_process serve({"--header-timeout", "400ms", "--metrics", "127.0.0.1:0"});
  ASSERT_TRUE(serve.at && serve.metrics) << serve.stderr_text();
  const unique_fd scraper = transient::test::connect_to(*serve.metrics);
  const auto start = clock_type::now();
  std::vector<unique_fd> silent;
  for (int i = 0; i < 5; ++i) {
    silent.push_back(transient::test::connect_to(*serve.at));
    ASSERT_TRUE(silent.back());
  }
  const unique_fd trickling = transient::test::connect_to(*serve.at);
  const unique_fd active = transient::test::connect_to(*serve.at);
  ASSERT_TRUE(trickling && active);
  // The trickling client sends a header line every 100 ms: bytes do not reset the timer.
  // The active one sends a request every 150 ms: each response restarts it.
  ASSERT_TRUE(send_text(trickling.get(), "GET / HTTP/1.1\r\n"));
  for (int i = 0; i < 4; ++i) {
    std::this_thread::sleep_for(100ms);
    (void)send_text(trickling.get(), "X-Slow: " + std::to_string(i) + "\r\n");
    if (i % 2 == 0) {
      ASSERT_TRUE(send_text(active.get(), get));
      ASSERT_EQ(read_response(active.get(), 1000ms), ok);
    }
  }
  for (const auto& c : silent) {
    const auto silent_ms = ms_until_closed(c.get(), start, 2000ms);
    ASSERT_TRUE(silent_ms) << "a silent client was not closed at the header timeout";
    EXPECT_GE(*silent_ms, 390);
    EXPECT_LT(*silent_ms, 1500);
  }
  const auto trickling_ms = ms_until_closed(trickling.get(), start, 2000ms);
  ASSERT_TRUE(trickling_ms) << "the trickling client was not closed at the header timeout";
  EXPECT_GE(*trickling_ms, 390);
  EXPECT_LT(*trickling_ms, 1500);
  // The active client's last response came at about 300 ms: it is still open after the
  // others closed, then its next head is late too.
  const auto last_response = clock_type::now();
  ASSERT_TRUE(send_text(active.get(), get));
  ASSERT_EQ(read_response(active.get(), 1000ms), ok) << "an active client was closed";
  const auto active_ms = ms_until_closed(active.get(), last_response, 2000ms);
  ASSERT_TRUE(active_ms);
  EXPECT_GE(*active_ms, 390);
  double counted = -1;
  for (int i = 0; i < 50 && counted != 7; ++i) {  // published within 100 ms
    std::this_thread::sleep_for(20ms);
    counted = metric(scraper.get(), "transient_serve_header_timeouts_total");
  }
  EXPECT_EQ(counted, 7);
  serve.signal(SIGTERM);
  EXPECT_EQ(serve.wait(3000ms), 0);
  // Logged as state changes (a start, an end with the count), not a line per client: the
  // six closed together are one run; the active client's late head joins it or starts another.
  const std::string err = serve.stderr_text();
  std::size_t starts = 0;
  for (std::size_t at = err.find("header timeout: closing"); at != std::string::npos;
       at = err.find("header timeout: closing", at + 1)) {
    ++starts;
  }
  EXPECT_GE(starts, 1U) << err;
  EXPECT_LE(starts, 2U) << err;
  EXPECT_THAT(err, HasSubstr("header timeout: closing connections that send no complete request head, or no body "
                             "after it, within 400ms"));
  unsigned ended = 0;
  for (std::size_t at = err.find("header timeouts ended: "); at != std::string::npos;
       at = err.find("header timeouts ended: ", at + 1)) {
    ended += static_cast<unsigned>(std::stoul(err.substr(at + 23)));
  }
  EXPECT_EQ(ended, 7U) << err;
}

TEST(ServeProduction, PerPeerCapLeavesRoomForOtherAddresses) {
  for (const char* shed : {"queue", "503"}) {
    SCOPED_TRACE(std::string("--shed ") + shed);
    serve_process serve({"--max-connections", "8", "--max-per-peer", "2", "--shed", shed, "--metrics", "127.0.0.1:0"});
    ASSERT_TRUE(serve.at && serve.metrics) << serve.stderr_text();
    std::vector<unique_fd> greedy;
    for (int i = 0; i < 5; ++i) {
      greedy.push_back(connect_from("127.0.0.2", *serve.at));
      ASSERT_TRUE(greedy.back());
    }
    int closed = 0;
    int refused_with_503 = 0;
    for (const auto& c : greedy) {
      const std::string got = transient::test::read_some(c.get(), 300ms);
      refused_with_503 += got.rfind("HTTP/1.1 503", 0) == 0 ? 1 : 0;
      closed += transient::test::closed_by_peer(c.get(), 200ms) ? 1 : 0;
    }
    EXPECT_EQ(closed, 3) << "the peer's connections beyond 2 are shed";
    EXPECT_EQ(refused_with_503, std::string(shed) == "503" ? 3 : 0);
    // Another address is served at once, although the greedy one still holds two places.
    const auto start = clock_type::now();
    unique_fd other = connect_from("127.0.0.3", *serve.at);
    ASSERT_TRUE(other && send_text(other.get(), get));
    EXPECT_EQ(read_response(other.get(), 1000ms), ok);
    EXPECT_LT(clock_type::now() - start, 500ms);
    const unique_fd scraper = transient::test::connect_to(*serve.metrics);
    double shed_by_peer = -1;
    for (int i = 0; i < 50 && shed_by_peer != 3; ++i) {
      std::this_thread::sleep_for(20ms);
      shed_by_peer = metric(scraper.get(), "transient_shed_total{reason=\"peer_limit\"}");
    }
    EXPECT_EQ(shed_by_peer, 3);
    greedy.clear();  // the drain would wait for their next requests
    other.reset();
    serve.signal(SIGTERM);
    EXPECT_EQ(serve.wait(3000ms), 0);
  }
}

// accepting -> backpressure -> accepting -> stopped (SIGTERM: 503 at once, while a slow
// response is still in flight, which then completes).
TEST(ServeProduction, HealthAndReadinessFollowTheServer) {
  serve_process serve({"--max-connections", "2", "--metrics", "127.0.0.1:0", "--slow-response", "800ms"},
                      TRANSIENT_FIXTURE_PATH);
  ASSERT_TRUE(serve.at && serve.metrics) << serve.stderr_text();
  const unique_fd probe = transient::test::connect_to(*serve.metrics);
  auto r = query(probe.get(), "/healthz");
  EXPECT_EQ(r.first, 200);
  EXPECT_EQ(r.second, "{\"state\":\"accepting\",\"reason\":\"\"}\n");
  EXPECT_EQ(query(probe.get(), "/readyz").first, 200);

  std::vector<unique_fd> held;
  for (int i = 0; i < 2; ++i) {
    held.push_back(transient::test::connect_to(*serve.at));
    ASSERT_TRUE(send_text(held.back().get(), get));
    ASSERT_EQ(read_response(held.back().get(), 1000ms), ok);
  }
  unique_fd waiting = transient::test::connect_to(*serve.at);  // in the backlog: the budget is full
  ASSERT_TRUE(waiting && send_text(waiting.get(), get));
  r = query_until(probe.get(), "/readyz", 503, "backpressure", 2000ms);
  EXPECT_EQ(r.first, 503) << r.second;
  EXPECT_THAT(r.second, HasSubstr("connection budget full (2 of 2)"));
  r = query(probe.get(), "/healthz");
  EXPECT_EQ(r.first, 200) << "backpressure is healthy";
  EXPECT_THAT(r.second, HasSubstr("\"state\":\"backpressure\""));

  held.pop_back();
  EXPECT_EQ(read_response(waiting.get(), 1000ms), ok) << "the waiting client is served after a release";
  waiting.reset();  // one of two places taken: accepting again
  r = query_until(probe.get(), "/readyz", 200, "accepting", 2000ms);
  EXPECT_EQ(r.first, 200) << r.second;

  // Only GET and HEAD; HEAD has the status without a body.
  ASSERT_TRUE(send_text(probe.get(), "POST /readyz HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"));
  EXPECT_THAT(read_response(probe.get(), 1000ms), HasSubstr("405 Method Not Allowed\r\nAllow: GET, HEAD"));
  ASSERT_TRUE(send_text(probe.get(), "HEAD /readyz HTTP/1.1\r\nHost: a\r\n\r\n"));
  const std::string head = transient::test::read_some(probe.get(), 1000ms);
  EXPECT_EQ(head.rfind("HTTP/1.1 200 OK\r\n", 0), 0U) << head;
  EXPECT_EQ(head.substr(head.size() - 4), "\r\n\r\n") << head;

  const unique_fd slow = slow_request_in_flight(*serve.at);  // a place was freed above
  ASSERT_TRUE(slow);
  held.clear();  // the drain would wait for its next request
  const auto sent = clock_type::now();
  serve.signal(SIGTERM);
  r = query_until(probe.get(), "/readyz", 503, "stopped", 500ms);
  EXPECT_EQ(r.first, 503) << r.second;
  EXPECT_LT(clock_type::now() - sent, 500ms);
  EXPECT_THAT(r.second, HasSubstr("stopping: draining "));
  EXPECT_EQ(query(probe.get(), "/healthz").first, 503);
  EXPECT_EQ(transient::test::read_some(slow.get(), 1ms), "") << "the slow response is still in flight";
  EXPECT_THAT(read_response(slow.get(), 2000ms), HasSubstr("Connection: close\r\n\r\nok"));
  EXPECT_EQ(serve.wait(3000ms), 0);
}

// A leak exhausts the descriptors: degraded (alive, not ready), then stalled (503 on both)
// while a slow request still finishes, then exit 1 with the diagnosis.
TEST(ServeProduction, HealthShowsDegradedThenStalledWhenDescriptorsLeak) {
  const std::unique_ptr<serve_process> started =
      serve_under_fd_limit(64,
                           {"--leak-per-connection", "4", "--stall-timeout", "1s", "--metrics", "127.0.0.1:0",
                            "--slow-response", "5s", "--fd-limit", "keep"},
                           TRANSIENT_FIXTURE_PATH);
  serve_process& serve = *started;
  ASSERT_TRUE(serve.at && serve.metrics) << serve.stderr_text();
  const unique_fd probe = transient::test::connect_to(*serve.metrics);  // probes reuse it: no descriptor needed
  EXPECT_EQ(query(probe.get(), "/healthz").first, 200);
  const unique_fd slow = transient::test::connect_to(*serve.at);
  ASSERT_TRUE(slow && send_text(slow.get(), get_slow));
  const unique_fd pending = exhaust_by_leak(*serve.at);
  ASSERT_TRUE(pending) << "the leak never exhausted the descriptors";
  auto r = query_until(probe.get(), "/readyz", 503, "degraded", 1000ms);
  EXPECT_EQ(r.first, 503) << r.second;
  EXPECT_THAT(r.second, HasSubstr("Too many open files"));
  EXPECT_EQ(query(probe.get(), "/healthz").first, 200) << "degraded is still alive";
  r = query_until(probe.get(), "/healthz", 503, "stalled", 3000ms);
  EXPECT_EQ(r.first, 503) << r.second;
  EXPECT_THAT(r.second, HasSubstr("no progress"));
  EXPECT_EQ(query(probe.get(), "/readyz").first, 503);
  EXPECT_THAT(read_response(slow.get(), 6000ms), HasSubstr("\r\n\r\nok")) << "the request in flight is answered";
  EXPECT_EQ(serve.wait(3000ms), 1);
  EXPECT_THAT(serve.stderr_text(), HasSubstr("stopped: stalled"));
}

TEST(ServeProduction, WatchdogPingsWhileHealthyAndStopsWhenStalled) {
  fake_notify_socket notify("prod");
  ASSERT_TRUE(notify.ok());
  ::setenv("WATCHDOG_USEC", "200000", 1);  // a ping every 100 ms
  const std::unique_ptr<serve_process> started = serve_under_fd_limit(
      64, {"--leak-per-connection", "4", "--stall-timeout", "1500ms", "--fd-limit", "keep"}, TRANSIENT_FIXTURE_PATH);
  ::unsetenv("WATCHDOG_USEC");
  serve_process& serve = *started;
  ASSERT_TRUE(serve.at) << serve.stderr_text();
  const std::vector<std::string> healthy = notify.read_for(600ms);
  ASSERT_FALSE(healthy.empty());
  EXPECT_EQ(healthy.front(), "READY=1");
  EXPECT_EQ(count_prefix(healthy, "STATUS=accepting"), 1);
  EXPECT_GE(count_prefix(healthy, "WATCHDOG=1"), 3) << "healthy and idle: pings every 100 ms";

  const unique_fd pending = exhaust_by_leak(*serve.at);
  ASSERT_TRUE(pending);
  // The first failed accept says degraded, yet the leak's last connections may still make
  // progress: a close frees a descriptor, the next accept takes it and is answered. Once the
  // client has waited 300 ms for an answer that never came, nothing moves any more.
  std::vector<std::string> all = notify.read_queued();
  const auto quiet_from = static_cast<std::ptrdiff_t>(all.size());
  const std::vector<std::string> after = notify.read_for(3000ms);
  all.insert(all.end(), after.begin(), after.end());
  const auto degraded =
      std::find_if(all.begin(), all.end(), [](const std::string& m) { return m.rfind("STATUS=degraded", 0) == 0; });
  const auto stalled =
      std::find_if(all.begin(), all.end(), [](const std::string& m) { return m.rfind("STATUS=stalled", 0) == 0; });
  ASSERT_NE(degraded, all.end()) << testing::PrintToString(all);
  ASSERT_NE(stalled, all.end()) << testing::PrintToString(all);
  EXPECT_LT(degraded, stalled);
  // Degraded without progress: at most the ping for the progress just before; none once stalled.
  const auto still = std::min(std::max(degraded, all.begin() + quiet_from), stalled);
  EXPECT_LE(std::count(still, stalled, "WATCHDOG=1"), 1) << testing::PrintToString(all);
  EXPECT_EQ(std::count(stalled, all.end(), "WATCHDOG=1"), 0) << testing::PrintToString(all);
  EXPECT_EQ(serve.wait(3000ms), 1);
}

// The drain answers the request in flight and, on an idle keep-alive connection, the next
// request (its client may have sent it as the drain began): both with Connection: close.
TEST(ServeProduction, DrainFinishesTheResponseInFlightAndAnswersIdleConnectionsNextRequest) {
  serve_process serve({"--slow-response", "600ms"}, TRANSIENT_FIXTURE_PATH);
  ASSERT_TRUE(serve.at) << serve.stderr_text();
  const unique_fd idle = transient::test::connect_to(*serve.at);
  ASSERT_TRUE(idle && send_text(idle.get(), get));
  ASSERT_EQ(read_response(idle.get(), 1000ms), ok);
  const unique_fd slow = slow_request_in_flight(*serve.at);
  ASSERT_TRUE(slow);
  const auto sent = clock_type::now();
  serve.signal(SIGTERM);
  const std::string last_ok =
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
  const std::string response = read_response(slow.get(), 2000ms);
  const auto answered_ms = std::chrono::duration<double, std::milli>(clock_type::now() - sent).count();
  EXPECT_EQ(response, last_ok);
  EXPECT_GE(answered_ms, 300) << "answered after SIGTERM, when its time came";
  EXPECT_TRUE(transient::test::closed_by_peer(slow.get(), 1000ms));
  // The slow response said Connection: close, so the loop drains: the idle connection is open,
  // and its next request is its last.
  ASSERT_TRUE(send_text(idle.get(), get)) << "the idle keep-alive connection was closed by the drain";
  EXPECT_EQ(read_response(idle.get(), 2000ms), last_ok);
  EXPECT_TRUE(transient::test::closed_by_peer(idle.get(), 1000ms));
  EXPECT_EQ(serve.wait(2000ms), 0);
  EXPECT_FALSE(transient::test::connect_to(*serve.at)) << "nothing listens after the drain";
  EXPECT_THAT(serve.stderr_text(), HasSubstr("stopped cleanly"));
}

TEST(ServeProduction, DrainTimeoutBoundsTheWait) {
  serve_process serve({"--slow-response", "5s", "--drain-timeout", "300ms"}, TRANSIENT_FIXTURE_PATH);
  ASSERT_TRUE(serve.at) << serve.stderr_text();
  const unique_fd slow = slow_request_in_flight(*serve.at);
  ASSERT_TRUE(slow);
  const auto sent = clock_type::now();
  serve.signal(SIGTERM);
  const auto closed_ms = ms_until_closed(slow.get(), sent, 2000ms);
  ASSERT_TRUE(closed_ms);
  EXPECT_GE(*closed_ms, 280);
  EXPECT_LT(*closed_ms, 1500);
  EXPECT_EQ(serve.wait(2000ms), 0);
  EXPECT_THAT(serve.stderr_text(), HasSubstr("drain timeout (300ms): closing 1 connection(s) still in flight"));
}

// A SIGTERM at any moment of the start-up ends serve: before the handler exists it kills it;
// afterwards serve stops cleanly, also when the signal comes before its loops exist (it is
// kept for them). The delays sweep the start-up, listener and verification included.
// What each thread of `pid` is doing: name, state and the kernel function it waits in.
std::string threads_of(pid_t pid) {
  std::string out;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream stat(task.path() / "stat");
    std::ifstream wchan(task.path() / "wchan");
    std::string line;
    std::string waits;
    std::getline(stat, line);
    std::getline(wchan, waits);
    out += "\n  " + line.substr(0, line.find(' ', line.find(')') + 2)) + " in " + waits;
  }
  return out;
}

TEST(ServeProduction, ASigtermDuringStartUpIsNeverLost) {
  for (int i = 0; i < 40; ++i) {
    transient::test::spawned_process serve(TRANSIENT_CLI_PATH, {"serve", "--listen", "127.0.0.1:0"});
    const auto delay = std::chrono::microseconds(250 * i);  // 0 to 9.75 ms
    std::this_thread::sleep_for(delay);
    serve.signal(SIGTERM);
    // A lost signal leaves serve running for good; 10 s only leaves room for a sanitizer's
    // start-up and exit on a loaded machine (a clean run takes milliseconds).
    const auto status = serve.wait(10000ms);
    ASSERT_TRUE(status) << "a SIGTERM " << delay.count()
                        << " us after the start was lost; its threads:" << threads_of(serve.pid());
    EXPECT_TRUE(*status == 0 || *status == -1) << "exit status " << *status << " after " << delay.count() << " us";
  }
}

constexpr const char* socket_activate = "/usr/bin/systemd-socket-activate";

// A loopback port free a moment ago (the kernel's choice for port 0).
std::uint16_t free_port() {
  const unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return 0;
  }
  return ntohs(address.sin_port);
}

// systemd-socket-activate listens, and on the first connection starts serve with the socket
// as descriptor 3 (LISTEN_FDS=1): the client that triggered it gets its answer.
TEST(ServeProduction, AnswersOnTheSocketSystemdPasses) {
  if (::access(socket_activate, X_OK) != 0) {
    GTEST_SKIP() << socket_activate << " is missing (Debian package systemd; scripts/install-deps.sh installs it)";
  }
  const std::uint16_t port = free_port();
  ASSERT_NE(port, 0);
  const std::string address = "127.0.0.1:" + std::to_string(port);
  spawned_process activator(socket_activate, {"-l", address, TRANSIENT_CLI_PATH, "serve"});
  ASSERT_THAT(activator.read_line(spawned_process::stream::err, 5s), HasSubstr("Listening on"));
  unique_fd c = transient::test::connect_to(endpoint::loopback_v4(port));
  ASSERT_TRUE(c && send_text(c.get(), get));
  EXPECT_EQ(read_response(c.get(), 5000ms), ok);
  const std::string line = activator.read_line(spawned_process::stream::out, 2s);
  EXPECT_EQ(line, "listening on " + address + " (verified)");
  c.reset();  // the drain would wait for its next request
  activator.signal(SIGTERM);
  EXPECT_EQ(activator.wait(3000ms), 0);
}

TEST(ServeProduction, RefusesListenWhenSystemdPassesTheSocket) {
  if (::access(socket_activate, X_OK) != 0) {
    GTEST_SKIP() << socket_activate << " is missing (Debian package systemd; scripts/install-deps.sh installs it)";
  }
  const std::uint16_t port = free_port();
  ASSERT_NE(port, 0);
  spawned_process activator(socket_activate, {"-l", "127.0.0.1:" + std::to_string(port), TRANSIENT_CLI_PATH, "serve",
                                              "--listen", "127.0.0.1:0"});
  ASSERT_THAT(activator.read_line(spawned_process::stream::err, 5s), HasSubstr("Listening on"));
  const unique_fd c = transient::test::connect_to(endpoint::loopback_v4(port));
  ASSERT_TRUE(c);
  EXPECT_EQ(activator.wait(5000ms), 2);
  EXPECT_THAT(activator.stderr_text(), HasSubstr("--listen and --port-range cannot be used when systemd passes"));
}

// A second stop signal ends a drain at once, whatever is still in flight.
TEST(ServeProduction, ASecondStopSignalEndsTheDrainAtOnce) {
  for (const int second : {SIGTERM, SIGINT}) {
    serve_process serve({"--slow-response", "20s", "--drain-timeout", "30s"}, TRANSIENT_FIXTURE_PATH);
    ASSERT_TRUE(serve.at) << serve.stderr_text();
    const unique_fd slow = slow_request_in_flight(*serve.at);
    ASSERT_TRUE(slow);
    serve.signal(SIGTERM);
    EXPECT_FALSE(serve.wait(300ms)) << "the first signal drains: the slow request holds it";
    serve.signal(second);
    EXPECT_EQ(serve.wait(3000ms), 0) << "the second signal did not end the drain";
    EXPECT_TRUE(transient::test::closed_by_peer(slow.get(), 1000ms));
    EXPECT_THAT(serve.stderr_text(), HasSubstr("drain ended by a second stop signal: closing 1 connection(s)"));
  }
}

// What supervisors send to reopen logs never ends serve: it says so and serves on. (SIGHUP and
// SIGUSR2 upgrade in place: serve_upgrade_test.cpp.) SIGQUIT (nginx's graceful stop) drains
// like SIGTERM.
TEST(ServeProduction, UserSignalOneIsLoggedAndServingGoesOn) {
  serve_process serve({});
  ASSERT_TRUE(serve.at) << serve.stderr_text();
  unique_fd c = transient::test::connect_to(*serve.at);
  ASSERT_TRUE(c);
  serve.signal(SIGUSR1);
  const std::string line = serve.read_line(spawned_process::stream::err, 3s);
  EXPECT_EQ(line, "transient serve: SIGUSR1 ignored (nothing to reopen; SIGTERM drains and stops)");
  ASSERT_TRUE(send_text(c.get(), get));
  EXPECT_EQ(read_response(c.get(), 2000ms), ok);
  EXPECT_FALSE(serve.wait(100ms)) << "SIGUSR1 ended serve";
  c.reset();  // the drain would wait for its next request
  serve.signal(SIGQUIT);
  EXPECT_EQ(serve.wait(3000ms), 0);
  EXPECT_THAT(serve.stderr_text(), HasSubstr("stopped cleanly"));
}

// A drain closes the listener at once: a client arriving meanwhile is refused (and retries
// elsewhere) instead of waiting in a queue nobody accepts from, while the request in flight
// is still answered.
TEST(ServeProduction, ADrainRefusesNewClientsAtOnce) {
  serve_process serve({"--slow-response", "1500ms"}, TRANSIENT_FIXTURE_PATH);
  ASSERT_TRUE(serve.at) << serve.stderr_text();
  const unique_fd slow = slow_request_in_flight(*serve.at);
  ASSERT_TRUE(slow);
  serve.signal(SIGTERM);
  bool refused = false;
  std::vector<unique_fd> queued;  // connections the kernel completed while serve still listened
  for (const auto deadline = clock_type::now() + 1000ms; !refused && clock_type::now() < deadline;) {
    unique_fd c = transient::test::connect_to(*serve.at);
    refused = !c;
    queued.push_back(std::move(c));
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(refused) << "new clients still queued 1 s into the drain";
  EXPECT_FALSE(serve.wait(1ms)) << "the slow request still holds the drain";
  // A client that got in before the close sends its request, as a client does, and learns at
  // once that nobody will answer it (a reset, or a close), instead of waiting for its timeout.
  // Sending matters where the handshake had not reached the accept queue when the listener
  // closed: the kernel drops such a connection silently, and only the client's next segment
  // draws the reset.
  for (const auto& c : queued) {
    if (c) {
      (void)send_text(c.get(), get);
      EXPECT_TRUE(transient::test::closed_by_peer(c.get(), 1000ms)) << "a queued client was left waiting";
    }
  }
  EXPECT_THAT(read_response(slow.get(), 3000ms), HasSubstr("Connection: close\r\n\r\nok"));
  EXPECT_EQ(serve.wait(3000ms), 0);
}

// A listener that another process holds too (as systemd's socket unit does with socket
// activation): serve's drain lets go of its descriptor only, so the socket keeps listening
// and its queue survives for the other holder (here, the test).
TEST(ServeProduction, ASharedListenerKeepsListeningThroughTheDrain) {
  const int held = ::socket(AF_INET, SOCK_STREAM, 0);  // inherited by the child (no CLOEXEC)
  ASSERT_GE(held, 0);
  const unique_fd owner(held);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  ASSERT_EQ(::bind(held, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(held, 16), 0);
  ASSERT_EQ(::getsockname(held, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const endpoint at = endpoint::loopback_v4(ntohs(address.sin_port));
  // The shell passes the socket as descriptor 3, as systemd does, and execs serve in place.
  const std::string to_3 = held == 3 ? "" : "exec 3<&" + std::to_string(held) + " " + std::to_string(held) + "<&- && ";
  spawned_process serve("/bin/bash", {"-c", to_3 + "LISTEN_FDS=1 LISTEN_PID=$$ exec \"$0\" serve --slow-response 800ms",
                                      TRANSIENT_FIXTURE_PATH});
  ASSERT_THAT(serve.read_line(spawned_process::stream::out, 5s), HasSubstr("listening on"));
  const unique_fd slow = slow_request_in_flight(at);
  ASSERT_TRUE(slow);
  serve.signal(SIGTERM);
  std::this_thread::sleep_for(200ms);  // the drain has begun (the slow request still holds it)
  const unique_fd late = transient::test::connect_to(at);
  EXPECT_TRUE(late) << "the shared socket stopped listening";
  const unique_fd taken(::accept4(held, nullptr, nullptr, SOCK_CLOEXEC));
  EXPECT_TRUE(taken) << "the client that came during the drain is in the other holder's queue";
  EXPECT_THAT(read_response(slow.get(), 3000ms), HasSubstr("Connection: close\r\n\r\nok"));
  EXPECT_EQ(serve.wait(3000ms), 0);
}

// Any number of connections held open on the metrics port (silent ones, keep-alive pollers)
// leaves a new probe answered: at the port's limit the connection idle longest is closed.
TEST(ServeProduction, AProbeIsAnsweredWhateverHoldsTheMetricsPort) {
  serve_process serve({"--metrics", "127.0.0.1:0"});
  ASSERT_TRUE(serve.at && serve.metrics) << serve.stderr_text();
  std::vector<unique_fd> pollers;
  for (int i = 0; i < 8; ++i) {
    pollers.push_back(transient::test::connect_to(*serve.metrics));
    ASSERT_TRUE(pollers.back());
    ASSERT_EQ(query(pollers.back().get(), "/metrics").first, 200);
  }
  std::vector<unique_fd> silent;
  for (int i = 0; i < 200; ++i) {
    silent.push_back(transient::test::connect_to(*serve.metrics));
    ASSERT_TRUE(silent.back());
  }
  for (int i = 0; i < 3; ++i) {
    const unique_fd probe = transient::test::connect_to(*serve.metrics);
    ASSERT_TRUE(probe);
    // The header timeout (10 s) is what freed a place before: 2 s is far below it.
    const auto r = query(probe.get(), "/healthz");
    EXPECT_EQ(r.first, 200) << r.second;
  }
  serve.signal(SIGTERM);
  EXPECT_EQ(serve.wait(3000ms), 0);
}

// 400 pipelining clients that never read make serve buffer their responses up to its
// high-water mark; once they close, that memory goes back: RSS before, at the peak, after.
TEST(ServeProduction, MemoryTakenByABurstIsGivenBackWhenItEnds) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "a sanitizer's allocator keeps freed memory (quarantine, shadow): RSS measures it, not serve";
#endif
  serve_process serve({});
  ASSERT_TRUE(serve.at) << serve.stderr_text();
  std::this_thread::sleep_for(100ms);
  const long before = resident_kib(serve.pid());
  std::string requests;
  for (int i = 0; i < 2000; ++i) {
    requests += get;
  }
  std::vector<unique_fd> clients;
  for (int i = 0; i < 400; ++i) {
    clients.push_back(transient::test::connect_to(*serve.at));
    ASSERT_TRUE(clients.back());
  }
  // Each client sends until its socket is full (serve stopped reading it), for at most 5 s.
  std::vector<bool> full(clients.size(), false);
  for (const auto deadline = clock_type::now() + 5s;
       clock_type::now() < deadline && std::count(full.begin(), full.end(), false) > 0;) {
    for (std::size_t i = 0; i < clients.size(); ++i) {
      full[i] = full[i] || ::send(clients[i].get(), requests.data(), requests.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0;
    }
  }
  std::this_thread::sleep_for(200ms);  // serve answers what it read
  const long peak = resident_kib(serve.pid());
  EXPECT_GT(peak, before + 16 * 1024) << "the burst did not make serve buffer (a weaker test)";
  clients.clear();
  long after = peak;
  for (const auto deadline = clock_type::now() + 5s; clock_type::now() < deadline && after > before + 4096;) {
    std::this_thread::sleep_for(50ms);
    after = resident_kib(serve.pid());
  }
  EXPECT_LT(after, before + 4096) << "KiB before " << before << ", at the peak " << peak << ", after " << after;
  RecordProperty("rss_kib_before", static_cast<int>(before));
  RecordProperty("rss_kib_peak", static_cast<int>(peak));
  RecordProperty("rss_kib_after", static_cast<int>(after));
  serve.signal(SIGTERM);
  EXPECT_EQ(serve.wait(3000ms), 0);
}

// Runs `command` in sh with `transient` as $0; the exit code and the outputs.
transient::test::command_result shell(const std::string& command) {
  return transient::test::run_command("/bin/sh", {"-c", command, TRANSIENT_CLI_PATH}, 10000ms);
}

TEST(ServeProduction, TheDescriptorLimitIsRaisedToTheHardLimitAndSaidAtStart) {
  rlimit limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_max <= 256 || limit.rlim_max == RLIM_INFINITY) {
    GTEST_SKIP() << "the hard limit here leaves nothing to raise";
  }
  const std::string hard = std::to_string(limit.rlim_max);
  // serve runs until the shell stops it, after its start-up lines.
  const std::string run =
      "ulimit -S -n 256 && (\"$0\" serve --listen 127.0.0.1:0 %s & pid=$!; sleep 0.5; "
      "kill -TERM $pid; wait $pid)";
  auto raised = shell(std::string(run).replace(run.find("%s"), 2, ""));
  EXPECT_EQ(raised.exit_code, 0) << raised.err;
  EXPECT_THAT(raised.out, HasSubstr("descriptors: RLIMIT_NOFILE " + hard +
                                    " (raised from 256, the hard limit), connection budget "));
  auto kept = shell(std::string(run).replace(run.find("%s"), 2, "--fd-limit keep"));
  EXPECT_EQ(kept.exit_code, 0) << kept.err;
  EXPECT_THAT(kept.out, testing::Not(HasSubstr("raised")));
  EXPECT_THAT(kept.out, HasSubstr("descriptors: RLIMIT_NOFILE 256, connection budget 224 (auto"));
}

TEST(ServeProduction, TooFewDescriptorsForTheLoopsOrTheAutomaticBudgetSayWhatToChange) {
  auto threads = shell("ulimit -n 64 && exec \"$0\" serve --listen 127.0.0.1:0 --threads 256 --max-connections 4");
  EXPECT_EQ(threads.exit_code, 1) << threads.err;
  EXPECT_THAT(threads.err, HasSubstr("--threads 256: loop "));
  EXPECT_THAT(threads.err, testing::ContainsRegex("each loop holds [0-9]+ descriptors of its own"));
  EXPECT_THAT(threads.err, HasSubstr("use fewer --threads or raise the limit"));
  auto automatic = shell("ulimit -n 32 && exec \"$0\" serve --listen 127.0.0.1:0");
  EXPECT_EQ(automatic.exit_code, 1) << automatic.err;
  EXPECT_THAT(automatic.err, HasSubstr("the automatic connection budget leaves no room: RLIMIT_NOFILE is 32"));
  EXPECT_THAT(automatic.err, HasSubstr("give --max-connections N"));
  // A budget over the limit is warned about, without recommending the automatic one that
  // this limit cannot give.
  auto over = shell(
      "ulimit -n 32 && (\"$0\" serve --listen 127.0.0.1:0 --max-connections 100 & pid=$!; "
      "sleep 0.5; kill -TERM $pid; wait $pid)");
  EXPECT_THAT(over.err, HasSubstr("the connection budget of 100 is more than the descriptors left"));
  EXPECT_THAT(over.err, testing::Not(HasSubstr("the automatic one")));
}

TEST(ServeProduction, NewFlagsRefuseBadValuesWithOneLine) {
  expect_usage_error("serve", {"--header-timeout", "0"}, "--header-timeout: '0' is not a duration");
  expect_usage_error("serve", {"--header-timeout", "-1s"}, "--header-timeout: '-1s'");
  expect_usage_error("serve", {"--header-timeout", "25h"}, "from 1ms to 24h");
  expect_usage_error("serve", {"--header-timeout"}, "--header-timeout needs a value");
  expect_usage_error("serve", {"--drain-timeout", "soon"}, "--drain-timeout: 'soon' is not a duration");
  expect_usage_error("serve", {"--drain-timeout", "100000m"}, "from 0 to 24h");
  expect_usage_error("serve", {"--max-per-peer", "0"},
                     "--max-per-peer: '0' is not 'off' or a number from 1 to 1000000");
  expect_usage_error("serve", {"--max-per-peer", "-3"}, "--max-per-peer: '-3'");
  expect_usage_error("serve", {"--max-per-peer", "99999999"}, "--max-per-peer: '99999999'");
}

// An unprivileged user hunting privileged ports hears why at the first one, as a usage error.
TEST(ServeProduction, PrivilegedPortsForAnUnprivilegedUserAreAUsageError) {
  if (::geteuid() != 0 || ::access("/usr/bin/setpriv", X_OK) != 0) {
    GTEST_SKIP() << "needs root and setpriv (util-linux) to run serve as another user";
  }
  std::ifstream start_file("/proc/sys/net/ipv4/ip_unprivileged_port_start");
  int unprivileged_start = 1024;
  start_file >> unprivileged_start;
  if (unprivileged_start <= 1) {
    GTEST_SKIP() << "here every user may bind port 1 (net.ipv4.ip_unprivileged_port_start)";
  }
  const auto r = transient::test::run_command(
      "/usr/bin/setpriv",
      {"--reuid=65534", "--regid=65534", "--clear-groups", TRANSIENT_CLI_PATH, "serve", "--port-range", "1-1023"},
      10000ms);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("Permission denied"));
  EXPECT_THAT(r.err, HasSubstr("privileged"));
}

TEST(ServeProduction, HelpDocumentsTheNewFlagsAndNotTheTestKnobs) {
  const auto r = transient::test::run_command(TRANSIENT_CLI_PATH, {"serve", "--help"}, 5000ms);
  EXPECT_EQ(r.exit_code, 0);
  for (const char* text :
       {"--header-timeout", "--max-per-peer", "--drain-timeout", "/healthz", "/readyz", "WATCHDOG=1", "LISTEN_FDS"}) {
    EXPECT_THAT(r.out, HasSubstr(text));
  }
  // Every signal's effect, in --help and in the man page.
  std::ifstream page(std::string(TRANSIENT_SOURCE_DIR) + "/transient.1");
  const std::string man((std::istreambuf_iterator<char>(page)), std::istreambuf_iterator<char>());
  for (const char* text :
       {"SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "second", "24h", "upgrade"}) {
    EXPECT_THAT(r.out, HasSubstr(text));
    EXPECT_THAT(man, HasSubstr(text));
  }
  // The test knobs are the test fixture's (tools/fixture): neither serve's help nor the man page
  // (read without roff's escapes, as in "\-\-policy") names them.
  std::string man_text = man;
  man_text.erase(std::remove(man_text.begin(), man_text.end(), '\\'), man_text.end());
  for (const char* knob : {"--slow-response", "--leak-per-connection", "--policy"}) {
    EXPECT_THAT(r.out, testing::Not(HasSubstr(knob)));
    EXPECT_THAT(man_text, testing::Not(HasSubstr(knob)));
  }
  EXPECT_THAT(r.out, testing::Not(HasSubstr("naive")));
}

}  // namespace
