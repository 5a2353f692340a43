// The descriptor census and the diagnosis, on real descriptors and real RLIMIT_NOFILE limits.
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

#include "transient/diagnosis/diagnostics.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace {

using testing::HasSubstr;
using transient::fd_kind;
using transient::unique_fd;

std::size_t count_of(const transient::fd_census& census, fd_kind kind) { return census.count(kind); }

std::size_t state_count(const transient::fd_census& census, const std::string& state) {
  for (const auto& [name, count] : census.tcp_states) {
    if (name == state) {
      return count;
    }
  }
  return 0;
}

// A connected TCP pair over loopback plus its listener: three TCP sockets.
struct tcp_trio {
  unique_fd listener, client, server;
};

tcp_trio make_tcp_trio() {
  tcp_trio trio;
  trio.listener.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  EXPECT_EQ(::bind(trio.listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  EXPECT_EQ(::listen(trio.listener.get(), 8), 0);
  EXPECT_EQ(::getsockname(trio.listener.get(), reinterpret_cast<sockaddr*>(&address), &length), 0);
  trio.client.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_EQ(::connect(trio.client.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  trio.server.reset(::accept4(trio.listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  EXPECT_TRUE(trio.server);
  return trio;
}

std::string temp_file_path() {
  std::string path = testing::TempDir() + "transient_census_XXXXXX";
  unique_fd fd(::mkstemp(path.data()));
  EXPECT_TRUE(fd) << path;
  return path;
}

TEST(FdCensus, CountsEveryKindItIsShown) {
  const std::string path = temp_file_path();
  const transient::fd_census before = transient::take_fd_census();

  std::vector<unique_fd> held;
  for (int i = 0; i < 20; ++i) {
    held.emplace_back(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  }
  int pipe_ends[2];
  ASSERT_EQ(::pipe2(pipe_ends, O_CLOEXEC), 0);
  held.emplace_back(pipe_ends[0]);
  held.emplace_back(pipe_ends[1]);
  held.emplace_back(::eventfd(0, EFD_CLOEXEC));
  held.emplace_back(::epoll_create1(EPOLL_CLOEXEC));
  held.emplace_back(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC));
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  held.emplace_back(pair[0]);
  held.emplace_back(pair[1]);
  held.emplace_back(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  held.emplace_back(::open(testing::TempDir().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  const tcp_trio trio = make_tcp_trio();

  const transient::fd_census after = transient::take_fd_census();
  EXPECT_EQ(after.total - before.total, 20U + 2 + 1 + 1 + 1 + 2 + 1 + 1 + 3);
  EXPECT_EQ(count_of(after, fd_kind::regular_file) - count_of(before, fd_kind::regular_file), 20U);
  EXPECT_EQ(count_of(after, fd_kind::pipe) - count_of(before, fd_kind::pipe), 2U);
  EXPECT_EQ(count_of(after, fd_kind::eventfd) - count_of(before, fd_kind::eventfd), 1U);
  EXPECT_EQ(count_of(after, fd_kind::epoll) - count_of(before, fd_kind::epoll), 1U);
  EXPECT_EQ(count_of(after, fd_kind::timerfd) - count_of(before, fd_kind::timerfd), 1U);
  EXPECT_EQ(count_of(after, fd_kind::unix_socket) - count_of(before, fd_kind::unix_socket), 2U);
  EXPECT_EQ(count_of(after, fd_kind::udp_socket) - count_of(before, fd_kind::udp_socket), 1U);
  EXPECT_EQ(count_of(after, fd_kind::directory) - count_of(before, fd_kind::directory), 1U);
  EXPECT_EQ(count_of(after, fd_kind::tcp_socket) - count_of(before, fd_kind::tcp_socket), 3U);
  EXPECT_EQ(state_count(after, "LISTEN") - state_count(before, "LISTEN"), 1U);
  EXPECT_EQ(state_count(after, "ESTABLISHED") - state_count(before, "ESTABLISHED"), 2U);
  ASSERT_FALSE(after.repeated_targets.empty());
  EXPECT_EQ(after.repeated_targets.front().first, path);
  EXPECT_EQ(after.repeated_targets.front().second, 20U);
  EXPECT_EQ(after.dominant_kind(), fd_kind::regular_file);
  EXPECT_THAT(after.method, HasSubstr("/proc/self/fd"));
  ::unlink(path.c_str());
}

TEST(FdCensus, ReserveGivesTheSameCounts) {
  const transient::diagnosis_fds fds = transient::diagnosis_fds::open();
  ASSERT_GE(fds.fd_directory(), 0);
  const transient::fd_census plain = transient::take_fd_census();
  const transient::fd_census reserved = transient::take_fd_census(fds);
  // The plain census skips the directory it opened for itself; its two are counted.
  EXPECT_EQ(plain.by_kind, reserved.by_kind);
  EXPECT_EQ(plain.total, reserved.total);
  EXPECT_THAT(reserved.method, HasSubstr("reserved"));
  const transient::file_table table = transient::read_file_table(fds);
  ASSERT_TRUE(table.known);
  EXPECT_GT(table.allocated, 0U);
  EXPECT_GE(table.maximum, table.allocated);
}

// Runs `body` in a child process whose RLIMIT_NOFILE soft limit is `limit`; the child's exit
// status is its verdict (0 = every check held; otherwise the number of the failed check).
int in_child_with_limit(rlim_t limit, int (*body)()) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    rlimit rl{};
    ::getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = limit;
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) {
      ::_exit(100);
    }
    ::_exit(body());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 200 + WTERMSIG(status);
}

// Fills the descriptor table with copies of one file; returns how many were opened.
int fill_descriptor_table(const char* path) {
  int opened = 0;
  while (opened < 100000 && ::open(path, O_RDONLY | O_CLOEXEC) >= 0) {
    ++opened;
  }
  return errno == EMFILE ? opened : -1;
}

TEST(FdCensus, WorksWithNoFreeDescriptor) {
  const int verdict = in_child_with_limit(64, [] {
    std::error_code ec;
    const auto fds = transient::diagnosis_fds::open(ec);
    if (ec) {
      return 1;
    }
    const int opened = fill_descriptor_table("/dev/null");
    if (opened < 10) {
      return 2;
    }
    const transient::fd_census probed = transient::take_fd_census();
    if (probed.method.find("probed") == std::string::npos || probed.total < 64 ||
        probed.count(fd_kind::character_device) < static_cast<std::size_t>(opened)) {
      return 3;
    }
    const transient::fd_census reserved = transient::take_fd_census(fds);
    if (reserved.method.find("reserved") == std::string::npos || reserved.by_kind != probed.by_kind) {
      for (std::size_t i = 0; i < transient::fd_kind_count; ++i) {
        std::fprintf(stderr, "%s: reserved %zu probed %zu\n", std::string(to_string(static_cast<fd_kind>(i))).c_str(),
                     reserved.by_kind[i], probed.by_kind[i]);
      }
      return 4;
    }
    if (!transient::read_file_table(fds).known || transient::read_file_table().known) {
      return 5;  // through them it reads; without one there is no descriptor to open it
    }
    return 0;
  });
  EXPECT_EQ(verdict, 0) << "check " << verdict << " failed in the child";
}

TEST(Diagnosis, LeakNamesTheLeakedKindAndTarget) {
  const int verdict = in_child_with_limit(64, [] {
    const auto fds = transient::diagnosis_fds::open();
    char path[] = "/tmp/transient_leak_XXXXXX";
    unique_fd file(::mkstemp(path));
    if (fill_descriptor_table(path) < 40) {
      return 1;
    }
    const transient::diagnosis d = transient::diagnose(
        {std::error_code(EMFILE, std::system_category()), 2, 40, std::chrono::milliseconds(1500)}, fds);
    ::unlink(path);
    if (d.what != transient::exhaustion_case::process_leak) {
      return 2;
    }
    for (const std::string& expected :
         {std::string("stalled: accept failed with EMFILE for 1.5 s"), std::string("likely descriptor leak"),
          std::string("regular file"), std::string(path), std::string("RLIMIT_NOFILE soft 64"),
          std::string("2 live connections, budget 40")}) {
      if (d.text.find(expected) == std::string::npos) {
        std::fprintf(stderr, "missing '%s' in:\n%s\n", expected.c_str(), d.text.c_str());
        return 3;
      }
    }
    return 0;
  });
  EXPECT_EQ(verdict, 0) << "check " << verdict << " failed in the child";
}

TEST(Diagnosis, CasesFromFigures) {
  using transient::exhaustion_case;
  transient::fd_census census;
  census.total = 1024;
  const transient::fd_limits limits{1024, 4096};
  const std::error_code emfile(EMFILE, std::system_category());
  EXPECT_EQ(transient::classify_exhaustion({emfile, 980, 980, {}}, census, limits), exhaustion_case::backpressure);
  EXPECT_EQ(transient::classify_exhaustion({emfile, 10, 980, {}}, census, limits), exhaustion_case::process_leak);
  EXPECT_EQ(transient::classify_exhaustion({emfile, 900, 2000, {}}, census, limits), exhaustion_case::budget_too_high);
  EXPECT_EQ(
      transient::classify_exhaustion({std::error_code(ENFILE, std::system_category()), 10, 980, {}}, census, limits),
      exhaustion_case::system_table);
  EXPECT_EQ(
      transient::classify_exhaustion({std::error_code(ENOBUFS, std::generic_category()), 10, 980, {}}, census, limits),
      exhaustion_case::kernel_memory);
  // A budget above the limit, but most descriptors held outside the connections: the leak is
  // the case (the text then names the budget too).
  EXPECT_EQ(transient::classify_exhaustion({emfile, 300, 2000, {}}, census, limits), exhaustion_case::process_leak);
  EXPECT_EQ(transient::classify_exhaustion({emfile, 512, 2000, {}}, census, limits), exhaustion_case::budget_too_high);
  census.total = 100;
  EXPECT_EQ(transient::classify_exhaustion({std::error_code(EIO, std::system_category()), 10, 980, {}}, census, limits),
            exhaustion_case::unknown);
}

// 247 of 256 descriptors leaked pipes, no connection, and a budget of 1000 over a limit of 64:
// the leak is named first, then the configuration.
TEST(Diagnosis, LeakAndBudgetAboveTheLimitNamesBothLeakFirst) {
  const int verdict = in_child_with_limit(64, [] {
    const auto fds = transient::diagnosis_fds::open();
    std::vector<unique_fd> pipes;
    for (int i = 0; i < 40; ++i) {
      int ends[2];
      if (::pipe(ends) != 0) {
        break;
      }
      pipes.emplace_back(ends[0]);
      pipes.emplace_back(ends[1]);
    }
    if (pipes.size() < 50) {
      return 1;
    }
    const transient::diagnosis d = transient::diagnose(
        {std::error_code(EMFILE, std::system_category()), 0, 1000, std::chrono::milliseconds(2000)}, fds);
    if (d.what != transient::exhaustion_case::process_leak) {
      std::fprintf(stderr, "case %d in:\n%s\n", static_cast<int>(d.what), d.text.c_str());
      return 2;
    }
    const std::size_t leak = d.text.find("descriptors are held outside the server's connections");
    const std::size_t kind = d.text.find("pipe");
    const std::size_t budget = d.text.find("max_connections (1000) is not below RLIMIT_NOFILE (64)");
    const std::size_t also = d.text.find("; also budget above the descriptor limit");
    if (leak == std::string::npos || kind == std::string::npos || budget == std::string::npos ||
        also == std::string::npos || budget < leak) {
      std::fprintf(stderr, "unexpected diagnosis:\n%s\n", d.text.c_str());
      return 3;
    }
    return 0;
  });
  EXPECT_EQ(verdict, 0) << "check " << verdict << " failed in the child";
}

TEST(Diagnosis, SystemTableTextNamesFileMax) {
  const transient::diagnosis d = transient::diagnose({std::error_code(ENFILE, std::system_category()), 3, 100, {}});
  EXPECT_EQ(d.what, transient::exhaustion_case::system_table);
  EXPECT_THAT(d.text, HasSubstr("accept failed with ENFILE"));
  EXPECT_THAT(d.text, HasSubstr("fs.file-max"));
  EXPECT_THAT(d.text, HasSubstr("another process"));
}

}  // namespace
