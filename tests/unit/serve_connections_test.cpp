// ctest-labels: threads
// serve's connection loop (tools/serve/serve_connections.cpp) driven directly over a socketpair,
// where a test sets what a TCP peer cannot: the size of the server side's send buffer.
#include <gtest/gtest.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <chrono>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "../../tools/fixture/naive_loop.hpp"
#include "../../tools/serve/serve_connections.hpp"
#include "support/loopback.hpp"
#include "support/resident_memory.hpp"

namespace {

using namespace std::chrono_literals;
using namespace transient::tool;
using transient::connection;
using transient::unique_fd;
using transient::test::resident_kib;

// serve's connection loop on a naive loop (over a listener nobody connects to), serving the
// server end of a socketpair; stopped and joined at the end, closing what it holds.
struct running_loop {
  naive_loop loop;
  connection_loop connections;
  std::thread thread;

  explicit running_loop(unique_fd server_end, connection_limits limits = {})
      : loop(transient::listen(transient::endpoint::loopback_v4(0))),
        connections(loop, without_drain(limits), &append_ok_response) {
    connections.on_connection(connection(std::move(server_end), transient::permit{}, transient::endpoint{}));
    thread = std::thread([this] { loop.run(connections); });
  }
  ~running_loop() {
    loop.stop();
    thread.join();
  }
  running_loop(const running_loop&) = delete;
  running_loop& operator=(const running_loop&) = delete;

  static connection_limits without_drain(connection_limits limits) {
    limits.drain = {};
    return limits;
  }
};

// Bytes written by the peer that this end has not read yet.
int unread(int fd) {
  int n = 0;
  return ::ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
}

// A connected socketpair, nonblocking; first: the client's end, second: the server's.
std::pair<unique_fd, unique_fd> socket_pair() {
  std::array<int, 2> ends{};
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, ends.data()), 0);
  return {unique_fd(ends[0]), unique_fd(ends[1])};
}

std::size_t count_of(std::string_view text, std::string_view what) {
  std::size_t count = 0;
  for (std::size_t at = text.find(what); at != std::string_view::npos; at = text.find(what, at + 1)) {
    ++count;
  }
  return count;
}

// A pipelining client that sends valid requests and never reads its responses: once the
// output waiting for it passes the high-water mark, the server stops reading, so the client's
// sends block and the server's memory stays bounded. Every request it did read is answered.
TEST(ServeConnections, APipeliningClientThatNeverReadsIsNotReadWithoutBound) {
  auto [client, server] = socket_pair();
  running_loop serving(std::move(server));
  const std::string request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  std::string batch;
  for (int i = 0; i < 256; ++i) {
    batch += request;
  }
  const long before = resident_kib();
  std::size_t sent = 0;
  auto last_progress = std::chrono::steady_clock::now();
  const auto deadline = last_progress + 10s;
  // Until no byte goes out for 300 ms (the server stopped reading), or 64 MiB went out.
  while (sent < std::size_t{64} << 20U && std::chrono::steady_clock::now() < deadline &&
         std::chrono::steady_clock::now() - last_progress < 300ms) {
    const std::size_t at = sent % batch.size();
    const ssize_t n = ::send(client.get(), batch.data() + at, batch.size() - at, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
      last_progress = std::chrono::steady_clock::now();
    } else {
      std::this_thread::sleep_for(1ms);
    }
  }
  // Bounded by the high-water mark's worth of requests plus two socket buffers.
  EXPECT_LT(sent, std::size_t{8} << 20U) << "the server went on reading requests it could not answer";
  EXPECT_LT(resident_kib() - before, 16 * 1024) << "KiB kept for a client that never reads";
  // The client reads at last: one response per whole request sent, none lost (a request cut
  // off by the last short send is incomplete and waits).
  const std::size_t expected = sent / request.size();
  std::string responses;
  const auto read_until = std::chrono::steady_clock::now() + 20s;
  while (count_of(responses, "\r\n\r\nok") < expected && std::chrono::steady_clock::now() < read_until) {
    responses += transient::test::read_some(client.get(), 100ms);
  }
  EXPECT_EQ(count_of(responses, "\r\n\r\nok"), expected);
}

// serve's connection limits with a header timeout of `header`.
connection_limits with_header_timeout(std::chrono::milliseconds header) {
  connection_limits limits;
  limits.header = header;
  return limits;
}

// A complete head whose body comes a byte at a time: the header timeout applies to the body
// too (from the head's arrival), so the connection is closed, not held while bytes trickle in.
TEST(ServeConnections, ABodyTrickledInIsClosedAtTheHeaderTimeout) {
  auto [client, server] = socket_pair();
  running_loop serving(std::move(server), with_header_timeout(500ms));
  ASSERT_TRUE(transient::test::send_text(client.get(), "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 8000\r\n\r\n"));
  const auto start = std::chrono::steady_clock::now();
  bool closed = false;
  // One byte every 100 ms keeps the idle timer (60 s) fresh; 8 s is far past the header timeout.
  while (!closed && std::chrono::steady_clock::now() - start < 8s) {
    (void)::send(client.get(), "x", 1, MSG_NOSIGNAL);
    closed = transient::test::closed_by_peer(client.get(), 100ms);
  }
  EXPECT_TRUE(closed) << "a trickled body held the connection for 8 s with a 500 ms header timeout";
}

// A body that arrives within the header timeout of its head is answered.
TEST(ServeConnections, ABodyInTimeIsAnswered) {
  auto [client, server] = socket_pair();
  running_loop serving(std::move(server), with_header_timeout(10s));
  ASSERT_TRUE(transient::test::send_text(client.get(), "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhe"));
  std::this_thread::sleep_for(50ms);
  ASSERT_TRUE(transient::test::send_text(client.get(), "llo"));
  const std::string response = transient::test::read_at_least(client.get(), 40, 5s);
  EXPECT_TRUE(response.starts_with("HTTP/1.1 200 OK")) << response;
}

// A client that asked for the last response (Connection: close) but reads nothing, while its
// responses wait in the server's output, and then sends and sends: nothing after that
// request is answered, so nothing of it may be kept.
TEST(ServeConnections, InputAfterTheLastRequestIsNotKept) {
  std::array<int, 2> ends{};
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, ends.data()), 0);
  unique_fd client(ends[0]);
  unique_fd server(ends[1]);
  const int small = 4096;
  ASSERT_EQ(::setsockopt(server.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
  std::string requests;
  constexpr int keep_alive_requests = 400;
  for (int i = 0; i < keep_alive_requests; ++i) {
    requests += "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  }
  requests += "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
  ASSERT_EQ(::send(client.get(), requests.data(), requests.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(requests.size()));
  running_loop serving(std::move(server));
  // The server reads all of it and answers what its send buffer takes; the rest waits.
  const auto deadline = std::chrono::steady_clock::now() + 3s;
  int last = -1;
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    const int now = unread(client.get());
    if (now > 0 && now == last) {
      break;
    }
    last = now;
  }
  int queued = 0;  // what the client sent and the server has not read
  ASSERT_EQ(::ioctl(client.get(), TIOCOUTQ, &queued), 0);
  ASSERT_EQ(queued, 0) << "the server did not read the requests";

  const long before = resident_kib();
  const std::string junk(64 * 1024, 'x');
  std::size_t sent = 0;
  const auto junk_until = std::chrono::steady_clock::now() + 2s;
  while (sent < std::size_t{64} << 20U && std::chrono::steady_clock::now() < junk_until) {
    const ssize_t n = ::send(client.get(), junk.data(), junk.size(), MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
    } else {
      std::this_thread::sleep_for(1ms);
    }
  }
  EXPECT_GT(sent, std::size_t{16} << 20U) << "the server stopped reading";
  const long grown = resident_kib() - before;
  EXPECT_LT(grown, 8 * 1024) << "KiB kept after " << sent << " bytes of input nobody will answer";

  // The client reads at last: every response, the last with Connection: close, then the end.
  const std::string responses = transient::test::read_at_least(client.get(), std::string::npos, 10s);
  EXPECT_TRUE(transient::test::closed_by_peer(client.get(), 1s));
  std::size_t count = 0;
  for (std::size_t at = responses.find("HTTP/1.1 200 OK"); at != std::string::npos;
       at = responses.find("HTTP/1.1 200 OK", at + 1)) {
    ++count;
  }
  EXPECT_EQ(count, static_cast<std::size_t>(keep_alive_requests + 1));
  EXPECT_TRUE(responses.ends_with("Connection: close\r\n\r\nok"));
}

// A loop that only keeps the time: the test calls next_timer() and on_time() itself, as a
// loop does around each wait, and the connection loop's watches go nowhere.
class clock_only_loop final : public transient::loop {
 public:
  void watch(int /*fd*/, std::uint32_t /*events*/, transient::io_watcher& /*watcher*/,
             std::error_code& ec) noexcept override {
    ec.clear();
  }
  void modify(int /*fd*/, std::uint32_t /*events*/, std::error_code& ec) noexcept override { ec.clear(); }
  void unwatch(int /*fd*/) noexcept override {}
  void forget(int /*fd*/) noexcept override {}
  [[nodiscard]] unsigned index() const noexcept override { return 0; }
  [[nodiscard]] transient::policy_health health() const noexcept override { return {}; }
  void set(time_point t) noexcept { set_now(t); }
};

// A connection added after the loop last asked next_timer() (which said: no timer) sets
// deadlines earlier than that answer; on_time() runs them all the same: `limits` closes the
// connection `after` it was added (and not a millisecond before), `header_timeouts` of it.
void expect_closed_after(connection_limits limits, std::chrono::milliseconds after, std::uint64_t header_timeouts) {
  clock_only_loop l;
  l.set(std::chrono::steady_clock::now());
  connection_loop connections(l, limits, &append_ok_response);
  EXPECT_EQ(connections.next_timer(), std::chrono::steady_clock::time_point::max());
  auto [client, server] = socket_pair();
  connections.on_connection(connection(std::move(server), transient::permit{}, transient::endpoint{}));
  connections.on_time(l.now() + after - 1ms);
  EXPECT_EQ(connections.open_connections(), 1U);
  connections.on_time(l.now() + after);
  EXPECT_EQ(connections.open_connections(), 0U);
  EXPECT_EQ(connections.header_timeouts(), header_timeouts);
}

// A request that arrived with its connection is answered when the connection is handed over,
// before any readiness event (this loop reports none); a client that has sent nothing yet
// gets nothing and its connection stays open.
TEST(ServeConnections, ARequestThatCameWithItsConnectionIsAnsweredAtOnce) {
  clock_only_loop l;
  l.set(std::chrono::steady_clock::now());
  connection_loop connections(l, connection_limits{}, &append_ok_response);
  auto [eager, eager_server] = socket_pair();
  const std::string_view request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  ASSERT_EQ(::send(eager.get(), request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
  connections.on_connection(connection(std::move(eager_server), transient::permit{}, transient::endpoint{}));
  EXPECT_EQ(transient::test::read_at_least(eager.get(), ok_response({}).size(), 1s), ok_response({}));

  auto [quiet, quiet_server] = socket_pair();
  connections.on_connection(connection(std::move(quiet_server), transient::permit{}, transient::endpoint{}));
  EXPECT_EQ(unread(quiet.get()), 0);
  EXPECT_EQ(connections.open_connections(), 2U);
}

TEST(ServeConnections, AHeaderDeadlineSetAfterNextTimerIsKept) {
  connection_limits limits;
  limits.header = 500ms;
  expect_closed_after(limits, 500ms, 1);
}

TEST(ServeConnections, AnIdleDeadlineSetAfterNextTimerIsKept) {
  connection_limits limits;
  limits.idle = 300ms;
  limits.header = 10s;
  expect_closed_after(limits, 300ms, 0);
}

// The drain of issue 25: a keep-alive client may send its next request the instant the drain
// begins. The connections below are driven by hand on a loop that only keeps the time, so the
// order of the client's request and the drain's steps is the test's, not the scheduler's.
constexpr std::string_view keep_alive_get = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
constexpr std::string_view last_ok =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

// A connection_loop on a clock_only_loop, holding the server end of one socketpair.
struct driven_connection {
  clock_only_loop loop;
  connection_loop connections;
  unique_fd client;
  int server_fd = -1;
  std::vector<std::string> log;

  explicit driven_connection(connection_limits limits) : connections(started(loop), limits, &append_ok_response) {
    auto [c, s] = socket_pair();
    client = std::move(c);
    server_fd = s.get();
    connections.set_log([this](const std::string& line) { log.push_back(line); });
    connections.on_connection(connection(std::move(s), transient::permit{}, transient::endpoint{}));
  }
  static clock_only_loop& started(clock_only_loop& l) {
    l.set(std::chrono::steady_clock::now());
    return l;
  }
  // The client's request, and the loop's readiness event for it.
  void request() {
    ASSERT_TRUE(transient::test::send_text(client.get(), keep_alive_get));
    connections.on_ready(server_fd, EPOLLIN);
  }
};

TEST(ServeConnections, AnIdleKeepAliveConnectionGetsItsNextRequestAnsweredWhileDraining) {
  driven_connection d(connection_limits{});
  d.request();
  const std::string first = transient::test::read_at_least(d.client.get(), 2, 1s);
  ASSERT_TRUE(first.ends_with("\r\n\r\nok")) << first;
  EXPECT_EQ(first.find("Connection: close"), std::string::npos);

  d.connections.on_accepting_end();
  EXPECT_EQ(d.connections.open_connections(), 1U) << "an idle keep-alive connection was closed as the drain began";
  d.request();
  EXPECT_EQ(transient::test::read_at_least(d.client.get(), last_ok.size(), 1s), last_ok);
  EXPECT_TRUE(transient::test::closed_by_peer(d.client.get(), 1s)) << "not closed after its last response";
  EXPECT_EQ(d.connections.open_connections(), 0U);
}

TEST(ServeConnections, AnIdleConnectionStaysUntilTheDrainTimeout) {
  connection_limits limits;
  limits.drain = 1s;
  driven_connection d(limits);
  d.connections.on_accepting_end();
  d.connections.on_time(d.loop.now() + 999ms);
  EXPECT_EQ(d.connections.open_connections(), 1U);
  d.connections.on_time(d.loop.now() + 1s);
  EXPECT_EQ(d.connections.open_connections(), 0U);
  ASSERT_EQ(d.log.size(), 1U);
  EXPECT_EQ(d.log.front(), "drain timeout (1s): closing 1 connection(s) still in flight");
  EXPECT_TRUE(transient::test::closed_by_peer(d.client.get(), 1s));
}

// With no drain at all (the metrics port), a request already in the socket when accepting ends
// is answered before the close; the close then resets nothing.
TEST(ServeConnections, ARequestWaitingWhenTheConnectionClosesIsAnsweredFirst) {
  connection_limits limits;
  limits.drain = {};
  driven_connection d(limits);
  ASSERT_TRUE(transient::test::send_text(d.client.get(), keep_alive_get));  // no readiness event yet
  d.connections.on_accepting_end();
  EXPECT_EQ(d.connections.open_connections(), 0U);
  EXPECT_EQ(transient::test::read_at_least(d.client.get(), last_ok.size(), 1s), last_ok);
}

// A request that arrives as the idle timeout falls due (unread yet when the timer fires) is
// answered: the connection is busy, not idle.
TEST(ServeConnections, ARequestArrivingAtTheIdleTimeoutIsAnswered) {
  connection_limits limits;
  limits.idle = 300ms;
  limits.header = 10s;
  driven_connection d(limits);
  ASSERT_TRUE(transient::test::send_text(d.client.get(), keep_alive_get));  // no readiness event yet
  d.connections.on_time(d.loop.now() + 300ms);
  EXPECT_EQ(d.connections.open_connections(), 1U);
  const std::string answer = transient::test::read_at_least(d.client.get(), 2, 1s);
  EXPECT_TRUE(answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("\r\n\r\nok")) << answer;
}

}  // namespace
