// ctest-labels: threads
// `transient serve` and its listener's accept queue, end to end: --backlog, the queue in
// /metrics (length, limit, the namespace's overflows and drops), in /readyz (503 above
// --ready-queue-fraction), in /healthz (200, naming it) and in systemd's STATUS=, and the
// usage errors of the queue flags.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/loopback.hpp"
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

constexpr std::string_view get = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
constexpr std::string_view get_and_close = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

// serve with `args` and a metrics port.
class metered_serve : public serve_process {
 public:
  explicit metered_serve(std::vector<std::string> args, const std::string& program = TRANSIENT_CLI_PATH)
      : serve_process(with_metrics(std::move(args)), program) {}

 private:
  static std::vector<std::string> with_metrics(std::vector<std::string> args) {
    args.insert(args.end(), {"--metrics", "127.0.0.1:0"});
    return args;
  }
};

// The value of the Prometheus sample `name` (with its labels) in `text` (-1: absent).
double sample(const std::string& text, const std::string& name) {
  const std::size_t at = text.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + name.size() + 2));
}

// Queries `path` every 20 ms until its status is `status` and its body contains `text`, for
// at most `timeout`; the last answer.
std::pair<int, std::string> query_until(int fd, const std::string& path, int status, const std::string& text,
                                        std::chrono::milliseconds timeout) {
  const auto deadline = clock_type::now() + timeout;
  std::pair<int, std::string> r = query(fd, path);
  while (!(r.first == status && r.second.find(text) != std::string::npos) && clock_type::now() < deadline &&
         r.first != 0) {
    std::this_thread::sleep_for(20ms);
    r = query(fd, path);
  }
  return r;
}

// One place of --max-connections 1 taken by an idle keep-alive connection, and `n` clients
// behind it in the accept queue, each with its request sent.
struct held_queue {
  unique_fd holder;
  std::vector<unique_fd> queued;
};

held_queue hold_and_queue(const endpoint& at, int n) {
  held_queue q;
  q.holder = connect_to(at);
  if (!q.holder || !send_text(q.holder.get(), get) ||
      read_response(q.holder.get(), 2000ms).find("\r\n\r\nok") == std::string::npos) {
    return {};
  }
  for (int i = 0; i < n; ++i) {
    q.queued.push_back(connect_to(at));  // on loopback, connect returns once the kernel queued it
    if (!q.queued.back() || !send_text(q.queued.back().get(), get_and_close)) {
      return {};
    }
  }
  return q;
}

// --backlog 4 and --max-connections 1: an idle keep-alive connection holds the place and four
// clients wait in the queue. The first probe after they connect sees them (the queue is read
// when the probe comes, not when the loops next publish); once the place is released the queue
// drains, every client is served, and the server is ready again.
TEST(ServeQueue, AFullQueueShowsInMetricsReadinessHealthAndStatusUntilItDrains) {
  fake_notify_socket notify("queue");
  ASSERT_TRUE(notify.ok());
  metered_serve serve({"--backlog", "4", "--max-connections", "1", "--max-queue-wait", "0"});
  ASSERT_TRUE(serve.at && serve.metrics) << serve.stderr_text();
  const unique_fd probe = connect_to(*serve.metrics);
  ASSERT_TRUE(probe);
  EXPECT_EQ(query(probe.get(), "/readyz").first, 200);
  held_queue q = hold_and_queue(*serve.at, 4);
  ASSERT_TRUE(q.holder) << serve.stderr_text();

  auto r = query(probe.get(), "/readyz");
  EXPECT_EQ(r.first, 503) << r.second;
  EXPECT_THAT(r.second, HasSubstr("4 of 4 waiting in the accept queue for "));
  EXPECT_THAT(r.second, HasSubstr("(over 0.5 of its limit)"));
  r = query(probe.get(), "/healthz");
  EXPECT_EQ(r.first, 200) << "a long queue is alive: " << r.second;
  EXPECT_THAT(r.second, HasSubstr("4 of 4 waiting in the accept queue"));
  const std::string metrics = query(probe.get(), "/metrics").second;
  const std::string label = "{listener=\"" + serve.at->to_string() + "\"}";
  EXPECT_EQ(sample(metrics, "transient_listen_queue_length" + label), 4) << metrics;
  EXPECT_EQ(sample(metrics, "transient_listen_queue_limit" + label), 4) << metrics;
  EXPECT_GE(sample(metrics, "transient_listen_overflows_total"), 0) << metrics;
  EXPECT_GE(sample(metrics, "transient_listen_drops_total"), 0) << metrics;
  // The state may not say backpressure yet (the loops publish it within 100 ms); the queue is
  // read when STATUS= is made.
  EXPECT_THAT(notify.wait_for("waiting in the accept queue for", 2000ms),
              testing::MatchesRegex("STATUS=(accepting|backpressure): .*4 of 4 waiting in the accept queue for .*"));

  q.holder.reset();
  for (auto& c : q.queued) {  // served in turn: each closes, as a client does, to free the place
    EXPECT_THAT(read_response(c.get(), 3000ms), HasSubstr("\r\n\r\nok")) << "a queued client was not served";
    c.reset();
  }
  r = query_until(probe.get(), "/readyz", 200, "\"state\":\"accepting\"", 2000ms);
  EXPECT_EQ(r.first, 200) << r.second;
  EXPECT_EQ(r.second, "{\"state\":\"accepting\",\"reason\":\"\"}\n");
  EXPECT_EQ(sample(query(probe.get(), "/metrics").second, "transient_listen_queue_length" + label), 0);
  serve.signal(SIGTERM);
  EXPECT_EQ(serve.wait(3000ms), 0);
}

// With the budget free the queue alone decides readiness: --ready-queue-fraction 0 turns the
// check off, and a queue at its threshold (not above it) leaves the server ready.
TEST(ServeQueue, ReadinessFollowsTheFractionGiven) {
  for (const char* fraction : {"0", "1"}) {
    SCOPED_TRACE(std::string("--ready-queue-fraction ") + fraction);
    metered_serve serve(
        {"--backlog", "4", "--max-connections", "1", "--max-queue-wait", "0", "--ready-queue-fraction", fraction});
    ASSERT_TRUE(serve.at && serve.metrics) << serve.stderr_text();
    const unique_fd probe = connect_to(*serve.metrics);
    held_queue q = hold_and_queue(*serve.at, 4);
    ASSERT_TRUE(q.holder) << serve.stderr_text();
    const auto r = query_until(probe.get(), "/readyz", 503, "\"state\":\"backpressure\"", 2000ms);
    EXPECT_EQ(r.first, 503) << "backpressure still says 503: " << r.second;
    EXPECT_THAT(r.second, testing::Not(HasSubstr("accept queue"))) << "4 of 4 is not above 1 of the limit";
    q = {};  // the drain would wait for the idle holder's next request
    serve.signal(SIGTERM);
    EXPECT_EQ(serve.wait(3000ms), 0);
  }
}

// The metrics port's text with a listener queue in it passes Prometheus's own checker.
TEST(ServeQueue, MetricsPassPromtool) {
  const std::string promtool = "/usr/bin/promtool";
  if (::access(promtool.c_str(), X_OK) != 0) {
    GTEST_SKIP() << promtool << " is missing (Debian package prometheus): the metrics text is not checked";
  }
  metered_serve serve({"--backlog", "4", "--max-connections", "1", "--max-queue-wait", "0"});
  ASSERT_TRUE(serve.at && serve.metrics) << serve.stderr_text();
  const unique_fd probe = connect_to(*serve.metrics);
  held_queue q = hold_and_queue(*serve.at, 2);
  ASSERT_TRUE(q.holder) << serve.stderr_text();
  const std::string text = query(probe.get(), "/metrics").second;
  ASSERT_THAT(text, HasSubstr("transient_listen_queue_length{"));
  const std::string file = "/tmp/transient-serve-queue-metrics-" + std::to_string(::getpid()) + ".prom";
  std::ofstream(file) << text;
  const command_result checked = run_command("/bin/sh", {"-c", promtool + " check metrics < " + file}, 20000ms);
  ::unlink(file.c_str());
  EXPECT_EQ(checked.exit_code, 0) << checked.out << checked.err << text;
  EXPECT_EQ(checked.out + checked.err, "") << text;
}

// --max-queue-wait 200ms with the place of --max-connections 1 held: three clients wait 400 ms
// in the queue with their requests sent. Once the place is released each is answered 503 with
// Retry-After and closed, never served (its client has likely gone), and counted; a client
// arriving afterwards, which waits no time, is served.
TEST(ServeQueue, ClientsThatWaitedLongerThanMaxQueueWaitAreAnswered503AndNeverServed) {
  metered_serve serve({"--max-connections", "1", "--max-queue-wait", "200ms"});
  ASSERT_TRUE(serve.at && serve.metrics) << serve.stderr_text();
  held_queue q = hold_and_queue(*serve.at, 3);
  ASSERT_TRUE(q.holder) << serve.stderr_text();
  std::this_thread::sleep_for(400ms);  // the scenario's wait in the queue, twice the bound
  q.holder.reset();
  for (const auto& c : q.queued) {
    const std::string answer = read_response(c.get(), 3000ms);
    EXPECT_EQ(answer.rfind("HTTP/1.1 503 Service Unavailable\r\n", 0), 0U) << answer;
    EXPECT_THAT(answer, HasSubstr("\r\nRetry-After: "));
    EXPECT_TRUE(closed_by_peer(c.get(), 1000ms)) << "a stale client was left open";
  }
  unique_fd later = connect_to(*serve.at);
  ASSERT_TRUE(later && send_text(later.get(), get));
  EXPECT_THAT(read_response(later.get(), 2000ms), HasSubstr("200 OK"));
  later.reset();  // the drain would wait for its next request
  const unique_fd scraper = connect_to(*serve.metrics);
  double shed = -1;
  for (int i = 0; i < 50 && shed != 3; ++i) {  // published within 100 ms
    shed = sample(query(scraper.get(), "/metrics").second, "transient_shed_total{reason=\"queue_wait\"}");
    if (shed != 3) {
      std::this_thread::sleep_for(20ms);
    }
  }
  EXPECT_EQ(shed, 3);
  serve.signal(SIGTERM);
  EXPECT_EQ(serve.wait(3000ms), 0);
}

TEST(ServeQueue, BadQueueValuesGetOneLineAndStatus2) {
  for (const char* value : {"0", "65536", "-1", "4k", ""}) {
    expect_usage_error("serve", {"--backlog", value},
                       "--backlog: '" + std::string(value) + "' is not a number from 1 to 65535");
  }
  for (const char* value : {"25h", "-1s", "soon"}) {
    expect_usage_error("serve", {"--max-queue-wait", value},
                       "--max-queue-wait: '" + std::string(value) + "' is not a duration");
  }
  for (const char* value : {"1.5", "-0.1", "nan", "inf", "half", ""}) {
    expect_usage_error("serve", {"--ready-queue-fraction", value},
                       "--ready-queue-fraction: '" + std::string(value) + "' is not a fraction from 0 (off) to 1");
  }
}

TEST(ServeQueue, BacklogIsRefusedWhenSystemdPassesTheSocket) {
  const char* socket_activate = "/usr/bin/systemd-socket-activate";
  if (::access(socket_activate, X_OK) != 0) {
    GTEST_SKIP() << socket_activate << " is missing (Debian package systemd; scripts/install-deps.sh installs it)";
  }
  unique_fd finder(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  ASSERT_EQ(::bind(finder.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::getsockname(finder.get(), reinterpret_cast<sockaddr*>(&address), &length), 0);
  const std::uint16_t port = ntohs(address.sin_port);
  finder.reset();  // free again for the activator (bound, never listening: no TIME_WAIT)
  spawned_process activator(
      socket_activate, {"-l", "127.0.0.1:" + std::to_string(port), TRANSIENT_CLI_PATH, "serve", "--backlog", "16"});
  ASSERT_THAT(activator.read_line(spawned_process::stream::err, 5s), HasSubstr("Listening on"));
  const unique_fd c = connect_to(endpoint::loopback_v4(port));
  ASSERT_TRUE(c);
  EXPECT_EQ(activator.wait(5000ms), 2);
  const std::string err = activator.stderr_text();
  EXPECT_THAT(err, HasSubstr("--backlog cannot be used when systemd passes the socket"));
  EXPECT_THAT(err, HasSubstr("Backlog="));
}

TEST(ServeQueue, HelpAndManPageNameTheQueueFlags) {
  const auto r = run_command(TRANSIENT_CLI_PATH, {"serve", "--help"}, 5000ms);
  EXPECT_EQ(r.exit_code, 0);
  std::ifstream page(std::string(TRANSIENT_SOURCE_DIR) + "/transient.1");
  std::string man((std::istreambuf_iterator<char>(page)), std::istreambuf_iterator<char>());
  man.erase(std::remove(man.begin(), man.end(), '\\'), man.end());
  for (const char* flag : {"--backlog", "--max-queue-wait", "--ready-queue-fraction"}) {
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag << " is not in serve --help";
    EXPECT_NE(man.find(flag), std::string::npos) << flag << " is not in the man page";
  }
  for (const char* text : {"transient_listen_queue_length", "transient_listen_overflows_total", "Retry-After"}) {
    EXPECT_NE(man.find(text), std::string::npos) << text << " is not in the man page";
  }
}

}  // namespace
