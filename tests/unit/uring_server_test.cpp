// ctest-labels: threads
// The io_uring server: serving, the budget with shed_mode::queue (clients beyond it stay in
// the backlog), the accept-errno matrix through the ring's seam, a completion queue overflow,
// and stops while paused and while backing off. Skipped, saying why, without io_uring.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <deque>
#include <future>
#include <mutex>
#include <thread>

#include "support/checking_echo.hpp"
#include "support/loopback.hpp"
#include "support/peer_addresses.hpp"
#include "transient/drivers/uring.hpp"
#include "transient/errors/classify.hpp"
#include "transient/testing/syscalls.hpp"

namespace {

using namespace std::chrono_literals;
using transient::connection;
using transient::stop_reason;
using transient::unique_fd;

struct UringServer : ::testing::Test {
  void SetUp() override {
    std::string why;
    if (!transient::uring_available(why)) {
      GTEST_SKIP() << "io_uring unavailable: " << why;
    }
  }
};

std::vector<transient::listener> one_listener() {
  std::vector<transient::listener> ls;
  ls.push_back(transient::listen(transient::parse_endpoint("127.0.0.1:0")));
  return ls;
}

// Polls `what` every millisecond for up to `limit`.
template <typename Predicate>
bool eventually(Predicate what, std::chrono::milliseconds limit = 3s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!what()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// The server on a thread, stopped and joined at the end of the scope.
struct running {
  transient::uring_server& srv;
  std::future<transient::stop_info> result;
  explicit running(transient::uring_server& s)
      : srv(s), result(std::async(std::launch::async, [&s] {
          std::error_code ec;
          return s.run(ec);
        })) {}
  transient::stop_info stop() {
    srv.stop();
    EXPECT_EQ(result.wait_for(5s), std::future_status::ready) << "stop took too long";
    return result.get();
  }
  ~running() {
    if (result.valid()) {
      srv.stop();
      result.wait();
    }
  }
  running(const running&) = delete;
  running& operator=(const running&) = delete;
};

// A server on one loopback listener whose handler sends "a" and counts the connection,
// running on a thread (stopped and joined at the end of the scope); `where` is its address.
struct greeting_server {
  std::atomic<int> served{0};
  transient::uring_server srv;
  transient::endpoint where;
  running r;
  explicit greeting_server(const transient::server_options& options, transient::uring_options ring = {})
      : srv(
            one_listener(),
            [this](connection c) {
              ::send(c.native_handle(), "a", 1, MSG_NOSIGNAL);
              ++served;
            },
            options, ring),
        where(srv.local_endpoints().at(0)),
        r(srv) {}
};

TEST_F(UringServer, ServesClientsWithFewSubmissions) {
  transient::server_options options;
  options.max_connections = 1000;
  greeting_server s(options);
  constexpr int clients = 200;
  for (int i = 0; i < clients; ++i) {
    unique_fd c = transient::test::connect_to(s.where);
    ASSERT_EQ(transient::test::read_some(c.get(), 2s), "a") << "client " << i;
  }
  EXPECT_TRUE(s.r.stop().ok());
  EXPECT_EQ(s.served.load(), clients);
  EXPECT_EQ(s.srv.metrics().accepted, static_cast<std::uint64_t>(clients));
  // One multishot accept serves them all: far fewer submissions than connections.
  EXPECT_LT(s.srv.submissions(), static_cast<std::uint64_t>(clients) / 4) << s.srv.submissions();
}

TEST_F(UringServer, AClientQueuedBeforeTheServerIsMadeGoesToItsLoopHandlerOnTheLoopThread) {
  std::vector<transient::listener> listeners = one_listener();
  // Queued by the kernel before the server's acceptor arms its accept, so that its first
  // completion is there at once; the loop's handler is made later, on the loop's thread.
  const unique_fd early = transient::test::connect_to(listeners.front().local_endpoint());
  transient::test::loop_record record;
  transient::uring_server srv(std::move(listeners), [&](transient::loop& l) {
    return std::make_unique<transient::test::checking_echo>(l, record);
  });
  running r(srv);
  EXPECT_TRUE(eventually([&] { return record.accepted.load() == 1; }));
  EXPECT_TRUE(r.stop().ok());
  EXPECT_EQ(record.wrong_thread.load(), 0);
}

TEST_F(UringServer, ReadsPeerAddressesUnlessTurnedOff) {
  transient::test::expect_peer_addresses_read_unless_turned_off<transient::uring_server>();
}

// shed_mode::queue: the ring accepts no more than the budget; the others wait in the backlog
// (not closed) and each release lets exactly one more in.
TEST_F(UringServer, QueueModeKeepsClientsBeyondTheBudgetInTheBacklog) {
  std::mutex mutex;
  std::deque<connection> held;
  transient::server_options options;
  options.max_connections = 3;
  transient::uring_server srv(
      one_listener(),
      [&](connection c) {
        ::send(c.native_handle(), "a", 1, MSG_NOSIGNAL);
        const std::lock_guard lock(mutex);
        held.push_back(std::move(c));
      },
      options);
  const auto where = srv.local_endpoints().at(0);
  running r(srv);
  std::vector<unique_fd> clients;
  for (int i = 0; i < 10; ++i) {
    clients.push_back(transient::test::connect_to(where));
  }
  ASSERT_TRUE(eventually([&] {
    const std::lock_guard lock(mutex);
    return held.size() == 3;
  }));
  std::this_thread::sleep_for(50ms);
  {
    const std::lock_guard lock(mutex);
    EXPECT_EQ(held.size(), 3U) << "accepted beyond the budget";
  }
  for (std::size_t i = 0; i < 7; ++i) {
    {
      const std::lock_guard lock(mutex);
      held.pop_front();  // a release, on this thread
    }
    ASSERT_TRUE(eventually([&] {
      const std::lock_guard lock(mutex);
      return held.size() == 3;
    })) << "release "
        << i << " let no client in";
  }
  std::size_t answered = 0;
  for (auto& c : clients) {
    answered += transient::test::read_some(c.get(), 1s) == "a" ? 1 : 0;
  }
  EXPECT_EQ(answered, clients.size()) << "a client beyond the budget was closed instead of queued";
  const auto m = srv.metrics();
  EXPECT_EQ(m.shed[static_cast<std::size_t>(transient::shed_reason::budget)], 0U);
  EXPECT_TRUE(r.stop().ok());
  const std::lock_guard lock(mutex);
  held.clear();
}

// ---- the errno matrix through the ring's seam ------------------------------------------------

// The scripted completion: replaces the results of accept completions with the queued errnos
// (closing the descriptor the kernel gave), then lets them through.
std::mutex script_mutex;
std::deque<int> script;
std::atomic<int> completions{0};

int scripted_result(int result) {
  ++completions;
  const std::lock_guard lock(script_mutex);
  if (script.empty()) {
    return result;
  }
  const int error = script.front();
  script.pop_front();
  if (result >= 0) {
    ::close(result);
  }
  return -error;
}

void set_script(std::initializer_list<int> errnos) {
  const std::lock_guard lock(script_mutex);
  script.assign(errnos);
  completions = 0;
}

// Options for a server whose accept completions follow the script, with no log lines.
transient::server_options scripted_options(unsigned max_connections) {
  transient::server_options options;
  options.max_connections = max_connections;
  options.policy.sink = [](const transient::policy_event&) {};
  static const transient::syscalls scripted = [] {
    transient::syscalls sys;
    sys.uring_accept_result = scripted_result;
    return sys;
  }();
  options.sys = &scripted;
  return options;
}

// The same with room for 100 connections, backoff pauses of `pause` and no watchdog.
transient::server_options scripted_options_pausing(std::chrono::milliseconds pause) {
  transient::server_options options = scripted_options(100);
  options.policy.backoff.initial = pause;
  options.policy.backoff.cap = pause;
  options.policy.stall_timeout = 0ms;
  return options;
}

struct matrix_case {
  int error;
  transient::action what;  // classify's verdict, which the server must follow
};

TEST_F(UringServer, AcceptErrnoMatrixThroughTheRing) {
  const std::vector<matrix_case> cases = {
      {ECONNABORTED, transient::action::skip}, {EPROTO, transient::action::skip},
      {EPERM, transient::action::skip},        {EMFILE, transient::action::back_off},
      {ENFILE, transient::action::back_off},   {ENOBUFS, transient::action::back_off},
      {ENOMEM, transient::action::back_off},   {EBADF, transient::action::fail},
      {ENOTSOCK, transient::action::fail},     {EINTR, transient::action::retry},
  };
  for (const matrix_case& c : cases) {
    SCOPED_TRACE(std::string(transient::errno_name(c.error)));
    ASSERT_EQ(transient::classify(transient::operation::accept, std::error_code(c.error, std::system_category())).what,
              c.what);
    set_script({c.error});
    greeting_server s(scripted_options_pausing(50ms));
    unique_fd first = transient::test::connect_to(s.where);  // its completion becomes the error
    if (c.what == transient::action::fail) {
      ASSERT_EQ(s.r.result.wait_for(3s), std::future_status::ready) << "the server did not stop";
      const transient::stop_info info = s.r.result.get();
      EXPECT_EQ(info.reason, stop_reason::programming_error);
      EXPECT_EQ(info.error, std::error_code(c.error, std::system_category()));
      continue;
    }
    unique_fd second = transient::test::connect_to(s.where);
    EXPECT_EQ(transient::test::read_some(second.get(), 2s), "a") << "the next client was not served";
    if (c.what == transient::action::back_off) {
      const auto m = s.srv.metrics();
      EXPECT_TRUE(eventually([&] {
        return s.srv.metrics().pauses[static_cast<std::size_t>(transient::pause_reason::backoff)] == 1;
      })) << "no backoff pause";
      static_cast<void>(m);
    } else if (c.what == transient::action::retry) {
      EXPECT_TRUE(eventually([&] { return s.srv.metrics().retried == 1; })) << "not retried";
    } else {
      EXPECT_TRUE(eventually([&] {
        const auto m = s.srv.metrics();
        std::uint64_t skipped = 0;
        for (const auto n : m.skipped) {
          skipped += n;
        }
        return skipped == 1;
      })) << "not skipped";
    }
    EXPECT_TRUE(s.r.stop().ok());
    EXPECT_EQ(s.served.load(), 1);
  }
}

// A multishot accept that the kernel ends with an error of one connection (ECONNABORTED,
// EPROTO, EPERM) or an interruption (EINTR): the completion has no IORING_CQE_F_MORE, the
// request is over, and the driver must submit a new one, or no client is ever accepted again.
// The seam's failure is handled as exactly such a completion (its request ended, the kernel's
// cancelled behind it); the clients after it are served by the new request.
TEST_F(UringServer, AMultishotAcceptEndedByASkippedErrorIsArmedAgain) {
  for (const int error : {ECONNABORTED, EPROTO, EPERM, EINTR}) {
    SCOPED_TRACE(std::string(transient::errno_name(error)));
    set_script({error});
    greeting_server s(scripted_options(1000));  // far more free places than a burst: a multishot accept
    const unique_fd ended = transient::test::connect_to(s.where);  // its completion ends the request
    ASSERT_TRUE(eventually([] { return completions.load() >= 1; })) << "no accept completion";
    for (int i = 0; i < 3; ++i) {
      const unique_fd next = transient::test::connect_to(s.where);
      ASSERT_EQ(transient::test::read_some(next.get(), 2s), "a") << "client " << i << " after the ended accept";
    }
    EXPECT_TRUE(s.r.stop().ok());
    EXPECT_EQ(s.served.load(), 3);
  }
}

// EMFILE through the seam while the multishot is still armed in the kernel: the server does
// not re-submit at once (no spin through the ring), but after the backoff.
TEST_F(UringServer, EmfileIsNotResubmittedAtOnce) {
  set_script({EMFILE});
  transient::server_options options = scripted_options_pausing(1s);
  options.policy.backoff.mode = transient::jitter::none;
  std::atomic<int> served{0};
  transient::uring_server srv(
      one_listener(), [&](connection) { ++served; }, options);
  const auto where = srv.local_endpoints().at(0);
  running r(srv);
  unique_fd first = transient::test::connect_to(where);
  // Degraded is published after the loop applied the pause, which cancels the multishot accept
  // the seam's failure left armed in the kernel (a real EMFILE ends it in the kernel).
  ASSERT_TRUE(eventually([&] { return srv.health().state == transient::health_state::degraded; }));
  unique_fd second = transient::test::connect_to(where);
  std::this_thread::sleep_for(300ms);  // inside the backoff: no accept request in the ring
  EXPECT_EQ(served.load(), 0) << "accepted during the backoff pause";
  EXPECT_EQ(srv.health().state, transient::health_state::degraded);
  EXPECT_TRUE(eventually([&] { return served.load() == 1; }, 3s)) << "not resumed after the backoff";
  EXPECT_TRUE(r.stop().ok());
}

// A completion queue of 4 entries and 40 clients at once: the overflow ends the multishot
// accept, and the driver submits it again; every client is served.
TEST_F(UringServer, CompletionQueueOverflowLosesNoClient) {
  transient::server_options options;
  options.max_connections = 1000;
  transient::uring_options ring;
  ring.entries = 2;
  greeting_server s(options, ring);
  std::vector<unique_fd> clients;
  for (int i = 0; i < 40; ++i) {
    clients.push_back(transient::test::connect_to(s.where));
  }
  // One deadline for all: a client lost in the overflow fails the test within it (rather than
  // after 2 s for each of 40 clients read in turn).
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  int answered = 0;
  for (auto& c : clients) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    answered += transient::test::read_some(c.get(), std::max(left, 0ms)) == "a" ? 1 : 0;
  }
  EXPECT_EQ(answered, 40);
  EXPECT_TRUE(s.r.stop().ok());
  EXPECT_EQ(s.served.load(), 40);
}

TEST_F(UringServer, StopsWhilePausedAtTheBudget) {
  std::vector<connection> held;
  transient::server_options options;
  options.max_connections = 1;
  transient::uring_server srv(
      one_listener(), [&](connection c) { held.push_back(std::move(c)); }, options);
  const auto where = srv.local_endpoints().at(0);
  running r(srv);
  unique_fd a = transient::test::connect_to(where);
  unique_fd b = transient::test::connect_to(where);
  ASSERT_TRUE(eventually([&] { return srv.health().state == transient::health_state::backpressure; }));
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(r.stop().ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  EXPECT_EQ(held.size(), 1U);
}

TEST_F(UringServer, StopsWhileBackingOff) {
  set_script({ENFILE});
  transient::uring_server srv(
      one_listener(), [](connection) {}, scripted_options_pausing(10s));
  const auto where = srv.local_endpoints().at(0);
  running r(srv);
  unique_fd a = transient::test::connect_to(where);
  ASSERT_TRUE(eventually([&] { return srv.health().state == transient::health_state::degraded; }));
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(r.stop().ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s) << "the stop waited for the backoff";
}

TEST_F(UringServer, HandlerExceptionStopsAndPropagates) {
  transient::uring_server srv(one_listener(), [](connection) { throw std::runtime_error("boom"); });
  const auto where = srv.local_endpoints().at(0);
  auto result = std::async(std::launch::async, [&] { return srv.run(); });
  unique_fd a = transient::test::connect_to(where);
  ASSERT_EQ(result.wait_for(3s), std::future_status::ready);
  EXPECT_THROW(result.get(), std::runtime_error);
}

TEST_F(UringServer, RejectsWhatTheEpollServerRejects) {
  EXPECT_THROW(transient::uring_server({}, [](connection) {}), std::system_error);
  transient::server_options options;
  options.policy.shed = transient::shed_mode::respond;  // without a refusal writer
  EXPECT_THROW(transient::uring_server(
                   one_listener(), [](connection) {}, options),
               std::system_error);
}

}  // namespace
