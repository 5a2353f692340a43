// The naive accept loop of `transient serve --policy naive` (see serve_naive.hpp).
#include "serve_naive.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <string>

namespace transient::tool {
namespace {

[[noreturn]] void throw_errno(const char* what) { throw std::system_error(errno, std::system_category(), what); }

int ms_until(loop::time_point when, loop::time_point now) {
  if (when == loop::time_point::max()) {
    return -1;
  }
  const auto ms = when <= now ? 0 : std::chrono::ceil<std::chrono::milliseconds>(when - now).count();
  return static_cast<int>(std::min<std::int64_t>(ms, std::numeric_limits<int>::max()));
}

}  // namespace

naive_loop::naive_loop(listener l)
    : listener_(std::move(l)),
      epoll_(::epoll_create1(EPOLL_CLOEXEC)),
      wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      now_(clock::now()) {
  if (!epoll_ || !wake_) {
    throw_errno(!epoll_ ? "naive loop: epoll_create1" : "naive loop: eventfd");
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = listener_tag;
  epoll_event wake_ev{};
  wake_ev.events = EPOLLIN;
  wake_ev.data.u64 = wake_tag;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listener_.native_handle(), &ev) != 0 ||
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &wake_ev) != 0) {
    throw_errno("naive loop: epoll_ctl");
  }
}

void naive_loop::stop() noexcept {
  stopping_.store(true);
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(wake_.get(), &one, sizeof one);
}

void naive_loop::run(loop_handler& handler) {
  std::array<epoll_event, 64> events{};
  bool told = false;  // the handler heard that accepting ended
  while (!told || watched_ > 0) {
    const int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()),
                               ms_until(handler.next_timer(), clock::now()));
    if (n < 0 && errno != EINTR) {
      throw_errno("naive loop: epoll_wait");
    }
    now_ = clock::now();
    for (int i = 0; i < n; ++i) {
      const epoll_event& e = events[static_cast<std::size_t>(i)];
      if (e.data.u64 == listener_tag && !stopping_.load()) {
        accept_one(handler);
      } else if (e.data.u64 < listener_tag && e.data.u64 < watchers_.size() && watchers_[e.data.u64] != nullptr) {
        watchers_[e.data.u64]->on_ready(static_cast<int>(e.data.u64), e.events);
      }
    }
    handler.on_time(now_);
    if (!told && stopping_.load()) {
      told = true;
      listener_.close();
      handler.on_accepting_end();
    }
  }
}

void naive_loop::accept_one(loop_handler& handler) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  unique_fd fd(::accept4(listener_.native_handle(), reinterpret_cast<sockaddr*>(&address), &length,
                         SOCK_NONBLOCK | SOCK_CLOEXEC));
  if (!fd) {
    if (errno == EAGAIN || errno == EINTR) {
      return;
    }
    // What the typical loop does: log the error and go round again.
    failures_.fetch_add(1, std::memory_order_relaxed);
    const std::string line = std::string("transient serve (naive): accept failed: ") + std::strerror(errno) + "\n";
    [[maybe_unused]] const ssize_t w = ::write(2, line.data(), line.size());
    return;
  }
  accepted_.fetch_add(1, std::memory_order_relaxed);
  std::error_code ec;
  const endpoint peer = endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&address), length, ec);
  handler.on_connection(connection(std::move(fd), permit{}, peer));
}

void naive_loop::watch(int fd, std::uint32_t events, io_watcher& watcher, std::error_code& ec) noexcept {
  ec = control(EPOLL_CTL_ADD, fd, events);
  if (!ec) {
    if (static_cast<std::size_t>(fd) >= watchers_.size()) {
      watchers_.resize(std::max(static_cast<std::size_t>(fd) + 1, 2 * watchers_.size()), nullptr);
    }
    watchers_[static_cast<std::size_t>(fd)] = &watcher;
    ++watched_;
  }
}

void naive_loop::modify(int fd, std::uint32_t events, std::error_code& ec) noexcept {
  ec = control(EPOLL_CTL_MOD, fd, events);
}

void naive_loop::unwatch(int fd) noexcept {
  if (fd >= 0 && static_cast<std::size_t>(fd) < watchers_.size() && watchers_[static_cast<std::size_t>(fd)]) {
    [[maybe_unused]] const std::error_code ignored = control(EPOLL_CTL_DEL, fd, 0);
    watchers_[static_cast<std::size_t>(fd)] = nullptr;
    --watched_;
  }
}

policy_health naive_loop::health() const noexcept {
  policy_health h;
  h.state = stopping_.load() ? health_state::stopped : health_state::accepting;
  return h;
}

std::error_code naive_loop::control(int op, int fd, std::uint32_t events) const noexcept {
  epoll_event event{};
  event.events = events;
  event.data.u64 = static_cast<std::uint64_t>(fd);
  if (fd < 0) {
    return std::make_error_code(std::errc::bad_file_descriptor);
  }
  return ::epoll_ctl(epoll_.get(), op, fd, &event) == 0 ? std::error_code{}
                                                        : std::error_code(errno, std::system_category());
}

}  // namespace transient::tool
