// The accept queue read from the kernel (listen_queue.hpp), on real loopback sockets: a
// listener's queue length and limit, a connection's time in the queue, the namespace counters.
#include "transient/sockets/listen_queue.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "transient/errors/errors.hpp"
#include "transient/sockets/listener.hpp"

namespace {

using namespace std::chrono_literals;

// The coarsest jiffy Linux is built with (HZ=100).
constexpr auto one_jiffy_at_most = 10ms;
using transient::endpoint;
using transient::unique_fd;

// A blocking client connected to `at` (the kernel completes the handshake without accept).
unique_fd connect_to(const endpoint& at) {
  unique_fd fd(::socket(at.is_v4() ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_storage address{};
  const socklen_t length = at.to_sockaddr(address);
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), length), 0);
  return fd;
}

TEST(ListenQueue, CountsTheConnectionsWaitingAndTheLimit) {
  transient::listen_options options;
  options.backlog = 16;
  const transient::listener l = transient::listen(endpoint::loopback_v4(0), options);
  EXPECT_EQ(transient::queue_of(l.native_handle()), (transient::listen_queue{0, 16}));
  std::vector<unique_fd> clients;
  for (int i = 0; i < 5; ++i) {
    clients.push_back(connect_to(l.local_endpoint()));
  }
  const transient::listen_queue q = transient::queue_of(l.native_handle());
  EXPECT_EQ(q.length, 5U);
  EXPECT_DOUBLE_EQ(q.fill(), 5.0 / 16.0);
  unique_fd accepted(::accept4(l.native_handle(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(accepted);
  EXPECT_EQ(transient::queue_of(l.native_handle()).length, 4U);
}

TEST(ListenQueue, RefusesASocketThatDoesNotListen) {
  unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  std::error_code ec;
  EXPECT_EQ(transient::queue_of(fd.get(), ec), transient::listen_queue{});
  EXPECT_EQ(ec, transient::condition::not_listening);
  EXPECT_THROW((void)transient::queue_of(-1), std::system_error);
}

TEST(ListenQueue, MeasuresTheWaitFromTheHandshakeNotFromLaterData) {
  const transient::listener l = transient::listen(endpoint::loopback_v4(0));
  const unique_fd client = connect_to(l.local_endpoint());
  std::this_thread::sleep_for(150ms);
  ASSERT_EQ(::send(client.get(), "GET /", 5, MSG_NOSIGNAL), 5);  // data later than the handshake
  std::this_thread::sleep_for(100ms);
  unique_fd accepted(::accept4(l.native_handle(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(accepted);
  // At least the sleeps, less one jiffy: the kernel counts whole jiffies from the one of the
  // handshake, so a wait reads up to one jiffy (10 ms at HZ=100) short; on a loaded machine it
  // may read longer, never shorter.
  EXPECT_GE(transient::queue_wait_of(accepted.get()), 250ms - one_jiffy_at_most);
}

// The stamp is the connection's last sent data: the handshake's SYN-ACK until the server first
// sends, then that send. So the wait is read before the first response.
TEST(ListenQueue, TheServersFirstSendEndsTheWaitItMeasures) {
  const transient::listener l = transient::listen(endpoint::loopback_v4(0));
  const unique_fd client = connect_to(l.local_endpoint());
  unique_fd accepted(::accept4(l.native_handle(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(accepted);
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (transient::queue_wait_of(accepted.get()) < 300ms && std::chrono::steady_clock::now() < deadline) {
    pollfd none{-1, 0, 0};
    (void)::poll(&none, 1, 20);
  }
  ASSERT_GE(transient::queue_wait_of(accepted.get()), 300ms);
  ASSERT_EQ(::send(accepted.get(), "200", 3, MSG_NOSIGNAL), 3);
  EXPECT_LT(transient::queue_wait_of(accepted.get()), 300ms) << "the send did not renew the stamp";
}

TEST(ListenQueue, ReadsTheNamespaceCounters) {
  std::error_code ec;
  const transient::listen_drops before = transient::read_listen_drops(ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_LE(before.overflows, before.drops);
}

// The reader keeps its descriptor of /proc/net/netstat: with every other descriptor taken it
// still reads the counters, where read_listen_drops() fails with EMFILE.
TEST(ListenQueue, TheReaderReadsTheCountersWithNoDescriptorFree) {
  const transient::listen_drops_reader reader;
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  std::vector<unique_fd> filler;
  rlimit lowered = saved;
  lowered.rlim_cur = 64;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lowered), 0);
  for (unique_fd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC)); fd;
       fd = unique_fd(::open("/dev/null", O_RDONLY | O_CLOEXEC))) {
    filler.push_back(std::move(fd));
  }
  std::error_code opened;
  (void)transient::read_listen_drops(opened);
  std::error_code kept;
  const transient::listen_drops counters = reader.read(kept);
  filler.clear();
  ::setrlimit(RLIMIT_NOFILE, &saved);
  EXPECT_EQ(opened, std::errc::too_many_files_open) << opened.message();
  EXPECT_FALSE(kept) << kept.message();
  EXPECT_LE(counters.overflows, counters.drops);
  const transient::listen_drops later = reader.read();
  EXPECT_GE(later.drops, counters.drops) << "the counters only grow";
}

TEST(ListenQueue, ReadsAnIpv6ListenersQueueAndItsConnectionsWait) {
  transient::listen_options options;
  options.backlog = 4;
  const transient::listener l = transient::listen(endpoint::loopback_v6(0), options);
  const unique_fd first = connect_to(l.local_endpoint());
  const unique_fd second = connect_to(l.local_endpoint());
  EXPECT_EQ(transient::queue_of(l.native_handle()), (transient::listen_queue{2, 4}));
  unique_fd accepted(::accept4(l.native_handle(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(accepted);
  std::error_code ec;
  const auto waited = transient::queue_wait_of(accepted.get(), ec);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_GE(waited, 0ms);
  EXPECT_LT(waited, 60s) << "a wait measured from something other than this test's handshake";
  EXPECT_EQ(transient::queue_of(l.native_handle()).length, 1U);
}

// True once `fd`, connecting without blocking, completes its handshake within `deadline`.
bool handshake_completes(int fd, std::chrono::milliseconds deadline) {
  pollfd p{fd, POLLOUT, 0};
  if (::poll(&p, 1, static_cast<int>(deadline.count())) != 1) {
    return false;
  }
  int error = 0;
  socklen_t length = sizeof error;
  return ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 && error == 0;
}

// Clients that connect without blocking to `at` until the kernel stops completing their
// handshakes (at most `most`); the last one in the list is the first left unanswered.
std::vector<unique_fd> connect_until_refused(const endpoint& at, int most, int& completed) {
  std::vector<unique_fd> clients;
  completed = 0;
  for (int i = 0; i < most; ++i) {
    unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_storage address{};
    const socklen_t length = at.to_sockaddr(address);
    const int rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), length);
    EXPECT_TRUE(rc == 0 || errno == EINPROGRESS) << std::strerror(errno);
    const bool done = handshake_completes(fd.get(), 500ms);
    clients.push_back(std::move(fd));
    if (!done) {
      break;
    }
    ++completed;
  }
  return clients;
}

// A full queue: the kernel takes one connection more than the limit, then drops the next
// client's SYN and counts a ListenOverflows (a namespace-wide counter: other programs may add
// to it, so it is asserted to grow, not by how much).
TEST(ListenQueue, AFullQueueHoldsAtMostOneMoreThanItsLimitAndCountsTheOverflow) {
  transient::listen_options options;
  options.backlog = 2;
  const transient::listener l = transient::listen(endpoint::loopback_v4(0), options);
  const transient::listen_drops before = transient::read_listen_drops();
  int completed = 0;
  const auto clients = connect_until_refused(l.local_endpoint(), 16, completed);
  EXPECT_LT(completed, 16) << "the kernel completed every handshake: the queue never filled";
  const transient::listen_queue q = transient::queue_of(l.native_handle());
  EXPECT_EQ(q.limit, 2U);
  EXPECT_GE(q.length, q.limit) << "handshakes stopped before the queue was full";
  EXPECT_LE(q.length, q.limit + 1);
  EXPECT_GT(q.fill(), 0.99);
  // The overflow is counted as the SYN arrives; the deadline only covers a late softirq.
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  transient::listen_drops after = transient::read_listen_drops();
  while (after.overflows == before.overflows && std::chrono::steady_clock::now() < deadline) {
    pollfd none{-1, 0, 0};
    (void)::poll(&none, 1, 10);
    after = transient::read_listen_drops();
  }
  EXPECT_GE(after.overflows, before.overflows + 1);
  EXPECT_GE(after.drops, before.drops + 1) << "ListenDrops counts the overflows too";
}

TEST(ListenQueue, TheWaitOfASocketThatIsNotTcpIsAnError) {
  const unique_fd udp(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  std::error_code ec;
  EXPECT_EQ(transient::queue_wait_of(udp.get(), ec), 0ms);
  EXPECT_EQ(ec, std::errc::operation_not_supported) << ec.message();
  EXPECT_EQ(transient::queue_of(udp.get(), ec), transient::listen_queue{});
  EXPECT_EQ(ec, std::errc::operation_not_supported) << ec.message();

  int pipe_ends[2];
  ASSERT_EQ(::pipe2(pipe_ends, O_CLOEXEC), 0);
  const unique_fd read_end(pipe_ends[0]);
  const unique_fd write_end(pipe_ends[1]);
  EXPECT_EQ(transient::queue_wait_of(read_end.get(), ec), 0ms);
  EXPECT_EQ(ec, std::errc::not_a_socket) << ec.message();

  EXPECT_EQ(transient::queue_wait_of(-1, ec), 0ms);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor) << ec.message();
}

// The throwing overloads say what they read and why it failed, with the error's code.
TEST(ListenQueue, TheThrowingOverloadsNameWhatFailed) {
  const auto thrown = [](auto call) -> std::system_error {
    try {
      call();
    } catch (const std::system_error& e) {
      return e;
    }
    return std::system_error(std::error_code(), "nothing thrown");
  };
  const auto bad_fd = std::make_error_code(std::errc::bad_file_descriptor);
  const auto no_queue = thrown([] { (void)transient::queue_of(-1); });
  EXPECT_EQ(no_queue.code(), std::errc::bad_file_descriptor);
  EXPECT_EQ(std::string(no_queue.what()), "accept queue: " + bad_fd.message());
  const auto no_wait = thrown([] { (void)transient::queue_wait_of(-1); });
  EXPECT_EQ(no_wait.code(), std::errc::bad_file_descriptor);
  EXPECT_EQ(std::string(no_wait.what()), "queue wait: " + bad_fd.message());

  const unique_fd unbound(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const auto not_listening = thrown([&] { (void)transient::queue_of(unbound.get()); });
  EXPECT_EQ(not_listening.code(), transient::condition::not_listening);
  EXPECT_EQ(std::string(not_listening.what()),
            "accept queue: " + make_error_code(transient::error::not_listening).message());
}

}  // namespace
