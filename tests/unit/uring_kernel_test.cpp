// The kernel facts the io_uring driver is designed from (uring.hpp, docs/design.md), each
// checked on this kernel with the raw ring, before the driver relies on it. Skipped, saying
// why, where io_uring is unavailable.
#include <liburing.h>
#include <sys/resource.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "support/loopback.hpp"
#include "transient/drivers/uring.hpp"
#include "transient/sockets/listener.hpp"

namespace {

using namespace std::chrono_literals;
using transient::unique_fd;

struct UringKernel : ::testing::Test {
  io_uring ring{};
  bool open = false;

  void SetUp() override {
    std::string why;
    if (!transient::uring_available(why)) {
      GTEST_SKIP() << "io_uring unavailable: " << why;
    }
  }
  void start(unsigned entries, unsigned cq_entries) {
    io_uring_params params{};
    params.flags = IORING_SETUP_CQSIZE;
    params.cq_entries = cq_entries;
    ASSERT_EQ(io_uring_queue_init_params(entries, &ring, &params), 0);
    open = true;
  }
  void TearDown() override {
    if (open) {
      io_uring_queue_exit(&ring);
    }
  }
  // Every completion waiting now (flushing an overflowed queue): {res, flags}.
  std::vector<std::pair<int, unsigned>> take() {
    std::vector<std::pair<int, unsigned>> out;
    io_uring_cqe* cqe = nullptr;
    while (io_uring_peek_batch_cqe(&ring, &cqe, 1) == 1) {
      out.emplace_back(cqe->res, cqe->flags);
      io_uring_cqe_seen(&ring, cqe);
    }
    return out;
  }
  void submit_multishot(int listener_fd) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    ASSERT_NE(sqe, nullptr);
    io_uring_prep_multishot_accept(sqe, listener_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    ASSERT_EQ(io_uring_submit(&ring), 1);
  }
};

// The driver reads "no completion right after the submit" as EAGAIN: the accept is issued
// inline, so a pending connection completes within io_uring_submit.
TEST_F(UringKernel, AcceptIsIssuedInlineAndAMultishotTakesTheWholeBacklog) {
  start(4, 64);
  transient::listener l = transient::listen(transient::parse_endpoint("127.0.0.1:0"));
  std::vector<unique_fd> clients;
  for (int i = 0; i < 5; ++i) {
    clients.push_back(transient::test::connect_to(l.local_endpoint()));
  }
  std::this_thread::sleep_for(20ms);  // the handshakes complete in the kernel
  submit_multishot(l.native_handle());
  const auto got = take();  // no wait: what the submit itself completed
  ASSERT_EQ(got.size(), 5U) << "the multishot accept took the backlog inline";
  for (const auto& [res, flags] : got) {
    EXPECT_GE(res, 0);
    EXPECT_NE(flags & IORING_CQE_F_MORE, 0U) << "still armed";
    ::close(res);
  }
  // With the queue empty, nothing more comes, and the request stays armed for the next one.
  EXPECT_TRUE(take().empty());
  unique_fd late = transient::test::connect_to(l.local_endpoint());
  io_uring_cqe* cqe = nullptr;
  __kernel_timespec ts{1, 0};
  ASSERT_EQ(io_uring_wait_cqe_timeout(&ring, &cqe, &ts), 0);
  EXPECT_GE(cqe->res, 0);
  EXPECT_NE(cqe->flags & IORING_CQE_F_MORE, 0U);
  ::close(cqe->res);
  io_uring_cqe_seen(&ring, cqe);
}

// EMFILE ends the multishot accept (no F_MORE) and leaves the connection in the backlog:
// re-submitting at once fails again, and accept4 gets it once a descriptor is free.
TEST_F(UringKernel, EmfileEndsTheMultishotAndLeavesTheConnectionInTheBacklog) {
  start(4, 16);
  transient::listener l = transient::listen(transient::parse_endpoint("127.0.0.1:0"));
  unique_fd client = transient::test::connect_to(l.local_endpoint());
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  std::vector<unique_fd> filler;
  rlimit low = saved;
  low.rlim_cur = static_cast<rlim_t>(transient::test::open_descriptor_count() + 8);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  for (int i = 0; i < 64; ++i) {
    unique_fd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!fd) {
      break;
    }
    filler.push_back(std::move(fd));
  }
  for (int attempt = 0; attempt < 2; ++attempt) {  // the second: the spin a runtime would make
    submit_multishot(l.native_handle());
    const auto got = take();
    ASSERT_EQ(got.size(), 1U);
    EXPECT_EQ(got[0].first, -EMFILE);
    EXPECT_EQ(got[0].second & IORING_CQE_F_MORE, 0U) << "a failed completion ends the multishot";
  }
  filler.pop_back();
  const int fd = ::accept4(l.native_handle(), nullptr, nullptr, SOCK_CLOEXEC);
  EXPECT_GE(fd, 0) << "the connection stayed in the backlog";
  if (fd >= 0) {
    ::close(fd);
  }
  filler.clear();
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
}

// A completion queue overflow ends the multishot accept too: its last completion carries no
// F_MORE, and the connections it did not take stay in the backlog.
TEST_F(UringKernel, CompletionQueueOverflowEndsTheMultishot) {
  start(1, 2);
  transient::listener l = transient::listen(transient::parse_endpoint("127.0.0.1:0"));
  constexpr int clients_count = 8;
  std::vector<unique_fd> clients;
  for (int i = 0; i < clients_count; ++i) {
    clients.push_back(transient::test::connect_to(l.local_endpoint()));
  }
  std::this_thread::sleep_for(20ms);
  submit_multishot(l.native_handle());
  const auto got = take();
  ASSERT_FALSE(got.empty());
  int taken = 0;
  bool ended = false;
  for (const auto& [res, flags] : got) {
    if (res >= 0) {
      ++taken;
      ::close(res);
    }
    ended = ended || (flags & IORING_CQE_F_MORE) == 0;
  }
  EXPECT_TRUE(ended) << "the overflow ended the request";
  EXPECT_LT(taken, clients_count);
  int rest = 0;
  for (int fd = 0; (fd = ::accept4(l.native_handle(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
    ++rest;
    ::close(fd);
  }
  EXPECT_EQ(taken + rest, clients_count) << "no connection lost";
}

}  // namespace
