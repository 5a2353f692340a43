// Starting and watching `transient serve` children (see drill_child.hpp).
#include "drill_child.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <fstream>
#include <sstream>
#include <system_error>

namespace transient::tool {
namespace {

constexpr std::size_t kept_stderr = std::size_t{256} * 1024;
constexpr std::size_t kept_lines = 1000;

[[noreturn]] void throw_errno(const char* what) { throw std::system_error(errno, std::system_category(), what); }

}  // namespace

serve_child::serve_child(const std::vector<std::string>& args, std::uint64_t fd_limit) {
  std::array<int, 2> out{-1, -1};
  std::array<int, 2> err{-1, -1};
  if (::pipe2(out.data(), O_CLOEXEC) != 0) {
    throw_errno("drill: pipe2");
  }
  out_.reset(out[0]);
  unique_fd out_write(out[1]);
  if (::pipe2(err.data(), O_CLOEXEC) != 0) {
    throw_errno("drill: pipe2");
  }
  err_.reset(err[0]);
  unique_fd err_write(err[1]);

  // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
  std::vector<std::string> storage{"transient", "serve"};
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : storage) {
    argv.push_back(s.data());
  }
  argv.push_back(nullptr);
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = std::min<rlim_t>(fd_limit, limit.rlim_max);
  const pid_t parent = ::getpid();

  pid_ = ::fork();
  if (pid_ < 0) {
    throw_errno("drill: fork");
  }
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the drill
    if (::getppid() != parent) {
      ::_exit(127);
    }
    ::setrlimit(RLIMIT_NOFILE, &limit);
    ::dup2(out_write.get(), 1);
    ::dup2(err_write.get(), 2);
    ::execv("/proc/self/exe", argv.data());
    ::_exit(127);
  }
  pidfd_.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0)));
  out_write.reset();
  err_write.reset();
  reader_ = std::thread([this] { drain(); });
}

serve_child::~serve_child() {
  if (!status_) {
    send(SIGKILL);
    wait_exit(std::chrono::seconds(5));
  }
  reader_.join();
}

void serve_child::drain() {
  std::array<pollfd, 2> fds{pollfd{out_.get(), POLLIN, 0}, pollfd{err_.get(), POLLIN, 0}};
  std::array<char, 65536> buffer{};
  int open = 2;
  while (open > 0) {
    if (::poll(fds.data(), fds.size(), 1000) < 0 && errno != EINTR) {
      break;
    }
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) {
        continue;
      }
      const ssize_t n = ::read(fds[i].fd, buffer.data(), buffer.size());
      if (n <= 0) {
        if (n < 0 && errno == EINTR) {
          continue;
        }
        fds[i].fd = -1;
        --open;
        continue;
      }
      const auto now = clock::now();
      const std::string_view chunk(buffer.data(), static_cast<std::size_t>(n));
      const std::lock_guard lock(mutex_);
      if (i == 0) {
        stdout_ += chunk;
      } else {
        stderr_bytes_ += chunk.size();
        if (stderr_.size() < kept_stderr) {
          stderr_ += chunk.substr(0, kept_stderr - stderr_.size());
        }
        for (const char c : chunk) {
          if (c != '\n') {
            if (lines_.size() < kept_lines && partial_line_.size() < 4096) {
              partial_line_.push_back(c);
            }
            continue;
          }
          ++stderr_lines_;
          if (lines_.size() < kept_lines) {
            lines_.push_back({now, std::move(partial_line_)});
          }
          partial_line_.clear();
        }
      }
      changed_.notify_all();
    }
  }
  const std::lock_guard lock(mutex_);
  drained_ = true;
  changed_.notify_all();
}

std::optional<endpoint> serve_child::wait_stdout_line(std::string_view prefix, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  std::optional<endpoint> found;
  changed_.wait_for(lock, timeout, [&] {
    std::istringstream lines(stdout_);
    std::string line;
    while (std::getline(lines, line)) {
      if (line.rfind(prefix, 0) == 0) {
        std::string rest = line.substr(prefix.size());
        rest = rest.substr(0, rest.find_first_of(" /"));
        auto parsed = try_parse_endpoint(rest);
        if (parsed) {
          found = *parsed.value;
          return true;
        }
      }
    }
    return drained_;
  });
  return found;
}

std::optional<endpoint> serve_child::wait_listening(std::chrono::milliseconds timeout) {
  return wait_stdout_line("listening on ", timeout);
}

std::optional<endpoint> serve_child::wait_metrics(std::chrono::milliseconds timeout) {
  return wait_stdout_line("metrics on http://", timeout);
}

bool serve_child::wait_stderr(std::string_view text, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return stderr_.find(text) != std::string::npos; });
}

std::uint64_t serve_child::stderr_bytes() const {
  const std::lock_guard lock(mutex_);
  return stderr_bytes_;
}

std::uint64_t serve_child::stderr_lines() const {
  const std::lock_guard lock(mutex_);
  return stderr_lines_;
}

std::string serve_child::stderr_text() const {
  const std::lock_guard lock(mutex_);
  return stderr_;
}

std::vector<timed_line> serve_child::stderr_timeline() const {
  const std::lock_guard lock(mutex_);
  return lines_;
}

double serve_child::cpu_seconds() const {
  std::ifstream in("/proc/" + std::to_string(pid_) + "/stat");
  std::string stat;
  std::getline(in, stat);
  // Fields after the command name (which may hold spaces, so find its closing parenthesis):
  // state is field 3; utime and stime are fields 14 and 15.
  const std::size_t close = stat.rfind(')');
  if (close == std::string::npos) {
    return -1;
  }
  std::istringstream fields(stat.substr(close + 2));
  std::string skip;
  for (int i = 3; i < 14; ++i) {
    fields >> skip;
  }
  double utime = 0;
  double stime = 0;
  fields >> utime >> stime;
  if (!fields) {
    return -1;
  }
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

void serve_child::send(int signal) const noexcept {
  if (pid_ > 0 && !status_) {
    ::kill(pid_, signal);
  }
}

std::optional<int> serve_child::wait_exit(std::chrono::milliseconds timeout) {
  if (status_) {
    return status_;
  }
  const auto deadline = clock::now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exited_at_ = clock::now();
      status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      // The exit closed the pipes, but the reader may not have read their last bytes yet:
      // wait (bounded) until it has, so stderr_text() after wait_exit() holds all of it.
      std::unique_lock lock(mutex_);
      changed_.wait_for(lock, std::chrono::seconds(2), [this] { return drained_; });
      return status_;
    }
    const auto now = clock::now();
    if (r < 0 || now >= deadline) {
      return std::nullopt;
    }
    // With a pidfd, poll wakes at the exit itself; without one, look again every millisecond.
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
    if (pidfd_) {
      pollfd p{pidfd_.get(), POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left, 1000)));
    } else {
      ::usleep(1000);
    }
  }
}

}  // namespace transient::tool
