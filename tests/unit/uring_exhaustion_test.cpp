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
#include "transient/drivers/uring.hpp"

namespace {

using namespace std::chrono_literals;
using transient::test::child_process;
using transient::test::start_child;

constexpr rlim_t child_fd_limit = 64;

// After a successful accept the kernel retries a multishot accept only if the listen queue
// still holds a connection, so the exhaustion of an episode is the ring's attempt at the
// client that connects next, in the loop thread's task work. On a loaded machine a release
// sent right after that connect can close a descriptor first; the accept then succeeds and the
// episode has no exhaustion at all. expect_each_release_serves_the_pending_client therefore
// sends each release only once the child's answers (its seam) show the EMFILE, so a shortfall
// of flaps is the driver's: a success or a failure the policy was not told about.

TEST(UringExhaustion, PendingClientIsServedAfterEachReleaseWithoutSpinning) {
  std::string why;
  if (!transient::uring_available(why)) {
    GTEST_SKIP() << "io_uring unavailable: " << why;
  }
  child_process child = start_child([](int commands, int reports) {
    transient::test::run_holding_server<transient::uring_server>(commands, reports, child_fd_limit);
  });
  transient::test::expect_each_release_serves_the_pending_client(child);
}

}  // namespace
