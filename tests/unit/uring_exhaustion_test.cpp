// ctest-labels: threads
// The io_uring server under real descriptor exhaustion: a child process with RLIMIT_NOFILE 64
// runs uring_server with a budget above what the limit allows, so the ring's accept fails with
// EMFILE (and the multishot request ends); the test process is the client and drives 100
// episodes through a pipe. The ring must not spin: CPU <= 5 %, no client lost, few log lines.
#include <sys/resource.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <string>
#include <thread>

#include "support/holding_client.hpp"
#include "support/holding_server.hpp"
#include "transient/uring.hpp"

namespace {

using namespace std::chrono_literals;
using transient::test::child_process;
using transient::test::start_child;

constexpr rlim_t child_fd_limit = 64;

// ---- the child: a release only ends an exhaustion that happened ---------------------------
//
// After a successful accept the kernel retries a multishot accept only if the listen queue
// still holds a connection, so the exhaustion of an episode is the ring's attempt at the
// client that connects next. That attempt runs in the loop thread's task work, and the
// parent sends the next release right after that client's connect: on a loaded machine the
// release can close a descriptor first, the accept then succeeds, and the episode has no
// exhaustion at all. The seam (which passes every result through) sees the ring's answers,
// and the child's control thread holds each release until an EMFILE has followed the latest
// accepted connection, so every episode is a real success-then-exhaustion.

std::atomic<long> emfile_since_accepted{0};  // in the child: EMFILE answers since the latest accept

int count_exhaustion(int result) noexcept {
  if (result >= 0) {
    emfile_since_accepted.store(0);
  } else if (result == -EMFILE) {
    emfile_since_accepted.fetch_add(1);
  }
  return result;
}

void release_after_exhaustion(char command) {
  if (command != 'r') {
    return;
  }
  // Bounded: without the exhaustion the release goes ahead, and the flap count below fails.
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  while (emfile_since_accepted.load() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
}

TEST(UringExhaustion, PendingClientIsServedAfterEachReleaseWithoutSpinning) {
  std::string why;
  if (!transient::uring_available(why)) {
    GTEST_SKIP() << "io_uring unavailable: " << why;
  }
  child_process child = start_child([](int commands, int reports) {
    transient::test::holding_config config;
    config.fd_limit = child_fd_limit;
    config.sys.uring_accept_result = count_exhaustion;
    config.on_command = release_after_exhaustion;
    transient::test::run_holding_server<transient::uring_server>(commands, reports, config);
  });
  // Each release waits for its episode's EMFILE (release_after_exhaustion), so a shortfall of
  // flaps in the scenario is the driver's: a success or a failure the policy was not told about.
  transient::test::expect_each_release_serves_the_pending_client(child);
}

}  // namespace
