// Starting and watching `transient serve` children (see drill_child.hpp).
#include "drill_child.hpp"

#include <dirent.h>
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
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

namespace transient::tool {
namespace {

constexpr std::size_t kept_stderr = std::size_t{256} * 1024;
constexpr std::size_t kept_lines = 1000;

[[noreturn]] void throw_errno(const char* what) { throw std::system_error(errno, std::system_category(), what); }

// The fields of /proc/PID/stat the drill uses.
struct process_stat {
  char state = '?';        // R, S, Z...
  pid_t group = -1;        // process group id
  double cpu_seconds = 0;  // user plus system time
};

std::optional<process_stat> read_stat(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(in, stat);
  // Fields after the command name (which may hold spaces, so find its closing parenthesis):
  // state is field 3, the process group field 5; utime and stime are fields 14 and 15.
  const std::size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) {
    return std::nullopt;
  }
  std::istringstream fields(stat.substr(close + 2));
  process_stat out;
  std::string skip;
  fields >> out.state >> skip >> out.group;
  for (int i = 6; i < 14; ++i) {
    fields >> skip;
  }
  double utime = 0;
  double stime = 0;
  fields >> utime >> stime;
  if (!fields) {
    return std::nullopt;
  }
  out.cpu_seconds = (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  return out;
}

// Calls `visit(pid, stat)` for every process in /proc.
template <class Visit>
void for_each_process(Visit visit) {
  DIR* dir = ::opendir("/proc");
  if (dir == nullptr) {
    return;
  }
  while (const dirent* entry = ::readdir(dir)) {
    char* end = nullptr;
    const long pid = std::strtol(entry->d_name, &end, 10);
    if (pid <= 0 || *end != '\0') {
      continue;
    }
    if (const auto stat = read_stat(static_cast<pid_t>(pid))) {
      visit(static_cast<pid_t>(pid), *stat);
    }
  }
  ::closedir(dir);
}

// Calls `visit(name)` for every entry of the directory `path` but . and ..
template <class Visit>
void for_each_entry(const std::string& path, Visit visit) {
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) {
    return;
  }
  while (const dirent* entry = ::readdir(dir)) {
    if (std::strcmp(entry->d_name, ".") != 0 && std::strcmp(entry->d_name, "..") != 0) {
      visit(std::string(entry->d_name));
    }
  }
  ::closedir(dir);
}

// Adds the schedstat times of every thread of `pid` to `total`.
void add_sched(pid_t pid, sched_time& total) {
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task/";
  for_each_entry(tasks, [&](const std::string& tid) {
    std::ifstream in(tasks + tid + "/schedstat");
    double on_cpu_ns = 0;
    double waiting_ns = 0;
    if (in >> on_cpu_ns >> waiting_ns) {
      total.on_cpu += on_cpu_ns / 1e9;
      total.waiting += waiting_ns / 1e9;
    }
  });
}

// The state letter of thread `tid` of `pid` (field 3 of its stat), '?' if unreadable.
char thread_state(pid_t pid, const std::string& tid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + tid + "/stat");
  std::string stat;
  std::getline(in, stat);
  const std::size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() ? stat[close + 2] : '?';
}

}  // namespace

sched_time this_thread_sched() {
  sched_time t;
  std::ifstream in("/proc/thread-self/schedstat");
  double on_cpu_ns = 0;
  double waiting_ns = 0;
  if (in >> on_cpu_ns >> waiting_ns) {
    t = {on_cpu_ns / 1e9, waiting_ns / 1e9};
  }
  return t;
}

namespace {
std::string& serve_engine() {
  static std::string engine;  // set once by drill's main thread, before any child starts
  return engine;
}
}  // namespace

void set_serve_engine(std::string engine) { serve_engine() = std::move(engine); }

void append_serve_engine(std::vector<std::string>& argv) {
  if (!serve_engine().empty() && serve_engine() != "epoll") {
    argv.emplace_back("--engine");
    argv.push_back(serve_engine());
  }
}

std::string self_path() {
  std::array<char, 4096> buffer{};
  const ssize_t n = ::readlink("/proc/self/exe", buffer.data(), buffer.size() - 1);
  return n > 0 ? std::string(buffer.data(), static_cast<std::size_t>(n)) : "/proc/self/exe";
}

std::string fixture_path() {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  const std::filesystem::path installed = self.parent_path() / "../libexec/transient/transient-fixture";
  const std::filesystem::path built = self.parent_path() / "transient-fixture";
  for (const auto& candidate : {installed, built}) {
    if (!ec && ::access(candidate.c_str(), X_OK) == 0) {
      return candidate.lexically_normal().string();
    }
  }
  throw fixture_missing("the drill's test fixture is missing: no transient-fixture in " +
                        installed.parent_path().lexically_normal().string() + " or " + built.parent_path().string());
}

serve_child::serve_child(const std::vector<std::string>& args, std::uint64_t fd_limit, serve_program program) {
  const bool naive = program == serve_program::fixture_naive;
  std::vector<std::string> argv{program == serve_program::serve ? "transient" : "transient-fixture",
                                naive ? "naive" : "serve"};
  argv.insert(argv.end(), args.begin(), args.end());
  if (!naive) {
    append_serve_engine(argv);
  }
  start(program == serve_program::serve ? "/proc/self/exe" : fixture_path(), std::move(argv), fd_limit);
}

serve_child::serve_child(const child_launch& launch) : own_group_(true) {
  start(launch.program, launch.argv, launch.fd_limit);
}

void serve_child::start(const std::string& program, std::vector<std::string> storage, std::uint64_t fd_limit) {
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
  std::vector<char*> argv;
  for (auto& s : storage) {
    argv.push_back(s.data());
  }
  argv.push_back(nullptr);
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = std::min<rlim_t>(fd_limit, limit.rlim_max);
  limit.rlim_max = limit.rlim_cur;  // a server may raise its soft limit to the hard one (serve does)
  const pid_t parent = ::getpid();
  const bool group = own_group_;

  pid_ = ::fork();
  if (pid_ < 0) {
    throw_errno("drill: fork");
  }
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the drill
    if (::getppid() != parent) {
      ::_exit(127);
    }
    if (group) {
      ::setpgid(0, 0);
      (void)::signal(SIGPIPE, SIG_DFL);  // what a shell would give it
    }
    ::setrlimit(RLIMIT_NOFILE, &limit);
    ::dup2(out_write.get(), 1);
    ::dup2(err_write.get(), 2);
    ::execv(program.c_str(), argv.data());
    ::_exit(127);
  }
  if (group) {
    ::setpgid(pid_, pid_);  // also here: the group exists before the drill signals it
  }
  pidfd_.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0)));
  out_write.reset();
  err_write.reset();
  reader_ = std::thread([this] { drain(); });
}

serve_child::~serve_child() {
  if (own_group_) {
    if (!status_ || !group_members().empty()) {
      stop_group(std::chrono::milliseconds(0));
    }
  } else if (!status_) {
    send(SIGKILL);
    wait_exit(std::chrono::seconds(5));
  }
  // A process that left the group may still hold the pipes open: the reader stops regardless.
  stop_reading_.store(true);
  reader_.join();
}

void serve_child::drain() {
  std::array<pollfd, 2> fds{pollfd{out_.get(), POLLIN, 0}, pollfd{err_.get(), POLLIN, 0}};
  std::array<char, 65536> buffer{};
  int open = 2;
  while (open > 0 && !stop_reading_.load()) {
    if (::poll(fds.data(), fds.size(), 100) < 0 && errno != EINTR) {
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
        written_.stdout_bytes += chunk.size();
        written_.stdout_lines += static_cast<std::uint64_t>(std::count(chunk.begin(), chunk.end(), '\n'));
        if (stdout_.size() < kept_stderr) {  // a flooding target must not fill the drill's memory
          stdout_ += chunk.substr(0, kept_stderr - stdout_.size());
        }
      } else {
        written_.stderr_bytes += chunk.size();
        if (stderr_.size() < kept_stderr) {
          stderr_ += chunk.substr(0, kept_stderr - stderr_.size());
        }
        count_lines(chunk, now);
      }
      changed_.notify_all();
    }
  }
  const std::lock_guard lock(mutex_);
  drained_ = true;
  changed_.notify_all();
}

void serve_child::count_lines(std::string_view chunk, clock::time_point now) {
  for (const char c : chunk) {
    if (c != '\n') {
      if (lines_.size() < kept_lines && partial_line_.size() < 4096) {
        partial_line_.push_back(c);
      }
      continue;
    }
    ++written_.stderr_lines;
    if (lines_.size() < kept_lines) {
      lines_.push_back({now, std::move(partial_line_)});
    }
    partial_line_.clear();
  }
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

output_volume serve_child::written() const {
  const std::lock_guard lock(mutex_);
  return written_;
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
  if (own_group_) {
    return group_cpu_seconds();
  }
  const auto stat = read_stat(pid_);
  return stat ? stat->cpu_seconds : -1;
}

std::vector<pid_t> serve_child::group_members() const {
  std::vector<pid_t> out;
  for_each_process([&](pid_t pid, const process_stat& stat) {
    if (stat.group == pid_ && stat.state != 'Z' && stat.state != 'X') {
      out.push_back(pid);
    }
  });
  return out;
}

double serve_child::group_cpu_seconds() const {
  double total = 0;
  for_each_process([&](pid_t /*pid*/, const process_stat& stat) {
    if (stat.group == pid_) {
      total += stat.cpu_seconds;
    }
  });
  return total;
}

std::vector<pid_t> serve_child::processes() const {
  if (own_group_) {
    return group_members();
  }
  return status_ ? std::vector<pid_t>{} : std::vector<pid_t>{pid_};
}

sched_time serve_child::sched() const {
  sched_time total;
  for (const pid_t pid : processes()) {
    add_sched(pid, total);
  }
  return total;
}

int serve_child::runnable_threads() const {
  int runnable = 0;
  for (const pid_t pid : processes()) {
    for_each_entry("/proc/" + std::to_string(pid) + "/task",
                   [&](const std::string& tid) { runnable += thread_state(pid, tid) == 'R' ? 1 : 0; });
  }
  return runnable;
}

int serve_child::max_open_descriptors() const {
  int most = -1;
  for (const pid_t pid : processes()) {
    int count = 0;
    for_each_entry("/proc/" + std::to_string(pid) + "/fd", [&](const std::string&) { ++count; });
    most = std::max(most, count);
  }
  return most;
}

void serve_child::reap_group() {
  // Members the drill may reap: the child, and (the drill being a subreaper) orphans of the group.
  while (true) {
    int status = 0;
    const pid_t r = ::waitpid(-pid_, &status, WNOHANG);
    if (r <= 0) {
      return;
    }
    if (r == pid_ && !status_) {
      exited_at_ = clock::now();
      status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
  }
}

std::vector<pid_t> serve_child::stop_group(std::chrono::milliseconds grace) {
  const auto wait_empty = [&](std::chrono::milliseconds bound) {
    const auto deadline = clock::now() + bound;
    while (true) {
      reap_group();
      auto left = group_members();
      if (left.empty() || clock::now() >= deadline) {
        return left;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  };
  if (grace.count() > 0) {
    ::kill(-pid_, SIGTERM);
    if (wait_empty(grace).empty()) {
      return {};
    }
  }
  ::kill(-pid_, SIGKILL);
  return wait_empty(std::chrono::seconds(2));
}

void serve_child::send(int signal) const noexcept {
  if (pid_ > 0 && !status_) {
    ::kill(pid_, signal);
  }
}

std::optional<int> serve_child::wait_exit(std::chrono::milliseconds timeout) {
  const bool reaped_before = status_.has_value();
  if (reap(timeout) && !reaped_before) {
    // The exit closed the pipes, but the reader may not have read their last bytes yet:
    // wait (bounded) until it has, so stderr_text() after wait_exit() holds all of it.
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, std::chrono::seconds(2), [this] { return drained_; });
  }
  return status_;
}

std::optional<int> serve_child::reap(std::chrono::milliseconds timeout) {
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
