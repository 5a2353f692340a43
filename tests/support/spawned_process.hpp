// A program run in a child process with its stdout and stderr in pipes, for tests of servers
// that run until told to stop (`transient serve`, the Asio example). Every read is bounded in
// time; the child is killed and reaped when the object goes away.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "transient/sockets/unique_fd.hpp"

namespace transient::test {

class spawned_process {
 public:
  /// Which of the child's outputs to read.
  enum class stream { out, err };

  /// Starts `program` with `args` (argv[0] is `program`).
  spawned_process(const std::string& program, std::vector<std::string> args) {
    int out[2];
    int err[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
      return;
    }
    args.insert(args.begin(), program);
    std::vector<char*> argv;
    for (auto& a : args) {
      argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      ::dup2(err[1], 2);
      ::execv(program.c_str(), argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    ::close(err[1]);
    out_.fd.reset(out[0]);
    err_.fd.reset(err[0]);
  }
  ~spawned_process() {
    if (pid_ > 0 && !status_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  spawned_process(const spawned_process&) = delete;
  spawned_process& operator=(const spawned_process&) = delete;

  /// The next line of `which` (without its newline) within `timeout`; what arrived of it so
  /// far on timeout or end of stream.
  std::string read_line(stream which, std::chrono::milliseconds timeout) {
    pipe& p = which == stream::out ? out_ : err_;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (p.buffer.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      if (!fill(p, 100)) {
        break;
      }
    }
    const auto end = p.buffer.find('\n');
    std::string line = p.buffer.substr(0, end);
    p.buffer.erase(0, end == std::string::npos ? std::string::npos : end + 1);
    return line;
  }

  /// Sends signal `s` to the child.
  void signal(int s) const { ::kill(pid_, s); }

  /// The child's process id (-1 if fork failed).
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }

  /// The child's CPU time so far, utime + stime in clock ticks, from /proc/PID/stat (-1 if
  /// unreadable).
  [[nodiscard]] long cpu_ticks() const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/stat");
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto end = text.rfind(')');  // the command name may contain spaces and parentheses
    if (end == std::string::npos) {
      return -1;
    }
    std::istringstream fields(text.substr(end + 2));
    std::string field;
    long utime = 0;
    long stime = 0;
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    for (int i = 3; i <= 15 && fields >> field; ++i) {
      if (i == 14) {
        utime = std::stol(field);
      } else if (i == 15) {
        stime = std::stol(field);
      }
    }
    return utime + stime;
  }

  /// The exit status within `timeout` (-1 if a signal ended it; nullopt: still running).
  std::optional<int> wait(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!status_ && std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      } else {
        ::usleep(1000);
      }
    }
    return status_;
  }

  /// The rest of stderr until it closes (after the child exited), within 2 s.
  std::string stderr_text() {
    for (int i = 0; i < 40 && fill(err_, 50); ++i) {
    }
    return std::move(err_.buffer);
  }

  /// Reads both outputs until they close (the child exited) or `timeout` passed, killing the
  /// child then if it still runs, and reaps it. Returns its exit status (-1: ended by a
  /// signal). What it wrote is then in take(stream::out) and take(stream::err).
  int finish(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    // Both at once: a child blocked writing one pipe would never close the other.
    while ((out_.fd || err_.fd) && std::chrono::steady_clock::now() < deadline) {
      pollfd fds[2] = {{out_.fd.get(), POLLIN, 0}, {err_.fd.get(), POLLIN, 0}};  // -1: ignored
      if (::poll(fds, 2, 50) <= 0) {
        continue;
      }
      for (pipe* p : {&out_, &err_}) {
        const pollfd& ready = fds[p == &out_ ? 0 : 1];
        if (p->fd && (ready.revents & (POLLIN | POLLHUP)) != 0 && !fill(*p, 0)) {
          p->fd.reset();
        }
      }
    }
    if (!status_) {
      if (out_.fd || err_.fd) {
        ::kill(pid_, SIGKILL);
      }
      int status = 0;
      ::waitpid(pid_, &status, 0);
      status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    return *status_;
  }

  /// What was read of `which` and not yet returned, emptied.
  std::string take(stream which) { return std::move(which == stream::out ? out_.buffer : err_.buffer); }

 private:
  struct pipe {
    unique_fd fd;
    std::string buffer;  // read, not yet returned
  };

  // Appends what arrives within `timeout_ms`; false at end of stream or on error.
  static bool fill(pipe& p, int timeout_ms) {
    pollfd waiting{p.fd.get(), POLLIN, 0};
    if (::poll(&waiting, 1, timeout_ms) <= 0) {
      return true;  // nothing yet
    }
    char chunk[4096];
    const ssize_t n = ::read(p.fd.get(), chunk, sizeof chunk);
    if (n <= 0) {
      return false;
    }
    p.buffer.append(chunk, static_cast<std::size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  std::optional<int> status_;
  pipe out_;
  pipe err_;
};

}  // namespace transient::test
