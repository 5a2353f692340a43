// raise_fd_limit(): the RLIMIT_NOFILE soft limit raised to the hard one, on real limits, in
// child processes (the test process keeps its own).
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>

#include "transient/policy/budget.hpp"

namespace {

// Runs `body` in a child whose RLIMIT_NOFILE is `soft` under `hard`; the child's exit code
// (body's result), or -1 if it could not run.
int in_child_with_limits(rlim_t soft, rlim_t hard, const std::function<int()>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const rlimit limit{soft, hard};
    ::_exit(::setrlimit(RLIMIT_NOFILE, &limit) == 0 ? body() : 100);
  }
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) {
    return -1;
  }
  return WEXITSTATUS(status);
}

TEST(FdLimit, TheSoftLimitIsRaisedToTheHardOneAndSaysWhatItWas) {
  const int code = in_child_with_limits(64, 512, [] {
    std::error_code ec;
    const transient::fd_limit_raise r = transient::raise_fd_limit(ec);
    rlimit now{};
    ::getrlimit(RLIMIT_NOFILE, &now);
    if (ec) {
      return 1;
    }
    if (r.before != 64 || r.after != 512 || r.hard != 512 || !r.raised()) {
      return 2;
    }
    return now.rlim_cur == 512 ? 0 : 3;
  });
  EXPECT_EQ(code, 0);
}

TEST(FdLimit, ASoftLimitAtTheHardOneIsLeftAsItIs) {
  const int code = in_child_with_limits(256, 256, [] {
    const transient::fd_limit_raise r = transient::raise_fd_limit();
    return r.before == 256 && r.after == 256 && r.hard == 256 && !r.raised() ? 0 : 1;
  });
  EXPECT_EQ(code, 0);
}

}  // namespace
