// The connection loop of `transient serve` (see serve_connections.hpp).
#include "serve_connections.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <limits>
#include <system_error>

namespace transient::tool {
namespace {

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

connection_loop::connection_loop(std::chrono::milliseconds idle_timeout, responder respond)
    : idle_timeout_(idle_timeout), respond_(std::move(respond)), epoll_(::epoll_create1(EPOLL_CLOEXEC)) {
  if (!epoll_) {
    throw_errno("connection loop: epoll_create1");
  }
}

connection_loop::~connection_loop() { close_all(); }

void connection_loop::add(connection conn) {
  const int fd = conn.native_handle();
  if (fd < 0) {
    return;
  }
  const auto slot = static_cast<std::size_t>(fd);
  if (slot >= clients_.size()) {
    clients_.resize(std::max(slot + 1, clients_.size() * 2));  // may throw: `conn` is closed then
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = static_cast<std::uint64_t>(fd);
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    return;  // ENOMEM/ENOSPC: the connection is closed as `conn` goes
  }
  client& c = clients_[slot];
  c.conn = std::move(conn);
  c.close_after_write = false;
  c.draining = false;
  c.writing = false;
  c.reading = true;
  c.last = now_;
  link_newest(fd);
  ++open_;
}

void connection_loop::run(accept_source& source) {
  std::array<epoll_event, 64> events{};
  now_ = clock::now();
  while (!source.done()) {
    int timeout = next_timeout();
    const int source_timeout = source.timeout_ms(now_);
    if (source_timeout >= 0 && (timeout < 0 || source_timeout < timeout)) {
      timeout = source_timeout;
    }
    const int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), timeout);
    if (n < 0 && errno != EINTR) {
      throw_errno("connection loop: epoll_wait");
    }
    now_ = clock::now();
    for (int i = 0; i < n; ++i) {
      const epoll_event& e = events[static_cast<std::size_t>(i)];
      if (e.data.u64 >= accept_source::first_source_tag) {
        if (!source.handle(e, now_)) {
          continue;  // not ours either: nothing else registers here
        }
      } else {
        on_event(static_cast<int>(e.data.u64), e.events);
      }
    }
    source.on_time(now_);
    expire();
  }
  close_all();
}

void connection_loop::on_event(int fd, unsigned events) {
  if (static_cast<std::size_t>(fd) >= clients_.size() || !clients_[static_cast<std::size_t>(fd)].conn) {
    return;
  }
  client& c = clients_[static_cast<std::size_t>(fd)];
  if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0U) {
    read_from(c);
    if (!c.conn) {
      close_client(fd);
      return;
    }
  }
  if ((events & EPOLLOUT) != 0U) {
    flush(c);
    touch(fd);
  }
  if (!c.conn) {
    close_client(fd);
    return;
  }
  update_interest(c);
}

void connection_loop::read_from(client& c) {
  std::array<char, 16384> buffer;  // NOLINT(cppcoreguidelines-pro-type-member-init): recv fills it
  const int fd = c.conn.native_handle();
  for (int i = 0; i < reads_per_event && c.conn; ++i) {
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      if (errno != EAGAIN) {
        c.conn.close();  // ECONNRESET and the like: the peer is gone
      }
      break;
    }
    if (n == 0) {
      // The peer finished sending: answer what is complete, then close once written.
      if (c.draining || c.out.empty()) {
        c.conn.close();
      } else {
        c.close_after_write = true;
        c.in.clear();
      }
      break;
    }
    if (c.draining) {
      continue;  // input after a 400 is discarded
    }
    touch(fd);
    c.in.append(buffer.data(), static_cast<std::size_t>(n));
    answer(c);
    // A short read emptied the socket: level-triggered epoll reports what comes next, so
    // another recv now would only return EAGAIN (one wasted system call per request).
    if (static_cast<std::size_t>(n) < buffer.size() || c.out.size() > output_high_water || c.close_after_write) {
      break;
    }
  }
  flush(c);
}

void connection_loop::answer(client& c) {
  std::size_t used = 0;
  while (!c.close_after_write && used < c.in.size()) {
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
    respond_(r, c.out);
    used += r.length;
    c.close_after_write = !r.keep_alive;
  }
  c.in.erase(0, used);
}

void connection_loop::flush(client& c) {
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
    ++draining_;
    c.in.clear();
  }
}

void connection_loop::update_interest(client& c) {
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

void connection_loop::link_newest(int fd) {
  client& c = clients_[static_cast<std::size_t>(fd)];
  c.older = newest_;
  c.newer = none;
  if (newest_ != none) {
    clients_[static_cast<std::size_t>(newest_)].newer = fd;
  } else {
    oldest_ = fd;
  }
  newest_ = fd;
}

void connection_loop::unlink(int fd) {
  client& c = clients_[static_cast<std::size_t>(fd)];
  (c.older != none ? clients_[static_cast<std::size_t>(c.older)].newer : oldest_) = c.newer;
  (c.newer != none ? clients_[static_cast<std::size_t>(c.newer)].older : newest_) = c.older;
  c.older = none;
  c.newer = none;
}

void connection_loop::touch(int fd) {
  clients_[static_cast<std::size_t>(fd)].last = now_;
  if (fd != newest_) {
    unlink(fd);
    link_newest(fd);
  }
}

void connection_loop::close_client(int fd) {
  client& c = clients_[static_cast<std::size_t>(fd)];
  unlink(fd);
  if (c.draining) {
    --draining_;
    c.draining = false;
  }
  c.conn.close();  // closes the descriptor, then releases the permit (connection's order)
  c.in.clear();    // the capacity stays for the next connection on this descriptor
  c.out.clear();
  --open_;
  if (after_close_) {
    after_close_();
  }
}

void connection_loop::close_all() noexcept {
  while (oldest_ != none) {
    const int fd = oldest_;
    client& c = clients_[static_cast<std::size_t>(fd)];
    unlink(fd);
    c.conn.close();
  }
  clients_.clear();
  open_ = 0;
  draining_ = 0;
}

// Timeouts: idle_timeout for every connection, linger_limit for one draining after a 400.
// The idle order is by last activity, so its oldest entry is the next idle deadline;
// draining connections are few and scanned, only while there are any.
int connection_loop::next_timeout() const {
  auto next = clock::time_point::max();
  if (oldest_ != none) {
    next = clients_[static_cast<std::size_t>(oldest_)].last + idle_timeout_;
  }
  if (draining_ > 0) {
    const auto limit = std::min<clock::duration>(idle_timeout_, linger_limit);
    for (int fd = oldest_; fd != none; fd = clients_[static_cast<std::size_t>(fd)].newer) {
      const client& c = clients_[static_cast<std::size_t>(fd)];
      if (c.draining) {
        next = std::min(next, c.last + limit);
      }
    }
  }
  if (next == clock::time_point::max()) {
    return -1;
  }
  if (next <= now_) {
    return 0;
  }
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(next - now_).count();
  return static_cast<int>(std::min<std::int64_t>(ms, 60000));
}

void connection_loop::expire() {
  while (oldest_ != none && clients_[static_cast<std::size_t>(oldest_)].last + idle_timeout_ <= now_) {
    close_client(oldest_);
  }
  if (draining_ > 0) {
    const auto limit = std::min<clock::duration>(idle_timeout_, linger_limit);
    for (int fd = oldest_; fd != none;) {
      const client& c = clients_[static_cast<std::size_t>(fd)];
      const int newer = c.newer;
      if (c.draining && c.last + limit <= now_) {
        close_client(fd);
      }
      fd = newer;
    }
  }
}

std::thread thread_without_signals(std::function<void()> body) {
  sigset_t block;
  sigset_t old;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  ::pthread_sigmask(SIG_BLOCK, &block, &old);
  std::thread t(std::move(body));
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return t;
}

}  // namespace transient::tool
