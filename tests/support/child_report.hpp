// What a forked child (a server under a low RLIMIT_NOFILE) uses to report to the test or
// benchmark that drives it: whole lines on a pipe, and its own CPU time.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

namespace transient::test {

/// Writes `line` and a newline in one write(2) (atomic on a pipe below PIPE_BUF).
inline void write_line(int fd, const std::string& line) {
  const std::string text = line + "\n";
  [[maybe_unused]] const ssize_t n = ::write(fd, text.data(), text.size());
}

/// CPU time (user + system) this process has used, in microseconds.
inline std::int64_t cpu_microseconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<std::int64_t>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1000000 +
         static_cast<std::int64_t>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

/// Reads one line (without its newline) from `fd`, a byte at a time so nothing past it is
/// consumed; what was read so far on timeout or end of file.
inline std::string read_line(int fd, std::chrono::milliseconds timeout) {
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) {
      continue;
    }
    char c = 0;
    if (::read(fd, &c, 1) != 1 || c == '\n') {
      return line;
    }
    line.push_back(c);
  }
  return line;
}

/// Reaps the child `pid`, waiting at most `limit` for it to exit and killing it (SIGKILL)
/// then. Returns its exit status; -1 if it was killed, ended by a signal, or not our child.
inline int reap_within(pid_t pid, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  pid_t reaped = 0;
  while ((reaped = ::waitpid(pid, &status, WNOHANG)) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return reaped == pid && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace transient::test
