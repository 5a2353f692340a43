// The listener handover (sockets/handover.hpp) between real processes: a forked child plays
// the successor (or a peer that fails), over a socketpair. The child runs no GoogleTest macro:
// it reports through its exit status and _exits. Each failure must leave the sender's listener
// open and accepting, and no descriptor behind in the test process.
#include "transient/sockets/handover.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <string>
#include <system_error>
#include <vector>

#include "support/child_report.hpp"
#include "support/loopback.hpp"
#include "transient/errors/errors.hpp"
#include "transient/sockets/listener.hpp"

namespace {

using namespace std::chrono_literals;
using transient::endpoint;
using transient::error;
using transient::listener;
using transient::listener_offer;
using transient::unique_fd;

// The two ends of a connected AF_UNIX stream socket: the sender's and the receiver's.
struct channel {
  unique_fd sender;
  unique_fd receiver;
};

channel open_channel() {
  int fds[2] = {-1, -1};
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return {};
  }
  return {unique_fd(fds[0]), unique_fd(fds[1])};
}

// Forks; the child runs `body` and _exits with what it returns (or 99 after 10 s).
pid_t in_child(const std::function<int()>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(10);
    ::_exit(body());
  }
  return pid;
}

// Accepts one client on `fd` within 5 s, reads "ping" and answers "pong": true if all went.
bool answer_one(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 5000) != 1) {
    return false;
  }
  const unique_fd client(::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC));
  return client && transient::test::read_at_least(client.get(), 4, 5s) == "ping" &&
         transient::test::send_text(client.get(), "pong");
}

// True if `l` still takes a new client: it connects, and `l` accepts it.
bool still_accepting(const listener& l) {
  const unique_fd client = transient::test::connect_to(l.local_endpoint());
  pollfd p{l.native_handle(), POLLIN, 0};
  if (!client || ::poll(&p, 1, 5000) != 1) {
    return false;
  }
  return static_cast<bool>(unique_fd(::accept4(l.native_handle(), nullptr, nullptr, SOCK_CLOEXEC)));
}

bool cloexec_and_nonblocking(int fd) {
  return (::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0 && (::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0;
}

// The successor: takes over "http", reports ready, answers two clients. Exit status 0, or the
// step that failed.
int successor(int channel) {
  transient::take_over_options options;
  options.expected_names = {"http"};
  std::error_code ec;
  const auto taken = transient::take_over_listeners(channel, options, ec);
  if (ec || taken.size() != 1 || taken[0].name != "http") {
    return 2;
  }
  if (!cloexec_and_nonblocking(taken[0].socket.native_handle())) {
    return 3;
  }
  transient::report_ready(channel, ec);
  if (ec) {
    return 4;
  }
  return answer_one(taken[0].socket.native_handle()) && answer_one(taken[0].socket.native_handle()) ? 0 : 5;
}

TEST(Handover, TheSuccessorAnswersTheClientQueuedBeforeTheHandover) {
  const int descriptors_before = transient::test::open_descriptor_count();
  {
    listener l = transient::listen(endpoint::loopback_v4(0));
    const endpoint where = l.local_endpoint();
    const unique_fd queued = transient::test::connect_to(l.local_endpoint());
    ASSERT_TRUE(queued);
    ASSERT_TRUE(transient::test::send_text(queued.get(), "ping"));
    channel ch = open_channel();
    ASSERT_TRUE(ch.sender);
    const pid_t child = in_child([&] {
      l.close();  // the successor holds only what it takes over
      ch.sender.reset();
      return successor(ch.receiver.get());
    });
    ASSERT_GT(child, 0);
    ch.receiver.reset();

    const listener_offer offers[] = {{"http", l.native_handle()}};
    std::error_code ec;
    transient::hand_over_listeners(ch.sender.get(), offers, 5s, ec);
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_EQ(transient::await_ready(ch.sender.get(), 5s, ec), child);
    EXPECT_FALSE(ec) << ec.message();
    l.close();  // the old process lets go only once the successor serves

    EXPECT_EQ(transient::test::read_at_least(queued.get(), 4, 5s), "pong") << "the queued client, answered";
    const unique_fd later = transient::test::connect_to(where);  // after the old process closed its copy
    ASSERT_TRUE(later);
    ASSERT_TRUE(transient::test::send_text(later.get(), "ping"));
    EXPECT_EQ(transient::test::read_at_least(later.get(), 4, 5s), "pong") << "a new client, answered";
    EXPECT_EQ(transient::test::reap_within(child, 10s), 0);
  }
  EXPECT_EQ(transient::test::open_descriptor_count(), descriptors_before);
}

}  // namespace

namespace {

TEST(Handover, AReceiverThatDiesBeforeReadyIsAnIncompleteHandover) {
  const int descriptors_before = transient::test::open_descriptor_count();
  {
    const listener l = transient::listen(endpoint::loopback_v4(0));
    channel ch = open_channel();
    const pid_t child = in_child([&] {
      ch.sender.reset();
      std::error_code ec;
      const auto taken = transient::take_over_listeners(ch.receiver.get(), {}, ec);
      return ec || taken.size() != 1 ? 2 : 0;  // and exits without a word
    });
    ASSERT_GT(child, 0);
    ch.receiver.reset();
    const listener_offer offers[] = {{"http", l.native_handle()}};
    std::error_code ec;
    transient::hand_over_listeners(ch.sender.get(), offers, 5s, ec);
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_EQ(transient::await_ready(ch.sender.get(), 5s, ec), 0);
    EXPECT_EQ(ec, error::handover_incomplete) << ec.message();
    EXPECT_EQ(transient::test::reap_within(child, 10s), 0);
    EXPECT_TRUE(still_accepting(l));
  }
  EXPECT_EQ(transient::test::open_descriptor_count(), descriptors_before);
}

}  // namespace
