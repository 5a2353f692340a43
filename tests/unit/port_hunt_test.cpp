// 32 processes hunt one port range at the same moment, for 100 rounds. Each round asserts 32
// distinct ports, every listener verified, and (from the kernel's own table) no port held by
// two processes. Prints the figures: collisions seen and handled, time per hunt.
//
// The range 24000-24063 is outside ip_local_port_range (32768-60999 here; docs/design.md: TIME_WAIT
// entries of outgoing connections there block even a SO_REUSEADDR bind). 64 ports for 32
// hunters makes collisions frequent, which is the point.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "detail/proc_file.hpp"
#include "support/child_report.hpp"
#include "transient/sockets/listener.hpp"
#include "transient/testing/syscalls.hpp"

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
      "  collisions seen and handled: %ld (bind EADDRINUSE: %ld, listen EADDRINUSE: %ld, "
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

// ---- through the seam: what the kernel will not produce on demand -----------------------

// listen() refusing with EADDRINUSE (another SO_REUSEADDR socket bound the port too and
// listened first): the next `listen_refusals` calls fail so, after noting the port.
namespace listen_seam {
std::mutex mutex;
int refusals_left = 0;
std::vector<std::uint16_t> refused_ports;

std::uint16_t port_of(int fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  return ntohs(reinterpret_cast<const sockaddr_in*>(&address)->sin_port);
}

int listen(int fd, int backlog) {
  {
    const std::lock_guard lock(mutex);
    if (refusals_left > 0) {
      --refusals_left;
      refused_ports.push_back(port_of(fd));
      errno = EADDRINUSE;
      return -1;
    }
  }
  return ::listen(fd, backlog);
}
}  // namespace listen_seam

TEST(PortHunt, ListenRefusedWithAddressInUseMovesToTheNextPort) {
  {
    const std::lock_guard lock(listen_seam::mutex);
    listen_seam::refusals_left = 3;
    listen_seam::refused_ports.clear();
  }
  transient::listen_options options;
  transient::syscalls sys;
  options.sys = &sys;
  sys.listen = listen_seam::listen;
  transient::listen_report report;
  const transient::listener l =
      transient::listen_in_range(transient::endpoint::loopback_v4(0), 24100, 24163, options, report);
  ASSERT_TRUE(l) << report.message;
  EXPECT_EQ(report.listen_collisions, 3U);
  EXPECT_EQ(report.bind_collisions, 0U);
  ASSERT_EQ(report.attempts.size(), 4U);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(report.attempts[i].stage, "listen");
    EXPECT_EQ(report.attempts[i].error, std::errc::address_in_use);
    EXPECT_EQ(report.attempts[i].port, listen_seam::refused_ports.at(i));
    EXPECT_NE(l.local_endpoint().port(), listen_seam::refused_ports.at(i)) << "a refused port was taken";
  }
  EXPECT_EQ(report.attempts.back().stage, "ok");
  EXPECT_EQ(report.attempts.back().port, l.local_endpoint().port());
  int accepting = 0;
  socklen_t length = sizeof accepting;
  ASSERT_EQ(::getsockopt(l.native_handle(), SOL_SOCKET, SO_ACCEPTCONN, &accepting, &length), 0);
  EXPECT_EQ(accepting, 1) << "the socket returned does not listen";
  EXPECT_TRUE(transient::verify(l)) << transient::verify(l).message;
}

// bind() refusing with EACCES, as the kernel does for a port below
// net.ipv4.ip_unprivileged_port_start without CAP_NET_BIND_SERVICE (the tests run as root).
int bind_denied(int /*fd*/, const sockaddr* /*address*/, socklen_t /*length*/) {
  errno = EACCES;
  return -1;
}

// Every port of the range would answer the same: the hunt stops at the first, and says why.
TEST(PortHunt, PermissionDeniedEndsTheHuntAtTheFirstPortSayingWhy) {
  transient::listen_options options;
  transient::syscalls sys;
  options.sys = &sys;
  sys.bind = bind_denied;
  transient::listen_report report;
  const auto start = steady::now();
  EXPECT_FALSE(transient::listen_in_range(transient::endpoint::loopback_v4(0), 1, 1023, options, report));
  EXPECT_LT(steady::now() - start, 1s);
  EXPECT_EQ(report.error, std::errc::permission_denied);
  ASSERT_EQ(report.attempts.size(), 1U) << report.message;
  EXPECT_EQ(report.attempts[0].stage, "bind");
  EXPECT_EQ(report.bind_collisions, 0U) << "a refusal is not a collision";
  const std::string port = std::to_string(report.attempts[0].port);
  EXPECT_EQ(report.message.rfind("port hunt on 127.0.0.1:" + port + ": bind: Permission denied: ports below ", 0), 0U)
      << report.message;
  EXPECT_NE(report.message.find("privileged"), std::string::npos) << report.message;
  EXPECT_NE(report.message.find("CAP_NET_BIND_SERVICE"), std::string::npos) << report.message;
  EXPECT_EQ(report.message.find('\n'), std::string::npos) << "one line";

  // Above the privileged ports EACCES is some security policy's: said as such.
  EXPECT_FALSE(transient::listen_in_range(transient::endpoint::loopback_v4(0), 24200, 24210, options, report));
  EXPECT_EQ(report.attempts.size(), 1U);
  EXPECT_NE(report.message.find("not a privileged port"), std::string::npos) << report.message;
}

// The same for real: a forked child drops root (user and group nobody, no capability) and
// hunts 1-1023; it reports its error, the ports it tried and the message.
TEST(PortHunt, AnUnprivilegedHuntOfPrivilegedPortsStopsAtTheFirst) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root to drop privileges in a child";
  }
  std::error_code ec;
  const std::string start_text =
      transient::detail::read_whole_file("/proc/sys/net/ipv4/ip_unprivileged_port_start", ec);
  if (ec || std::stoul(start_text) <= 1) {
    GTEST_SKIP() << "no privileged ports here (net.ipv4.ip_unprivileged_port_start = " << start_text << ")";
  }
  pipe_pair report_pipe;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::alarm(30);
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) {
      ::_exit(10);
    }
    transient::listen_report report;
    const transient::listener l = transient::listen_in_range(transient::endpoint::loopback_v4(0), 1, 1023, {}, report);
    transient::test::write_line(report_pipe.write_end.get(), std::to_string(l ? 0 : report.error.value()) + " " +
                                                                 std::to_string(report.attempts.size()) + " " +
                                                                 report.message);
    ::_exit(0);
  }
  report_pipe.write_end.reset();
  const std::string line = transient::test::read_line(report_pipe.read_end.get(), 20s);
  EXPECT_EQ(transient::test::reap_within(child, 10s), 0) << line;
  EXPECT_EQ(line.rfind(std::to_string(EACCES) + " 1 port hunt on 127.0.0.1:", 0), 0U) << line;
  EXPECT_NE(line.find("Permission denied: ports below "), std::string::npos) << line;
}

}  // namespace
