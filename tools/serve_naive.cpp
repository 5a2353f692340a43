// The naive accept loop of `transient serve --policy naive` (see serve_naive.hpp).
#include "serve_naive.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>

namespace transient::tool {

naive_loop::naive_loop(int epoll_fd, listener l, std::function<void(connection)> handler)
    : listener_(std::move(l)), handler_(std::move(handler)), wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!wake_) {
    throw std::system_error(errno, std::system_category(), "naive loop: eventfd");
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = listener_tag;
  epoll_event wake_ev{};
  wake_ev.events = EPOLLIN;
  wake_ev.data.u64 = wake_tag;
  if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listener_.native_handle(), &ev) != 0 ||
      ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, wake_.get(), &wake_ev) != 0) {
    throw std::system_error(errno, std::system_category(), "naive loop: epoll_ctl");
  }
}

void naive_loop::stop() noexcept {
  stopping_.store(true);
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(wake_.get(), &one, sizeof one);
}

bool naive_loop::handle(const epoll_event& event, clock::time_point /*now*/) {
  if (event.data.u64 == wake_tag) {
    return true;  // stop(): done() says so; the loop ends after this batch
  }
  if (event.data.u64 != listener_tag) {
    return false;
  }
  if (stopping_.load()) {
    return true;
  }
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  unique_fd fd(::accept4(listener_.native_handle(), reinterpret_cast<sockaddr*>(&address), &length,
                         SOCK_NONBLOCK | SOCK_CLOEXEC));
  if (!fd) {
    if (errno == EAGAIN || errno == EINTR) {
      return true;
    }
    // What the typical loop does: log the error and go round again.
    failures_.fetch_add(1, std::memory_order_relaxed);
    const std::string line = std::string("transient serve (naive): accept failed: ") + std::strerror(errno) + "\n";
    [[maybe_unused]] const ssize_t w = ::write(2, line.data(), line.size());
    return true;
  }
  accepted_.fetch_add(1, std::memory_order_relaxed);
  std::error_code ec;
  const endpoint peer = endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&address), length, ec);
  handler_(connection(std::move(fd), permit{}, peer));
  return true;
}

}  // namespace transient::tool
