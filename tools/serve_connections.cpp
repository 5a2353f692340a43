// The connection loop of `transient serve` (see serve_connections.hpp).
#include "serve_connections.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <limits>
#include <system_error>

namespace transient::tool {
namespace {

constexpr std::uint64_t wake_key = std::numeric_limits<std::uint64_t>::max();
// Output queued beyond this stops reading from the client (a pipelining client that never
// reads would otherwise make us buffer without bound).
constexpr std::size_t output_high_water = std::size_t{64} * 1024;
// Reads per readiness event, so one busy client cannot starve the others.
constexpr int reads_per_event = 4;
// After a 400 the write side is shut and input discarded for at most this long before the
// close: closing with unread input would send a reset that can destroy the 400 in flight.
constexpr auto linger_limit = std::chrono::seconds(2);

[[noreturn]] void throw_errno(const char* what) { throw std::system_error(errno, std::system_category(), what); }

}  // namespace

connection_io::connection_io(std::chrono::milliseconds idle_timeout, responder respond)
    : idle_timeout_(idle_timeout),
      respond_(std::move(respond)),
      epoll_(::epoll_create1(EPOLL_CLOEXEC)),
      wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!epoll_ || !wake_) {
    throw_errno("connection loop: epoll_create1/eventfd");
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = wake_key;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) != 0) {
    throw_errno("connection loop: epoll_ctl");
  }
}

connection_io::~connection_io() = default;

void connection_io::add(connection c) {
  {
    const std::lock_guard lock(mutex_);
    if (stopped_) {
      return;  // `c` is closed here
    }
    pending_.push_back(std::move(c));
  }
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(wake_.get(), &one, sizeof one);  // EAGAIN: already signalled
}

void connection_io::stop() noexcept {
  stopping_.store(true);
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(wake_.get(), &one, sizeof one);
}

void connection_io::run() {
  std::array<epoll_event, 64> events{};
  while (!stopping_.load()) {
    const int n =
        ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), next_timeout(clock::now()));
    if (n < 0 && errno != EINTR) {
      throw_errno("connection loop: epoll_wait");
    }
    const auto now = clock::now();
    for (int i = 0; i < n; ++i) {
      if (events[static_cast<std::size_t>(i)].data.u64 == wake_key) {
        std::uint64_t count = 0;
        [[maybe_unused]] const ssize_t r = ::read(wake_.get(), &count, sizeof count);
        take_pending(now);
      } else {
        on_event(static_cast<int>(events[static_cast<std::size_t>(i)].data.u64),
                 events[static_cast<std::size_t>(i)].events, now);
      }
    }
    expire(now);
  }
  {
    const std::lock_guard lock(mutex_);
    stopped_ = true;
    pending_.clear();
  }
  clients_.clear();
  idle_order_.clear();
  open_.store(0);
}

void connection_io::take_pending(clock::time_point now) {
  std::vector<connection> taken;
  {
    const std::lock_guard lock(mutex_);
    taken.swap(pending_);
  }
  for (auto& conn : taken) {
    const int fd = conn.native_handle();
    auto c = std::make_unique<client>();
    c->conn = std::move(conn);
    c->last = now;
    c->age = idle_order_.insert(idle_order_.end(), fd);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = static_cast<std::uint64_t>(fd);
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      idle_order_.erase(c->age);
      continue;  // ENOMEM/ENOSPC: the connection is closed as `c` goes
    }
    clients_.emplace(fd, std::move(c));
    open_.fetch_add(1, std::memory_order_relaxed);
  }
}

void connection_io::on_event(int fd, unsigned events, clock::time_point now) {
  const auto it = clients_.find(fd);
  if (it == clients_.end()) {
    return;
  }
  client& c = *it->second;
  if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0U) {
    read_from(c, now);
    if (!c.conn) {
      close_client(fd);
      return;
    }
  }
  if ((events & EPOLLOUT) != 0U) {
    flush(c);
    touch(c, now);
  }
  if (!c.conn) {
    close_client(fd);
    return;
  }
  update_interest(c);
}

void connection_io::read_from(client& c, clock::time_point now) {
  std::array<char, 16384> buffer{};
  for (int i = 0; i < reads_per_event && c.conn; ++i) {
    const ssize_t n = ::recv(c.conn.native_handle(), buffer.data(), buffer.size(), 0);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      if (errno != EAGAIN) {
        c.conn.close();  // ECONNRESET and the like: the peer is gone
      }
      return;
    }
    if (n == 0) {
      // The peer finished sending: answer what is complete, then close once written.
      if (c.draining || c.out.empty()) {
        c.conn.close();
      } else {
        c.close_after_write = true;
        c.in.clear();
      }
      return;
    }
    if (c.draining) {
      continue;  // input after a 400 is discarded
    }
    touch(c, now);
    c.in.append(buffer.data(), static_cast<std::size_t>(n));
    answer(c);
    if (c.out.size() > output_high_water || c.close_after_write) {
      break;
    }
  }
  flush(c);
}

void connection_io::answer(client& c) {
  std::size_t used = 0;
  while (!c.close_after_write) {
    const parsed_request r = parse_request(std::string_view(c.in).substr(used));
    if (r.status == parse_status::incomplete) {
      break;
    }
    if (r.status == parse_status::bad) {
      c.out += bad_request_response(r.problem);
      c.close_after_write = true;
      used = c.in.size();
      break;
    }
    c.out += respond_(r);
    used += r.length;
    c.close_after_write = !r.keep_alive;
  }
  c.in.erase(0, used);
}

void connection_io::flush(client& c) {
  while (c.conn && !c.out.empty()) {
    const ssize_t n = ::send(c.conn.native_handle(), c.out.data(), c.out.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      if (errno != EAGAIN) {
        c.conn.close();  // EPIPE, ECONNRESET: the peer is gone
      }
      return;
    }
    c.out.erase(0, static_cast<std::size_t>(n));
  }
  if (c.conn && c.out.empty() && c.close_after_write && !c.draining) {
    // Shut the write side (the client reads the response, then EOF) and linger until the
    // client closes, discarding its input, so that the close does not reset the response.
    ::shutdown(c.conn.native_handle(), SHUT_WR);
    c.draining = true;
    c.in.clear();
  }
}

void connection_io::update_interest(client& c) {
  const bool want_write = !c.out.empty();
  const bool want_read = c.draining || c.out.size() <= output_high_water;
  if (want_write == c.writing && want_read == c.reading) {
    return;
  }
  epoll_event ev{};
  ev.events = (want_read ? EPOLLIN : 0U) | (want_write ? EPOLLOUT : 0U);
  ev.data.u64 = static_cast<std::uint64_t>(c.conn.native_handle());
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.conn.native_handle(), &ev) != 0) {
    c.conn.close();
    return;
  }
  c.writing = want_write;
  c.reading = want_read;
}

void connection_io::touch(client& c, clock::time_point now) {
  c.last = now;
  idle_order_.splice(idle_order_.end(), idle_order_, c.age);
}

void connection_io::close_client(int fd) {
  const auto it = clients_.find(fd);
  if (it == clients_.end()) {
    return;
  }
  idle_order_.erase(it->second->age);
  clients_.erase(it);  // closes the descriptor, then releases the permit (connection's order)
  open_.fetch_sub(1, std::memory_order_relaxed);
  if (after_close_) {
    after_close_();
  }
}

// Timeouts: idle_timeout for every connection, linger_limit for one draining after a 400.
// The idle order is by last activity, so its front is the next idle deadline; draining
// connections are few and scanned.
int connection_io::next_timeout(clock::time_point now) const {
  auto next = clock::time_point::max();
  if (!idle_order_.empty()) {
    next = clients_.at(idle_order_.front())->last + idle_timeout_;
  }
  for (const auto& [fd, c] : clients_) {
    if (c->draining) {
      next = std::min(next, c->last + std::min<clock::duration>(idle_timeout_, linger_limit));
    }
  }
  if (next == clock::time_point::max()) {
    return -1;
  }
  if (next <= now) {
    return 0;
  }
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(next - now).count();
  return static_cast<int>(std::min<std::int64_t>(ms, 60000));
}

void connection_io::expire(clock::time_point now) {
  while (!idle_order_.empty()) {
    const int fd = idle_order_.front();
    if (clients_.at(fd)->last + idle_timeout_ > now) {
      break;
    }
    close_client(fd);
  }
  std::vector<int> lingered;
  for (const auto& [fd, c] : clients_) {
    if (c->draining && c->last + std::min<clock::duration>(idle_timeout_, linger_limit) <= now) {
      lingered.push_back(fd);
    }
  }
  for (const int fd : lingered) {
    close_client(fd);
  }
}

}  // namespace transient::tool
