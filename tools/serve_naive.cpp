// The naive accept loop of `transient serve --policy naive` (see serve_naive.hpp).
#include "serve_naive.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>

namespace transient::tool {

naive_loop::naive_loop(listener l, std::function<void(connection)> handler)
    : listener_(std::move(l)),
      handler_(std::move(handler)),
      epoll_(::epoll_create1(EPOLL_CLOEXEC)),
      wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!epoll_ || !wake_) {
    throw std::system_error(errno, std::system_category(), "naive loop: epoll_create1/eventfd");
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listener_.native_handle();
  epoll_event wake_ev{};
  wake_ev.events = EPOLLIN;
  wake_ev.data.fd = wake_.get();
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listener_.native_handle(), &ev) != 0 ||
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &wake_ev) != 0) {
    throw std::system_error(errno, std::system_category(), "naive loop: epoll_ctl");
  }
}

void naive_loop::stop() noexcept {
  stopping_.store(true);
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(wake_.get(), &one, sizeof one);
}

void naive_loop::run() {
  epoll_event events[2];
  while (!stopping_.load()) {
    const int n = ::epoll_wait(epoll_.get(), events, 2, -1);
    for (int i = 0; i < n && !stopping_.load(); ++i) {
      if (events[i].data.fd != listener_.native_handle()) {
        continue;
      }
      sockaddr_storage address{};
      socklen_t length = sizeof address;
      unique_fd fd(::accept4(listener_.native_handle(), reinterpret_cast<sockaddr*>(&address), &length,
                             SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!fd) {
        if (errno == EAGAIN || errno == EINTR) {
          continue;
        }
        // What the typical loop does: log the error and go round again.
        failures_.fetch_add(1, std::memory_order_relaxed);
        const std::string line = std::string("transient serve (naive): accept failed: ") + std::strerror(errno) + "\n";
        [[maybe_unused]] const ssize_t w = ::write(2, line.data(), line.size());
        continue;
      }
      accepted_.fetch_add(1, std::memory_order_relaxed);
      std::error_code ec;
      const endpoint peer = endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&address), length, ec);
      handler_(connection(std::move(fd), permit{}, peer));
    }
  }
}

}  // namespace transient::tool
