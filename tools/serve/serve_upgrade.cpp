// serve's upgrade in place (see serve_upgrade.hpp).
#include "serve_upgrade.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <string_view>
#include <system_error>

#include "serve_connections.hpp"
#include "transient/drivers/systemd.hpp"
#include "transient/errors/errors.hpp"

extern char** environ;  // NOLINT(readability-redundant-declaration): POSIX declares it nowhere else

namespace transient::tool {
namespace {

constexpr std::string_view fd_variable = "TRANSIENT_HANDOVER_FD";
constexpr std::string_view signal_variable = "TRANSIENT_UPGRADE_SIGNAL_NS";

// How long a successor whose channel closed has to be seen exiting before it is killed: its
// descriptors close just before it becomes a zombie.
constexpr int exit_grace_ms = 200;

template <class T>
std::optional<T> number_of(std::string_view text) {
  T value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size()) {
    return std::nullopt;
  }
  return value;
}

std::string milliseconds_text(double ms) {
  std::array<char, 32> text{};
  const int n = std::snprintf(text.data(), text.size(), "%.1f", ms);
  return std::string(text.data(), static_cast<std::size_t>(n > 0 ? n : 0));
}

// The environment of the successor: ours, with the channel's descriptor and the signal's time.
std::vector<std::string> successor_environment(int channel, std::int64_t signal_ns) {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const std::string_view name = entry.substr(0, entry.find('='));
    if (name != fd_variable && name != signal_variable) {
      env.emplace_back(entry);
    }
  }
  env.push_back(std::string(fd_variable) + "=" + std::to_string(channel));
  env.push_back(std::string(signal_variable) + "=" + std::to_string(signal_ns));
  return env;
}

// The char* array execve wants, pointing into `strings`.
std::vector<char*> pointers_to(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (std::string& s : strings) {
    out.push_back(s.data());
  }
  out.push_back(nullptr);
  return out;
}

// posix_spawn's settings for the successor: the channel's end without CLOEXEC in the child
// only (a dup2 onto its own number clears it, glibc 2.29 and later), every signal unblocked
// (this thread blocks serve's), and SIGPIPE back to its default. The channel keeps its number,
// so that no descriptor the successor inherits is replaced.
class spawn_settings {
 public:
  explicit spawn_settings(int channel) {
    ::posix_spawn_file_actions_init(&actions_);
    ::posix_spawnattr_init(&attributes_);
    ::posix_spawn_file_actions_adddup2(&actions_, channel, channel);
    sigset_t none;
    sigemptyset(&none);
    ::posix_spawnattr_setsigmask(&attributes_, &none);
    sigset_t defaults;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    ::posix_spawnattr_setsigdefault(&attributes_, &defaults);
    ::posix_spawnattr_setflags(&attributes_, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  }
  ~spawn_settings() {
    ::posix_spawn_file_actions_destroy(&actions_);
    ::posix_spawnattr_destroy(&attributes_);
  }
  spawn_settings(const spawn_settings&) = delete;
  spawn_settings& operator=(const spawn_settings&) = delete;

  [[nodiscard]] const posix_spawn_file_actions_t* actions() const noexcept { return &actions_; }
  [[nodiscard]] const posix_spawnattr_t* attributes() const noexcept { return &attributes_; }

 private:
  posix_spawn_file_actions_t actions_{};
  posix_spawnattr_t attributes_{};
};

// Starts the successor with the channel's end `channel`; its pid, or -1 with `why` set.
pid_t spawn_successor(const upgrade_image& image, int channel, std::int64_t signal_ns, std::string& why) {
  if (image.exe.empty() || image.argv.empty()) {
    why = "this process's binary or arguments were unreadable at start-up (/proc/self)";
    return -1;
  }
  std::vector<std::string> args = image.argv;
  std::vector<std::string> env = successor_environment(channel, signal_ns);
  const std::vector<char*> argv = pointers_to(args);
  const std::vector<char*> envp = pointers_to(env);
  const spawn_settings settings(channel);
  pid_t pid = -1;
  const int rc =
      ::posix_spawn(&pid, image.exe.c_str(), settings.actions(), settings.attributes(), argv.data(), envp.data());
  if (rc != 0) {
    why = "cannot start " + image.exe + ": " + std::strerror(rc);
    return -1;
  }
  return pid;
}

// Waits at most `ms` for `pid` to exit (a pidfd); true if it did.
bool exits_within(pid_t pid, int ms) {
  const unique_fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) {
    return false;
  }
  pollfd p{pidfd.get(), POLLIN, 0};
  while (true) {
    const int n = ::poll(&p, 1, ms);
    if (n >= 0 || errno != EINTR) {
      return n > 0;
    }
  }
}

// Ends a successor that will not serve, and says what became of it.
std::string reap_failed(pid_t pid) {
  const bool exited = exits_within(pid, exit_grace_ms);
  if (!exited) {
    ::kill(pid, SIGKILL);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  const std::string who = "the successor, PID " + std::to_string(pid) + ", ";
  if (!exited) {
    return who + "was killed";
  }
  if (WIFEXITED(status)) {
    return who + "exited with status " + std::to_string(WEXITSTATUS(status));
  }
  return who + "was killed by signal " + std::to_string(WTERMSIG(status));
}

std::chrono::milliseconds left_until(std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return std::max(left, std::chrono::milliseconds(1));
}

// A loop handler that adds to `inner`: each member hands its event on, and a wrapper
// overrides the ones it adds to.
class wrapping_handler : public loop_handler {
 public:
  void on_connection(connection c) override { inner_->on_connection(std::move(c)); }
  void on_accepting_end() override { inner_->on_accepting_end(); }
  [[nodiscard]] time_point next_timer() const noexcept override { return inner_->next_timer(); }
  void on_time(time_point now) override { inner_->on_time(now); }

 protected:
  explicit wrapping_handler(std::unique_ptr<loop_handler> inner) : inner_(std::move(inner)) {}

 private:
  std::unique_ptr<loop_handler> inner_;
};

// A successor's loop handler that logs the first connection of all its loops.
class first_accept_logger final : public wrapping_handler {
 public:
  first_accept_logger(std::unique_ptr<loop_handler> inner, handover_origin& origin,
                      std::function<void(const std::string&)> log)
      : wrapping_handler(std::move(inner)), origin_(origin), log_(std::move(log)) {}

  void on_connection(connection c) override {
    if (!origin_.accepted.load(std::memory_order_relaxed) && !origin_.accepted.exchange(true)) {
      const double ms = static_cast<double>(monotonic_ns() - origin_.signal_ns) / 1e6;
      log_("upgrade: first accept " + milliseconds_text(ms) + " ms after the signal to PID " +
           std::to_string(origin_.old_pid));
    }
    wrapping_handler::on_connection(std::move(c));
  }

 private:
  handover_origin& origin_;
  std::function<void(const std::string&)> log_;
};

// The first loop's handler while upgrades may be asked for: it watches the requests'
// eventfd beside `inner`'s descriptors, and lets go of it when accepting ends (a request that
// comes later finds serve stopping, and ~upgrade_watch says so).
class upgrade_requests_watcher final : public wrapping_handler, public io_watcher {
 public:
  upgrade_requests_watcher(std::unique_ptr<loop_handler> inner, loop& l, upgrade_watch& watch)
      : wrapping_handler(std::move(inner)), loop_(l), watch_(watch) {
    loop_.watch(watch_.requests(), EPOLLIN, *this);
    watched_ = true;
  }
  ~upgrade_requests_watcher() override { let_go(); }
  upgrade_requests_watcher(const upgrade_requests_watcher&) = delete;
  upgrade_requests_watcher& operator=(const upgrade_requests_watcher&) = delete;

  void on_ready(int /*fd*/, std::uint32_t /*events*/) override { watch_.take_request(); }
  void on_accepting_end() override {
    let_go();
    wrapping_handler::on_accepting_end();
  }

 private:
  void let_go() noexcept {
    if (watched_) {
      loop_.unwatch(watch_.requests());
      watched_ = false;
    }
  }

  loop& loop_;
  upgrade_watch& watch_;
  bool watched_ = false;
};

}  // namespace

upgrade_image read_upgrade_image() {
  upgrade_image image;
  std::array<char, PATH_MAX> path{};
  const ssize_t n = ::readlink("/proc/self/exe", path.data(), path.size() - 1);
  if (n > 0) {
    image.exe.assign(path.data(), static_cast<std::size_t>(n));
  }
  std::ifstream cmdline("/proc/self/cmdline", std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
  for (std::size_t at = 0; at < all.size();) {
    const std::size_t end = std::min(all.find('\0', at), all.size());
    image.argv.push_back(all.substr(at, end - at));
    at = end + 1;
  }
  return image;
}

std::int64_t monotonic_ns() noexcept {
  timespec t{};
  ::clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

std::unique_ptr<handover_origin> handover_from_environment(std::string& problem) {
  const char* fd_text = std::getenv(std::string(fd_variable).c_str());
  if (fd_text == nullptr) {
    return nullptr;
  }
  const std::string fd_value = fd_text;
  const char* ns_text = std::getenv(std::string(signal_variable).c_str());
  const std::string ns_value = ns_text == nullptr ? "" : ns_text;
  ::unsetenv(std::string(fd_variable).c_str());
  ::unsetenv(std::string(signal_variable).c_str());
  const std::optional<int> fd = number_of<int>(fd_value);
  if (!fd || *fd < 0 || ::fcntl(*fd, F_SETFD, FD_CLOEXEC) != 0) {
    problem = std::string(fd_variable) + "=" + fd_value + " is not an open descriptor";
    return nullptr;
  }
  auto origin = std::make_unique<handover_origin>();
  origin->channel = unique_fd(*fd);
  origin->signal_ns = number_of<std::int64_t>(ns_value).value_or(monotonic_ns());
  origin->old_pid = static_cast<int>(::getppid());
  return origin;
}

std::unique_ptr<loop_handler> logging_first_accept(std::unique_ptr<loop_handler> inner, handover_origin& origin,
                                                   std::function<void(const std::string&)> log) {
  return std::make_unique<first_accept_logger>(std::move(inner), origin, std::move(log));
}

std::unique_ptr<loop_handler> watching_upgrades(std::unique_ptr<loop_handler> inner, loop& l, upgrade_watch& watch) {
  return std::make_unique<upgrade_requests_watcher>(std::move(inner), l, watch);
}

upgrade_watch::upgrade_watch(upgrade_image image, std::chrono::milliseconds timeout, upgrade_hooks hooks)
    : image_(std::move(image)),
      timeout_(timeout),
      hooks_(std::move(hooks)),
      requests_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!requests_) {
    throw std::system_error(errno, std::system_category(), "eventfd");
  }
}

upgrade_watch::~upgrade_watch() {
  if (thread_.joinable()) {
    thread_.join();
  }
  if (unread_request()) {
    hooks_.log("upgrade ignored: serve is stopping");
  }
}

void upgrade_watch::request(int signal, std::int64_t signal_ns) noexcept {
  if (busy_.exchange(true)) {
    const std::string_view line = signal == SIGHUP
                                      ? "transient serve: SIGHUP ignored: an upgrade is already under way\n"
                                      : "transient serve: SIGUSR2 ignored: an upgrade is already under way\n";
    [[maybe_unused]] const ssize_t n = ::write(2, line.data(), line.size());
    return;
  }
  signal_ns_.store(signal_ns);
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(requests_.get(), &one, sizeof one);
}

// busy_ keeps a second request from coming before the last upgrade's thread has ended (or is
// about to: a failed upgrade clears busy_ as its last step), so the join here is short.
void upgrade_watch::take_request() {
  if (!unread_request()) {
    return;
  }
  if (thread_.joinable()) {
    thread_.join();
  }
  thread_ = thread_without_signals([this] { upgrade(); });
}

// Reads the requests' eventfd: true if a request was waiting.
bool upgrade_watch::unread_request() const noexcept {
  std::uint64_t count = 0;
  return ::read(requests_.get(), &count, sizeof count) == static_cast<ssize_t>(sizeof count) && count > 0;
}

// One upgrade: the successor serves and this process drains, or a line says why not and
// this process serves on (a later signal may try again).
void upgrade_watch::upgrade() {
  if (hooks_.stopping()) {
    hooks_.log("upgrade ignored: serve is stopping");
    return;  // busy_ stays set: nothing is upgraded once the drain began
  }
  const std::int64_t signal_ns = signal_ns_.load();
  std::string why;
  const int pid = hand_over(signal_ns, why);
  if (pid <= 0) {
    hooks_.log("upgrade failed: " + why + "; still serving");
    busy_.store(false);
    return;
  }
  const double ms = static_cast<double>(monotonic_ns() - signal_ns) / 1e6;
  hooks_.log("upgrade: PID " + std::to_string(pid) + " took over the listeners in " + milliseconds_text(ms) +
             " ms; draining");
  std::error_code ec;
  if (notify_supervisor("MAINPID=" + std::to_string(pid), ec) && ec) {
    hooks_.log("could not notify NOTIFY_SOCKET of MAINPID=" + std::to_string(pid) + ": " + ec.message());
  }
  hooks_.drain();
}

// Starts the successor, hands it the listeners and waits until it serves them: its pid, or 0
// with `why` set (the successor, if it ran, killed and reaped).
int upgrade_watch::hand_over(std::int64_t signal_ns, std::string& why) {
  std::array<int, 2> ends{};
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends.data()) != 0) {
    why = "socketpair: " + std::error_code(errno, std::system_category()).message();
    return 0;
  }
  const unique_fd channel(ends[0]);
  unique_fd theirs(ends[1]);
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  const pid_t pid = spawn_successor(image_, theirs.get(), signal_ns, why);
  theirs.reset();  // the successor's exit then closes the channel
  if (pid <= 0) {
    return 0;
  }
  std::error_code ec;
  const std::vector<listener_offer> offers = hooks_.offers();
  hand_over_listeners(channel.get(), offers, left_until(deadline), ec);
  const int ready = ec ? 0 : await_ready(channel.get(), left_until(deadline), ec);
  if (!ec && ready <= 0) {
    ec = make_error_code(error::handover_malformed);  // a ready without a pid: not a serve that serves
  }
  if (ec) {
    why = ec.message() + " (" + reap_failed(pid) + ")";
    return 0;
  }
  return ready;
}

}  // namespace transient::tool
