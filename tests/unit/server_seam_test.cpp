// ctest-labels: threads
// The server through the syscall seam: accept4 returns each errno of docs/errors.md's accept
// column, and sequences of them, and the server does what the verdict says.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <deque>
#include <future>
#include <mutex>
#include <thread>

#include "support/checking_echo.hpp"
#include "support/loopback.hpp"
#include "transient/drivers/server.hpp"
#include "transient/testing/syscalls.hpp"

namespace {

using namespace std::chrono_literals;
using transient::condition;
using transient::stop_reason;

// The scripted accept4: pops an errno per call while the script lasts, then calls the kernel.
struct accept_script {
  std::mutex mutex;
  std::deque<int> errnos;
  int calls = 0;  // every call, scripted or not
  int calls_failed = 0;
  transient::server* stop_on_call = nullptr;  // call stop() from inside accept (EINVAL after stop)
};
accept_script script;

int scripted_accept4(int fd, sockaddr* address, socklen_t* length, int flags) {
  transient::server* to_stop = nullptr;
  int error = 0;
  {
    const std::lock_guard lock(script.mutex);
    ++script.calls;
    if (!script.errnos.empty()) {
      error = script.errnos.front();
      script.errnos.pop_front();
      ++script.calls_failed;
      to_stop = script.stop_on_call;
    }
  }
  if (error == 0) {
    return ::accept4(fd, address, length, flags);
  }
  if (to_stop != nullptr) {
    to_stop->stop();
  }
  errno = error;
  return -1;
}

void set_script(std::initializer_list<int> errnos, transient::server* stop_on_call = nullptr) {
  const std::lock_guard lock(script.mutex);
  script.errnos.assign(errnos);
  script.calls = 0;
  script.calls_failed = 0;
  script.stop_on_call = stop_on_call;
}

int failed_calls() {
  const std::lock_guard lock(script.mutex);
  return script.calls_failed;
}

// Waits (at most 3 s) until accept4 was called `n` times in all.
bool calls_reach(int n) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  for (;;) {
    {
      const std::lock_guard lock(script.mutex);
      if (script.calls >= n) {
        return true;
      }
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// A server on 127.0.0.1 whose accept4 is scripted; counts the connections it is handed.
struct scripted_server {
  transient::endpoint where;
  std::vector<transient::unique_fd> waiting;  // clients connected before the server ran
  std::atomic<int> served{0};
  std::unique_ptr<transient::server> srv;
  std::future<transient::stop_info> result;

  explicit scripted_server(std::initializer_list<int> errnos, bool stop_in_accept = false,
                           transient::backoff_config backoff = {},
                           transient::shed_mode shed = transient::shed_mode::queue, int waiting_clients = 0) {
    auto l = transient::listen(transient::parse_endpoint("127.0.0.1:0"));
    where = l.local_endpoint();
    for (int i = 0; i < waiting_clients; ++i) {  // in the backlog before the first accept
      waiting.push_back(transient::test::connect_to(where));
    }
    std::vector<transient::listener> ls;
    ls.push_back(std::move(l));
    transient::server_options options;
    transient::syscalls sys;
    options.sys = &sys;
    sys.accept4 = &scripted_accept4;
    options.policy.stall_timeout = 0ms;
    options.policy.backoff = backoff;
    options.policy.shed = shed;
    options.policy.sink = [](const transient::policy_event&) {};  // quiet
    srv = std::make_unique<transient::server>(
        std::move(ls),
        [this](transient::connection c) {
          ::send(c.native_handle(), "k", 1, MSG_NOSIGNAL);
          served.fetch_add(1);
        },
        options);
    set_script(errnos, stop_in_accept ? srv.get() : nullptr);
    result = std::async(std::launch::async, [this] {
      std::error_code ec;
      return srv->run(ec);
    });
  }
  ~scripted_server() {
    srv->stop();
    if (result.valid()) {
      result.wait();
    }
    set_script({});
  }

  // Connects a client and says whether it was served (got the handler's byte) in time.
  bool client_served() {
    const auto client = transient::test::connect_to(where);
    return transient::test::read_some(client.get(), 3s) == "k";
  }
  transient::stop_info stopped_by_itself(std::chrono::milliseconds limit = 3s) {
    if (result.wait_for(limit) != std::future_status::ready) {
      return {stop_reason::other_error, std::make_error_code(std::errc::timed_out), "did not stop"};
    }
    return result.get();
  }
  transient::policy_metrics metrics() {
    srv->stop();
    result.wait();
    return srv->metrics();
  }
};

std::uint64_t at(const transient::policy_metrics::by_condition& counts, condition c) {
  return counts[static_cast<std::size_t>(c)];
}

struct served_case {
  int error;
  condition counted_as;
};

// What a scripted server whose first accept fails with `error` shows once it served the client
// after it: its metrics and how many accepts the script failed.
struct served_after {
  transient::policy_metrics metrics;
  int failed_calls;
};

served_after serve_after(int error) {
  scripted_server s({error});
  EXPECT_TRUE(s.client_served()) << error;
  return {s.metrics(), failed_calls()};
}

TEST(ServerSeam, SkipsConnectionsThatDiedAndServesTheNext) {
  for (const served_case c : {served_case{ECONNABORTED, condition::connection_failed},
                              {EPROTO, condition::connection_failed},
                              {ENOPROTOOPT, condition::connection_failed},
                              {ENETDOWN, condition::connection_failed},
                              {ENETUNREACH, condition::connection_failed},
                              {EHOSTDOWN, condition::connection_failed},
                              {EHOSTUNREACH, condition::connection_failed},
                              {ENONET, condition::connection_failed},
                              {ECONNRESET, condition::peer_gone},
                              {EPIPE, condition::peer_gone},
                              {ESHUTDOWN, condition::peer_gone},
                              {EPERM, condition::permission_denied},
                              {EACCES, condition::permission_denied}}) {
    const auto [m, failed] = serve_after(c.error);
    EXPECT_EQ(at(m.skipped, c.counted_as), 1U) << c.error;
    EXPECT_EQ(m.accepted, 1U) << c.error;
    EXPECT_EQ(failed, 1) << c.error;
  }
}

TEST(ServerSeam, BacksOffOnExhaustionThenServes) {
  for (const served_case c : {served_case{EMFILE, condition::process_fd_limit},
                              {ENFILE, condition::system_fd_limit},
                              {ENOBUFS, condition::memory_exhausted},
                              {ENOMEM, condition::memory_exhausted},
                              {ENOENT, condition::unclassified}}) {
    const auto m = serve_after(c.error).metrics;
    EXPECT_EQ(at(m.failed, c.counted_as), 1U) << c.error;
    EXPECT_EQ(m.pauses[static_cast<std::size_t>(transient::pause_reason::backoff)], 1U) << c.error;
    EXPECT_EQ(m.accepted, 1U) << c.error;
  }
}

// A shed mode other than queue keeps a spare descriptor: under EMFILE the server frees it,
// accepts the waiting client, sheds it at once (instead of leaving it for the whole episode)
// and takes the spare descriptor back.
TEST(ServerSeam, UnderEmfileTheReserveShedsTheWaitingClient) {
  for (const auto mode : {transient::shed_mode::close, transient::shed_mode::reset}) {
    scripted_server s({EMFILE}, false, {}, mode);
    const auto client = transient::test::connect_to(s.where);
    EXPECT_TRUE(transient::test::closed_by_peer(client.get(), 3s)) << to_string(mode);
    // The EMFILE, the spare descriptor's accept of that client, and the EAGAIN that ends the drain:
    // a client arriving before that would be drained (shed) too.
    ASSERT_TRUE(calls_reach(3)) << to_string(mode);
    EXPECT_TRUE(s.client_served()) << to_string(mode) << ": the next client is served as usual";
    const auto m = s.metrics();
    EXPECT_EQ(m.shed[static_cast<std::size_t>(transient::shed_reason::budget)], 1U) << to_string(mode);
    EXPECT_EQ(m.accepted, 1U) << to_string(mode);
    EXPECT_EQ(at(m.failed, condition::process_fd_limit), 1U) << to_string(mode);
  }
}

// Under EMFILE the spare descriptor drains the backlog in one go (up to accepts_per_ready), as libuv
// does: shedding one client per backoff step would keep the rest waiting for seconds.
TEST(ServerSeam, UnderEmfileTheReserveShedsEveryWaitingClientAtOnce) {
  transient::backoff_config ten_seconds;  // the next retry comes too late for this test
  ten_seconds.initial = 10s;
  ten_seconds.cap = 10s;
  scripted_server s({EMFILE}, false, ten_seconds, transient::shed_mode::close, 3);
  for (const auto& client : s.waiting) {
    EXPECT_TRUE(transient::test::closed_by_peer(client.get(), 3s));
  }
  const auto m = s.metrics();
  EXPECT_EQ(m.shed[static_cast<std::size_t>(transient::shed_reason::budget)], 3U);
  EXPECT_EQ(m.accepted, 0U);
}

TEST(ServerSeam, WouldBlockWaitsForReadiness) {
  scripted_server s({EAGAIN, EAGAIN});
  EXPECT_TRUE(s.client_served());
  const auto m = s.metrics();
  EXPECT_EQ(m.accepted, 1U);
  EXPECT_EQ(m.pauses[0] + m.pauses[1], 0U);
  EXPECT_EQ(failed_calls(), 2);
}

TEST(ServerSeam, InterruptStormIsRetried) {
  std::vector<int> storm(1000, EINTR);
  scripted_server s({});
  set_script({});
  {
    const std::lock_guard lock(script.mutex);
    script.errnos.assign(storm.begin(), storm.end());
  }
  EXPECT_TRUE(s.client_served());
  const auto m = s.metrics();
  EXPECT_EQ(m.retried, 1000U);
  EXPECT_EQ(m.accepted, 1U);
}

TEST(ServerSeam, MemoryBurstBacksOffRepeatedlyThenRecovers) {
  scripted_server s({ENOBUFS, ENOBUFS, ENOBUFS, ENOBUFS, ENOBUFS});
  EXPECT_TRUE(s.client_served());
  const auto m = s.metrics();
  EXPECT_EQ(at(m.failed, condition::memory_exhausted), 5U);
  EXPECT_EQ(m.accepted, 1U);
  EXPECT_GT(m.paused[static_cast<std::size_t>(transient::pause_reason::backoff)], 0ns);
}

TEST(ServerSeam, StopsPromptlyWhileBackingOff) {
  transient::backoff_config one_second;  // every pause lasts exactly 1 s
  one_second.initial = 1s;
  one_second.cap = 1s;
  scripted_server s({ENOBUFS}, false, one_second);
  const auto client = transient::test::connect_to(s.where);
  const auto deadline = std::chrono::steady_clock::now() + 3s;
  while (failed_calls() < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(2ms);
  }
  ASSERT_EQ(failed_calls(), 1);
  std::this_thread::sleep_for(20ms);  // well inside the 1 s pause
  const auto start = std::chrono::steady_clock::now();
  s.srv->stop();
  const transient::stop_info info = s.stopped_by_itself();
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(info.ok()) << info.diagnosis;
  EXPECT_EQ(s.served.load(), 0) << "the pause ended before stop()";
  // The issue asks for <= 10 ms (transient_bench_accept reports it); this bound still fails
  // if stop() waited for the backoff timer.
  EXPECT_LT(took, 200ms);
}

TEST(ServerSeam, EinvalIsADeadListener) {
  scripted_server s({EINVAL});
  const auto client = transient::test::connect_to(s.where);
  const transient::stop_info info = s.stopped_by_itself();
  EXPECT_EQ(info.reason, stop_reason::listener_dead) << info.diagnosis;
  EXPECT_TRUE(info.error == condition::not_listening);
  EXPECT_NE(info.diagnosis.find("127.0.0.1:"), std::string::npos) << info.diagnosis;
}

TEST(ServerSeam, EinvalAfterStopIsACleanStop) {
  scripted_server s({EINVAL}, /*stop_in_accept=*/true);
  const auto client = transient::test::connect_to(s.where);
  const transient::stop_info info = s.stopped_by_itself();
  EXPECT_EQ(failed_calls(), 1);
  EXPECT_EQ(info.reason, stop_reason::clean) << info.diagnosis;
  EXPECT_FALSE(info.error);
}

TEST(ServerSeam, ProgrammingErrorsStop) {
  for (const int error : {EBADF, ENOTSOCK, EFAULT, EOPNOTSUPP}) {
    scripted_server s({error});
    const auto client = transient::test::connect_to(s.where);
    const transient::stop_info info = s.stopped_by_itself();
    EXPECT_EQ(info.reason, stop_reason::programming_error) << error << ": " << info.diagnosis;
    EXPECT_EQ(info.error.value(), error);
    EXPECT_EQ(s.served.load(), 0);
  }
}

TEST(ServerSeam, EpollWaitInterruptionsAreHarmless) {
  static std::atomic<int> interruptions{0};
  interruptions = 0;
  auto l = transient::listen(transient::parse_endpoint("127.0.0.1:0"));
  const auto where = l.local_endpoint();
  std::vector<transient::listener> ls;
  ls.push_back(std::move(l));
  transient::server_options options;
  transient::syscalls sys;
  options.sys = &sys;
  sys.epoll_wait = [](int epfd, epoll_event* events, int max, int timeout) {
    if (interruptions.fetch_add(1) % 2 == 0) {
      errno = EINTR;
      return -1;
    }
    return ::epoll_wait(epfd, events, max, timeout);
  };
  std::atomic<int> served{0};
  transient::server srv(
      std::move(ls),
      [&](transient::connection c) {
        ::send(c.native_handle(), "k", 1, MSG_NOSIGNAL);
        served.fetch_add(1);
      },
      options);
  auto result = std::async(std::launch::async, [&] { return srv.run(); });
  for (int i = 0; i < 10; ++i) {
    const auto client = transient::test::connect_to(where);
    EXPECT_EQ(transient::test::read_some(client.get(), 3s), "k");
  }
  srv.stop();
  EXPECT_TRUE(result.get().ok());
  EXPECT_EQ(served.load(), 10);
  // The first call is interrupted, so serving anyone took a second call. (How many calls
  // there were depends on timing: a loop may find the next client in the same accept burst.)
  EXPECT_GE(interruptions.load(), 2);
}

// The server copies the table when it is constructed: a table changed (or gone) afterwards is
// not the server's, so a test may build its table in a helper and let it go out of scope.
TEST(ServerSeam, TheServerKeepsTheTableItWasConstructedWith) {
  static std::atomic<int> counted{0};
  counted = 0;
  std::vector<transient::listener> ls;
  ls.push_back(transient::listen(transient::parse_endpoint("127.0.0.1:0")));
  const auto where = ls.front().local_endpoint();
  transient::syscalls sys;
  sys.accept4 = [](int fd, sockaddr* address, socklen_t* length, int flags) {
    counted.fetch_add(1);
    return ::accept4(fd, address, length, flags);
  };
  transient::server_options options;
  options.sys = &sys;
  options.policy.sink = [](const transient::policy_event&) {};
  transient::server srv(
      std::move(ls), [](transient::connection c) { ::send(c.native_handle(), "k", 1, MSG_NOSIGNAL); }, options);
  sys.accept4 = [](int, sockaddr*, socklen_t*, int) {
    errno = EPERM;
    return -1;
  };
  auto result = std::async(std::launch::async, [&] { return srv.run(); });
  const auto client = transient::test::connect_to(where);
  EXPECT_EQ(transient::test::read_some(client.get(), 3s), "k");
  srv.stop();
  EXPECT_TRUE(result.get().ok());
  EXPECT_GE(counted.load(), 1) << "the server did not use the table it was constructed with";
}

// ---- the listener's registration ---------------------------------------------------------

// The events of every EPOLL_CTL_ADD of a listening socket, and the count of its removals,
// through the seam's epoll_ctl.
namespace registration {
std::mutex mutex;
std::vector<std::uint32_t> listener_adds;
int listener_removals = 0;

bool listens(int fd) {
  int accepting = 0;
  socklen_t length = sizeof accepting;
  return ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &length) == 0 && accepting == 1;
}

int epoll_ctl(int epfd, int op, int fd, epoll_event* event) {
  if ((op == EPOLL_CTL_ADD || op == EPOLL_CTL_DEL) && listens(fd)) {
    const std::lock_guard lock(mutex);
    if (op == EPOLL_CTL_DEL) {
      ++listener_removals;
    } else if (event != nullptr) {
      listener_adds.push_back(event->events);
    }
  }
  return ::epoll_ctl(epfd, op, fd, event);
}

std::vector<std::uint32_t> adds() {
  const std::lock_guard lock(mutex);
  return listener_adds;
}

int removals() {
  const std::lock_guard lock(mutex);
  return listener_removals;
}

// Waits (at most 3 s) until `what()` holds.
template <typename Predicate>
bool within_3s(Predicate what) {
  const auto deadline = std::chrono::steady_clock::now() + 3s;
  while (!what() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  return what();
}
}  // namespace registration

// Loops sharing one listener register it with EPOLLEXCLUSIVE, so that a client wakes one loop,
// not all of them; every time: at the start and again after each pause (a full budget), which
// removes the listener (EPOLLEXCLUSIVE cannot be modified in place).
TEST(ServerSeam, LoopsSharingAListenerRegisterItExclusivelyEveryTime) {
  {
    const std::lock_guard lock(registration::mutex);
    registration::listener_adds.clear();
    registration::listener_removals = 0;
  }
  auto l = transient::listen(transient::parse_endpoint("127.0.0.1:0"));
  const auto where = l.local_endpoint();
  std::vector<transient::listener> ls;
  ls.push_back(std::move(l));
  transient::server_options options;
  options.threads = 2;
  options.max_connections = 1;
  transient::syscalls sys;
  options.sys = &sys;
  sys.epoll_ctl = registration::epoll_ctl;
  options.policy.sink = [](const transient::policy_event&) {};
  std::mutex held_mutex;
  std::vector<transient::connection> held;
  bool released = false;
  transient::server srv(
      std::move(ls),
      [&](transient::connection c) {
        ::send(c.native_handle(), "k", 1, MSG_NOSIGNAL);
        const std::lock_guard lock(held_mutex);
        if (!released) {  // the first is held (the budget is full); the rest close at once
          held.push_back(std::move(c));
        }
      },
      options);
  auto result = std::async(std::launch::async, [&] { return srv.run(); });
  using registration::within_3s;
  EXPECT_TRUE(within_3s([] { return registration::adds().size() >= 2; })) << "one registration per loop";
  // Fill the budget: the loop that accepted pauses (removes the listener), the other one too
  // when the next client wakes it.
  const auto first = transient::test::connect_to(where);
  ASSERT_EQ(transient::test::read_some(first.get(), 3s), "k");
  const auto second = transient::test::connect_to(where);  // waits in the backlog
  ASSERT_TRUE(within_3s([] { return registration::removals() >= 2; })) << "both loops pause at the full budget";
  const auto before_release = registration::adds().size();
  {
    const std::lock_guard lock(held_mutex);
    held.clear();
    released = true;
  }
  // The loop resumed by the release serves the client, finds the backlog empty and waits for
  // the next one: it registers the listener again.
  EXPECT_EQ(transient::test::read_some(second.get(), 3s), "k") << "not served after the release";
  EXPECT_TRUE(within_3s([&] { return registration::adds().size() > before_release; }))
      << "no registration after the pause";
  srv.stop();
  EXPECT_EQ(result.wait_for(5s), std::future_status::ready);
  const auto adds = registration::adds();
  for (std::size_t i = 0; i < adds.size(); ++i) {
    EXPECT_EQ(adds[i], static_cast<std::uint32_t>(EPOLLIN | EPOLLEXCLUSIVE)) << "registration " << i;
  }
}

}  // namespace

// A loop whose epoll_wait fails cannot wait for anything its handler watches: it ends at once,
// closing what the handler holds, and the server stops with the error (never a spin).
TEST(ServerSeam, AFailingEpollWaitEndsTheLoopEvenWithConnectionsHeld) {
  static std::atomic<bool> failing{false};
  failing = false;
  transient::test::loop_record record;
  record.keep_after_stop = true;
  transient::server_options options;
  transient::syscalls sys;
  options.sys = &sys;
  sys.epoll_wait = [](int epfd, epoll_event* events, int max, int timeout) {
    if (failing.load()) {
      errno = EBADF;
      return -1;
    }
    return ::epoll_wait(epfd, events, max, timeout);
  };
  std::vector<transient::listener> ls;
  ls.push_back(transient::listen(transient::parse_endpoint("127.0.0.1:0")));
  const auto where = ls.front().local_endpoint();
  transient::server srv(
      std::move(ls),
      [&record](transient::loop& l) { return std::make_unique<transient::test::checking_echo>(l, record); }, options);
  std::error_code ec;
  auto result = std::async(std::launch::async, [&] { return srv.run(ec); });
  const auto client = transient::test::connect_to(where);
  ASSERT_TRUE(transient::test::send_text(client.get(), "a"));
  ASSERT_EQ(transient::test::read_some(client.get(), 3s), "a");
  failing = true;
  ASSERT_TRUE(transient::test::send_text(client.get(), "b"));  // wakes the loop into the failing wait
  ASSERT_EQ(result.wait_for(3s), std::future_status::ready) << "the loop went on after epoll_wait failed";
  const transient::stop_info info = result.get();
  EXPECT_EQ(info.error.value(), EBADF) << info.diagnosis;
  // "b" may have been echoed by the wait that was already under way when the seam began to fail.
  const std::string echoed = transient::test::read_some(client.get(), 2s);
  EXPECT_TRUE(echoed.empty() || echoed == "b") << echoed;
  EXPECT_TRUE(transient::test::closed_by_peer(client.get(), 2s)) << "the handler's connection closes with it";
}
