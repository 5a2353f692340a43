// The restart scenario's load (tools/drill/drill_restart_load.cpp): each request against a
// server the test controls ends in the right column (answered, refused, reset, unanswered),
// a keep-alive client reconnects after a close the server may make, and the load's threads count.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "../../tools/drill/drill_restart.hpp"

namespace {

using namespace std::chrono_literals;
using transient::endpoint;
using transient::unique_fd;
using transient::tool::keepalive_client;
using transient::tool::request_end;
using transient::tool::short_request;

constexpr std::string_view ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
constexpr std::string_view unavailable = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nno";
constexpr std::string_view ok_close = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

// What the fake server does with each request it reads.
enum class behaviour { answer, answer_503, answer_close, answer_then_idle_close, reset, close, silent, half_answer };

// A loopback server on its own thread that treats every request as `behaviour` says.
class fake_server {
 public:
  explicit fake_server(behaviour b) : behaviour_(b) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    listener_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    socklen_t length = sizeof address;
    if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        ::listen(listener_.get(), 64) != 0 ||
        ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      ADD_FAILURE() << "fake server: cannot listen";
    }
    at_ = endpoint::loopback_v4(ntohs(address.sin_port));
    thread_ = std::thread([this] { run(); });
  }
  ~fake_server() {
    stop_.store(true);
    thread_.join();
    for (auto& t : connections_) {
      t.join();
    }
  }
  fake_server(const fake_server&) = delete;
  fake_server& operator=(const fake_server&) = delete;

  [[nodiscard]] const endpoint& at() const { return at_; }
  [[nodiscard]] int accepted() const { return accepted_.load(); }
  [[nodiscard]] int closed() const { return closed_.load(); }

 private:
  void run() {
    while (!stop_.load()) {
      pollfd p{listener_.get(), POLLIN, 0};
      if (::poll(&p, 1, 10) <= 0) {
        continue;
      }
      unique_fd c(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (c) {
        ++accepted_;
        connections_.emplace_back([this, fd = std::move(c)]() mutable { serve(std::move(fd)); });
      }
    }
  }

  // Reads one request head from `c`; false on EOF, error or the test's end.
  bool read_request(int c) {
    std::string in;
    char buffer[1024];
    while (in.find("\r\n\r\n") == std::string::npos) {
      pollfd p{c, POLLIN, 0};
      if (stop_.load()) {
        return false;
      }
      if (::poll(&p, 1, 10) <= 0) {
        continue;
      }
      const ssize_t n = ::recv(c, buffer, sizeof buffer, 0);
      if (n <= 0) {
        return false;
      }
      in.append(buffer, static_cast<std::size_t>(n));
    }
    return true;
  }

  void send_text(int c, std::string_view text) { (void)::send(c, text.data(), text.size(), MSG_NOSIGNAL); }

  // Serves the connection `c` until it closes, or once for the behaviours that end it.
  void serve(unique_fd c) {
    while (read_request(c.get())) {
      switch (behaviour_) {
        case behaviour::answer: send_text(c.get(), ok); continue;
        case behaviour::answer_503: send_text(c.get(), unavailable); continue;
        case behaviour::answer_close: send_text(c.get(), ok_close); break;
        case behaviour::answer_then_idle_close: send_text(c.get(), ok); break;
        case behaviour::reset: {
          const linger abortive{1, 0};
          ::setsockopt(c.get(), SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive);
          break;
        }
        case behaviour::close: break;
        case behaviour::silent:
          while (!stop_.load() && ::poll(nullptr, 0, 10) == 0) {
          }
          break;
        case behaviour::half_answer: send_text(c.get(), ok.substr(0, ok.size() - 1)); break;
      }
      break;
    }
    c.reset();
    ++closed_;
  }

  behaviour behaviour_;
  unique_fd listener_;
  endpoint at_;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::atomic<int> closed_{0};
  std::thread thread_;
  std::vector<std::thread> connections_;  // one per accepted connection, joined at the end
};

// A loopback port bound but not listening: a connect there is refused, and no other process
// can take the port while the socket is held.
struct refusing_port {
  unique_fd fd{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  endpoint at;
  refusing_port() {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    ::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), length);
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&address), &length);
    at = endpoint::loopback_v4(ntohs(address.sin_port));
  }
};

TEST(DrillRestartLoad, ACompleteResponseIsAnswered) {
  fake_server server(behaviour::answer);
  EXPECT_EQ(short_request(server.at(), 2s), request_end::answered);
  keepalive_client client(server.at());
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(client.next(2s), request_end::answered) << i;
  }
  EXPECT_EQ(server.accepted(), 2) << "the keep-alive client used one connection";
}

// The fleet scenario counts a balancer's 5xx as a client error: each answer's status is read.
TEST(DrillRestartLoad, AnAnswersStatusIsReported) {
  fake_server good(behaviour::answer);
  fake_server bad(behaviour::answer_503);
  int status = 0;
  EXPECT_EQ(short_request(good.at(), 2s, &status), request_end::answered);
  EXPECT_EQ(status, 200);
  EXPECT_EQ(short_request(bad.at(), 2s, &status), request_end::answered);
  EXPECT_EQ(status, 503);
  keepalive_client client(bad.at());
  for (int i = 0; i < 3; ++i) {
    status = 0;
    EXPECT_EQ(client.next(2s, &status), request_end::answered) << i;
    EXPECT_EQ(status, 503) << i;
  }
  const refusing_port port;
  status = 7;
  EXPECT_EQ(short_request(port.at, 2s, &status), request_end::refused);
  EXPECT_EQ(status, 0) << "no answer, no status";
}

TEST(DrillRestartLoad, AConnectNothingListensForIsRefused) {
  const refusing_port port;
  EXPECT_EQ(short_request(port.at, 2s), request_end::refused);
  keepalive_client client(port.at);
  EXPECT_EQ(client.next(2s), request_end::refused);
}

TEST(DrillRestartLoad, AResetAfterTheRequestIsReset) {
  fake_server server(behaviour::reset);
  EXPECT_EQ(short_request(server.at(), 2s), request_end::reset);
  keepalive_client client(server.at());
  EXPECT_EQ(client.next(2s), request_end::reset);
}

TEST(DrillRestartLoad, ACloseWithoutAnAnswerIsUnanswered) {
  fake_server server(behaviour::close);
  EXPECT_EQ(short_request(server.at(), 2s), request_end::unanswered);
  keepalive_client client(server.at());
  EXPECT_EQ(client.next(2s), request_end::unanswered);
}

TEST(DrillRestartLoad, APartialResponseThenACloseIsUnanswered) {
  fake_server server(behaviour::half_answer);
  EXPECT_EQ(short_request(server.at(), 2s), request_end::unanswered);
}

TEST(DrillRestartLoad, SilenceUntilTheDeadlineIsUnanswered) {
  fake_server server(behaviour::silent);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(short_request(server.at(), 200ms), request_end::unanswered);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 200ms);
}

TEST(DrillRestartLoad, KeepAliveReconnectsAfterConnectionCloseWithoutALoss) {
  fake_server server(behaviour::answer_close);
  keepalive_client client(server.at());
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(client.next(2s), request_end::answered) << i;
  }
  EXPECT_EQ(server.accepted(), 4);
}

TEST(DrillRestartLoad, KeepAliveReconnectsAfterAnIdleCloseWithoutALoss) {
  fake_server server(behaviour::answer_then_idle_close);
  keepalive_client client(server.at());
  ASSERT_EQ(client.next(2s), request_end::answered);
  // The server closed the idle connection after its answer; the client's next request goes
  // on a new connection once the close has arrived.
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (server.closed() < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  ASSERT_EQ(server.closed(), 1);
  EXPECT_EQ(client.next(2s), request_end::answered);
  EXPECT_EQ(server.accepted(), 2);
}

// Waits (at most 10 s) until `load` counted `n` requests in all.
template <class Load>
transient::tool::request_counts wait_counted(const Load& load, std::uint64_t n) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  auto c = load.counts();
  while (c.answered + c.lost() + c.not_sent < n && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
    c = load.counts();
  }
  return c;
}

TEST(DrillRestartLoad, TheLoadCountsEachThreadsRequestsInTheirColumn) {
  const transient::tool::load_shape shape{2, 2, 2s, 1ms};
  {
    fake_server server(behaviour::answer);
    transient::tool::restart_load load(server.at(), shape);
    wait_counted(load, 50);
    const auto c = load.stop();
    EXPECT_GE(c.answered, 50U);
    EXPECT_EQ(c.lost() + c.not_sent, 0U);
  }
  {
    const refusing_port port;
    transient::tool::restart_load load(port.at, shape);
    wait_counted(load, 20);
    const auto c = load.stop();
    EXPECT_GE(c.refused, 20U);
    EXPECT_EQ(c.answered + c.reset + c.unanswered + c.not_sent, 0U);
  }
  {
    fake_server server(behaviour::reset);
    transient::tool::restart_load load(server.at(), shape);
    wait_counted(load, 20);
    const auto c = load.stop();
    EXPECT_GE(c.reset, 20U);
    EXPECT_EQ(c.answered + c.refused + c.unanswered + c.not_sent, 0U);
  }
}

TEST(DrillRestartLoad, ServesUpgradeLinesAreRead) {
  const auto h = transient::tool::parse_handover_line("upgrade: first accept 3.25 ms after the signal to PID 4242");
  ASSERT_TRUE(h.has_value());
  EXPECT_DOUBLE_EQ(h->ms, 3.25);
  EXPECT_EQ(h->old, 4242);
  EXPECT_FALSE(transient::tool::parse_handover_line("upgrade failed: timeout; still serving").has_value());
  EXPECT_EQ(transient::tool::parse_took_over_line("upgrade: PID 77 took over the listeners in 4 ms; draining"), 77);
  EXPECT_FALSE(transient::tool::parse_took_over_line("upgrade: first accept 1 ms after the signal to PID 5"));
}

}  // namespace
