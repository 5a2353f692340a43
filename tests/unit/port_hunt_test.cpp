// 32 processes hunt one port range at the same moment, for 100 rounds. Each round asserts 32
// distinct ports, every listener verified, and (from the kernel's own table) no port held by
// two processes. Prints the figures: collisions seen and handled, time per hunt.
//
// The range 24000-24063 is outside ip_local_port_range (32768-60999 here; docs/design.md: TIME_WAIT
// entries of outgoing connections there block even a SO_REUSEADDR bind). 64 ports for 32
// hunters makes collisions frequent, which is the point.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <set>
#include <vector>

#include "detail/proc_file.hpp"
#include "transient/listener.hpp"

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

constexpr int hunters = 32;
constexpr int rounds = 100;
constexpr std::uint16_t first_port = 24000;
constexpr std::uint16_t last_port = 24063;
constexpr auto round_deadline = 20s;
constexpr auto test_budget = 100s;

// What a hunter sends back: fixed size, far below PIPE_BUF, so each write is atomic.
struct hunt_result {
  std::uint16_t port = 0;
  std::uint8_t verified_by_listen = 0;
  std::uint8_t verified_again = 0;
  std::uint32_t bind_collisions = 0;
  std::uint32_t listen_collisions = 0;
  std::uint32_t verify_collisions = 0;
  std::uint64_t inode = 0;
  std::int64_t nanoseconds = 0;
  std::int32_t error = 0;
  std::int32_t pid = 0;
};

struct pipe_pair {
  transient::unique_fd read_end;
  transient::unique_fd write_end;
  pipe_pair() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) == 0) {
      read_end.reset(fds[0]);
      write_end.reset(fds[1]);
    }
  }
};

// The hunter: waits for the start signal, hunts, reports, holds its port until released.
[[noreturn]] void hunt(int go, int results, int release) {
  ::alarm(60);  // a hunter never outlives a stuck test
  char byte = 0;
  while (::read(go, &byte, 1) < 0 && errno == EINTR) {
  }
  hunt_result result;
  result.pid = ::getpid();
  transient::listen_report report;
  const transient::listener l =
      transient::listen_in_range(transient::endpoint::loopback_v4(0), first_port, last_port, {}, report);
  result.error = report.error.value();
  if (l) {
    result.port = l.local_endpoint().port();
    result.verified_by_listen = report.verification.kernel_listener && report.verification.unique ? 1 : 0;
    const auto again = transient::verify(l);
    result.verified_again = again ? 1 : 0;
    result.inode = again.inode;
  }
  result.bind_collisions = static_cast<std::uint32_t>(report.bind_collisions);
  result.listen_collisions = static_cast<std::uint32_t>(report.listen_collisions);
  result.verify_collisions = static_cast<std::uint32_t>(report.verify_collisions);
  result.nanoseconds = std::chrono::duration_cast<std::chrono::nanoseconds>(report.elapsed).count();
  if (::write(results, &result, sizeof result) != static_cast<ssize_t>(sizeof result)) {
    ::_exit(3);
  }
  while (::read(release, &byte, 1) < 0 && errno == EINTR) {  // EOF when the parent lets go
  }
  ::_exit(0);
}

// Reaps every child by the deadline; kills (by pid) and reaps any that is still running.
void reap(const std::vector<pid_t>& children, steady::time_point deadline) {
  for (const pid_t child : children) {
    for (;;) {
      int status = 0;
      const pid_t done = ::waitpid(child, &status, WNOHANG);
      if (done == child || (done < 0 && errno != EINTR)) {
        EXPECT_TRUE(done < 0 || (WIFEXITED(status) && WEXITSTATUS(status) == 0)) << "hunter " << child;
        break;
      }
      if (steady::now() > deadline) {
        ADD_FAILURE() << "hunter " << child << " did not exit in time; killing it";
        ::kill(child, SIGKILL);
        ::waitpid(child, &status, 0);
        break;
      }
      ::usleep(1000);
    }
  }
}

struct figures {
  long hunts = 0;
  long bind_collisions = 0;
  long listen_collisions = 0;
  long verify_collisions = 0;
  long hunts_with_collision = 0;
  long rounds_with_collision = 0;
  std::vector<std::int64_t> nanoseconds;
};

// One round; returns false if it could not complete (the failure is already recorded).
bool run_round(int round, figures& totals) {
  pipe_pair go;
  pipe_pair results;
  pipe_pair release;
  if (!go.read_end || !results.read_end || !release.read_end) {
    ADD_FAILURE() << "pipe2 failed";
    return false;
  }
  std::vector<pid_t> children;
  for (int i = 0; i < hunters; ++i) {
    const pid_t child = ::fork();
    if (child == 0) {
      go.write_end.reset();
      results.read_end.reset();
      release.write_end.reset();
      hunt(go.read_end.get(), results.write_end.get(), release.read_end.get());
    }
    if (child < 0) {
      ADD_FAILURE() << "fork failed";
      break;
    }
    children.push_back(child);
  }
  go.write_end.reset();  // every hunter sees EOF at once: they start together
  results.write_end.reset();
  const auto deadline = steady::now() + round_deadline;

  std::vector<hunt_result> got;
  while (got.size() < children.size() && steady::now() < deadline) {
    pollfd p{results.read_end.get(), POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) {
      continue;
    }
    hunt_result r;
    const ssize_t n = ::read(results.read_end.get(), &r, sizeof r);
    if (n == 0) {
      break;  // every hunter closed its end
    }
    if (n == static_cast<ssize_t>(sizeof r)) {
      got.push_back(r);
    }
  }

  // Check while every hunter still holds its listener.
  bool ok = got.size() == static_cast<std::size_t>(hunters);
  EXPECT_EQ(got.size(), static_cast<std::size_t>(hunters)) << "round " << round;
  std::set<std::uint16_t> ports;
  bool round_collided = false;
  for (const auto& r : got) {
    EXPECT_EQ(r.error, 0) << "round " << round << " pid " << r.pid;
    EXPECT_GE(r.port, first_port) << "round " << round;
    EXPECT_LE(r.port, last_port) << "round " << round;
    EXPECT_EQ(r.verified_by_listen, 1) << "round " << round << " port " << r.port;
    EXPECT_EQ(r.verified_again, 1) << "round " << round << " port " << r.port;
    ports.insert(r.port);
    const long collisions = r.bind_collisions + r.listen_collisions + r.verify_collisions;
    totals.hunts += 1;
    totals.bind_collisions += r.bind_collisions;
    totals.listen_collisions += r.listen_collisions;
    totals.verify_collisions += r.verify_collisions;
    totals.hunts_with_collision += collisions > 0 ? 1 : 0;
    round_collided = round_collided || collisions > 0;
    totals.nanoseconds.push_back(r.nanoseconds);
  }
  totals.rounds_with_collision += round_collided ? 1 : 0;
  EXPECT_EQ(ports.size(), got.size()) << "round " << round << ": two hunters reported one port";
  ok = ok && ports.size() == got.size();

  // The kernel's view: exactly one LISTEN row per port taken, and it is the hunter's socket.
  std::error_code ec;
  const auto rows = transient::detail::read_kernel_tcp_rows(ec);
  EXPECT_FALSE(ec);
  for (const auto& r : got) {
    int rows_on_port = 0;
    bool inode_matches = false;
    for (const auto& row : rows) {
      if (row.state == transient::detail::tcp_state_listen && row.local.port() == r.port) {
        ++rows_on_port;
        inode_matches = inode_matches || row.inode == r.inode;
      }
    }
    EXPECT_EQ(rows_on_port, 1) << "round " << round << " port " << r.port;
    EXPECT_TRUE(inode_matches) << "round " << round << " port " << r.port;
    ok = ok && rows_on_port == 1 && inode_matches;
  }

  release.write_end.reset();
  reap(children, steady::now() + 10s);
  return ok;
}

// The same hunt without contention, for comparison with the figures under contention.
double uncontended_mean_us() {
  constexpr int samples = 100;
  std::int64_t total = 0;
  for (int i = 0; i < samples; ++i) {
    transient::listen_report report;
    const auto l = transient::listen_in_range(transient::endpoint::loopback_v4(0), first_port, last_port, {}, report);
    EXPECT_TRUE(l) << report.message;
    total += std::chrono::duration_cast<std::chrono::nanoseconds>(report.elapsed).count();
  }
  return static_cast<double>(total) / samples / 1e3;
}

TEST(PortHunt, ThirtyTwoProcessesHuntOneRangeForAHundredRounds) {
  const double alone_us = uncontended_mean_us();
  const auto start = steady::now();
  figures totals;
  int completed = 0;
  for (int round = 0; round < rounds; ++round) {
    if (steady::now() - start > test_budget) {
      ADD_FAILURE() << "time budget exhausted after " << completed << " rounds";
      break;
    }
    if (!run_round(round, totals)) {
      break;  // one failed round says enough; do not pile up 100 of them
    }
    ++completed;
  }
  EXPECT_EQ(completed, rounds);

  std::sort(totals.nanoseconds.begin(), totals.nanoseconds.end());
  const auto percentile = [&](double p) {
    if (totals.nanoseconds.empty()) {
      return 0.0;
    }
    const auto index = static_cast<std::size_t>(p * static_cast<double>(totals.nanoseconds.size() - 1));
    return static_cast<double>(totals.nanoseconds[index]) / 1e3;
  };
  double sum = 0;
  for (const auto ns : totals.nanoseconds) {
    sum += static_cast<double>(ns);
  }
  const double mean_us = totals.nanoseconds.empty() ? 0 : sum / static_cast<double>(totals.nanoseconds.size()) / 1e3;
  const double seconds = std::chrono::duration<double>(steady::now() - start).count();
  std::printf(
      "port hunt figures: %d rounds x %d hunters in %d-%d (%.1f s)\n"
      "  hunts: %ld, hunts that met a collision: %ld, rounds with a collision: %ld\n"
      "  collisions seen and handled: %ld (bind EADDRINUSE/EACCES: %ld, listen EADDRINUSE: %ld, "
      "verify duplicate: %ld)\n"
      "  time per hunt (incl. verification): mean %.0f us, median %.0f us, p99 %.0f us, max %.0f us\n"
      "  one hunt alone (no contention, 100 samples): mean %.0f us\n",
      completed, hunters, first_port, last_port, seconds, totals.hunts, totals.hunts_with_collision,
      totals.rounds_with_collision, totals.bind_collisions + totals.listen_collisions + totals.verify_collisions,
      totals.bind_collisions, totals.listen_collisions, totals.verify_collisions, mean_us, percentile(0.5),
      percentile(0.99), percentile(1.0), alone_us);
  std::fflush(stdout);
  EXPECT_GT(totals.bind_collisions + totals.listen_collisions, 0) << "the test never made hunters collide";
}

}  // namespace
