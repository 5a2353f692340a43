// The connection loop of `transient serve` (see serve_connections.hpp).
#include "serve_connections.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <iostream>
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

// A closed connection's buffers keep up to this capacity for the next connection on the same
// descriptor (no allocation per connection once a loop is warm); larger ones, grown by a
// pipelining burst, are given back, so that memory returns after the burst.
constexpr std::size_t kept_capacity = std::size_t{16} * 1024;

void keep_small(std::string& buffer) {
  if (buffer.capacity() > kept_capacity) {
    std::string().swap(buffer);
  } else {
    buffer.clear();
  }
}

// True if `in` (the unanswered input) holds a complete request head, as parse_request frames
// it: the blank line after the request line, past any empty lines before it.
bool has_complete_head(std::string_view in) noexcept {
  std::size_t start = 0;
  while (in.size() - start >= 2 && in.substr(start, 2) == "\r\n") {
    start += 2;
  }
  return in.find("\r\n\r\n", start) != std::string_view::npos;
}

std::string seconds_text(std::chrono::milliseconds d) {
  return d.count() % 1000 == 0 ? std::to_string(d.count() / 1000) + "s" : std::to_string(d.count()) + "ms";
}

}  // namespace

connection_loop::connection_loop(loop& l, connection_limits limits, responder respond)
    : loop_(l), limits_(limits), respond_(std::move(respond)), now_(l.now()) {}

connection_loop::~connection_loop() {
  close_all();
  finish_if_drained();
  if (timeouts_running_) {
    end_timeout_run();  // a run of header timeouts always has its end line
  }
}

void connection_loop::on_connection(connection c) {
  now_ = loop_.now();
  const int fd = c.native_handle();
  add(std::move(c));
  if (after_accept_) {
    after_accept_();
  }
  read_first_request(fd);
}

// An HTTP client sends its request as soon as it has connected, so by the time the connection
// is accepted the request has usually arrived: reading it at once answers it in the same pass
// of the loop, where waiting for epoll to report it costs a wait, a wake-up and a dispatch per
// connection. A client that has sent nothing yet costs one recv that finds nothing (EAGAIN).
// Does nothing if add() left the connection to the caller.
void connection_loop::read_first_request(int fd) { on_event(fd, EPOLLIN); }

// Takes `conn` if it can be watched; else leaves it to the caller, which closes it as it goes.
void connection_loop::add(connection&& conn) {
  const int fd = conn.native_handle();
  if (fd < 0) {
    return;
  }
  const auto slot = static_cast<std::size_t>(fd);
  if (slot >= clients_.size()) {
    clients_.resize(std::max(slot + 1, clients_.size() * 2));  // may throw: the caller closes `conn`
  }
  std::error_code ec;
  loop_.watch(fd, EPOLLIN, *this, ec);
  if (ec) {
    return;  // ENOMEM/ENOSPC: left to the caller, which closes it
  }
  client& c = clients_[slot];
  c.conn = std::move(conn);
  c.close_after_write = false;
  c.draining = false;
  c.writing = false;
  c.reading = true;
  c.head_received = false;
  c.delayed = false;
  c.waited = false;
  c.last = now_;
  note_deadline(c.last + limits_.idle);
  link_newest(fd);
  ++open_;
  update_head_timer(c);
}

void connection_loop::on_ready(int fd, std::uint32_t events) {
  now_ = loop_.now();
  if (fd == drain_end_) {
    end_drain("drain ended by a second stop signal");
    return;
  }
  on_event(fd, events);
}

void connection_loop::on_time(clock::time_point now) {
  now_ = now;
  if (now_ >= due_) {
    expire();
  }
  if (draining_all_ && now_ >= drain_until_) {
    end_drain("drain timeout (" + seconds_text(limits_.drain) + ")");
  }
  if (evict_when_full_ && loop_.health().state == health_state::backpressure) {
    close_idlest();  // its permit's release wakes the acceptor for the client waiting
  }
  finish_if_drained();
  publish();
}

// The graceful stop: every connection is served until a response that says Connection: close
// is written, then closes. An idle keep-alive connection stays open for its next request (its
// client may be sending it this instant: closing now would leave that request unanswered, or
// reset it), until it is answered, its idle or header timeout, or the drain's end
// (limits.drain, or the drain-end descriptor). The drain ends when no connection is left.
void connection_loop::on_accepting_end() {
  now_ = loop_.now();
  draining_all_ = true;
  drain_until_ = now_ + limits_.drain;
  if (limits_.drain.count() == 0) {
    answer_pending();
    close_all();
  }
  for (int fd = oldest_; fd != none;) {
    const int newer = clients_[static_cast<std::size_t>(fd)].newer;
    if (done_draining(clients_[static_cast<std::size_t>(fd)])) {
      close_client(fd);
    }
    fd = newer;
  }
  if (open_ > 0 && drain_end_ >= 0) {
    std::error_code ec;
    loop_.watch(drain_end_, EPOLLIN, *this, ec);
    drain_end_watched_ = !ec;
  }
  publish();
}

// Closes every connection at once, saying how many were still open; requests already in their
// receive queues are answered first, as far as the sockets take the responses without waiting.
void connection_loop::end_drain(std::string_view why) {
  answer_pending();
  if (open_ > 0 && log_) {
    log_(std::string(why) + ": closing " + std::to_string(open_) + " connection(s) still in flight");
  }
  close_all();
  finish_if_drained();
}

// Reads and answers what waits unread on each connection that may still get an answer, so that
// a close that follows neither leaves a request without its response nor resets it.
void connection_loop::answer_pending() {
  for (client& c : clients_) {
    if (answerable(c) && unread_bytes(c) > 0) {
      read_from(c);
    }
  }
}

// True if input on `c` is read and answered (not after its last response, nor while a held-back
// request waits).
bool connection_loop::answerable(const client& c) noexcept {
  return c.conn && !c.draining && !c.close_after_write && !c.delayed;
}

// What the client sent that the socket holds and the loop has not read (0 if unknown).
int connection_loop::unread_bytes(const client& c) noexcept {
  int unread = 0;
  return ::ioctl(c.conn.native_handle(), FIONREAD, &unread) == 0 ? unread : 0;
}

// Once the drain has nothing left, the loop must see no watch of ours, or it never ends.
void connection_loop::finish_if_drained() noexcept {
  if (draining_all_ && open_ == 0 && drain_end_watched_) {
    loop_.unwatch(drain_end_);
    drain_end_watched_ = false;
  }
}

void connection_loop::publish() const noexcept {
  if (counters_ != nullptr) {
    counters_->open.store(open_, std::memory_order_relaxed);
    counters_->header_timeouts.store(header_timeouts_, std::memory_order_relaxed);
  }
}

// While the loop drains, a connection is done when its last response is out and nothing unread
// waits in its receive queue (a close with unread input would reset the response). Outside a
// drain such a connection lingers until the client closes.
bool connection_loop::done_draining(const client& c) const noexcept {
  return draining_all_ && c.conn && c.draining && c.out.empty() && unread_bytes(c) == 0;
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
  after_event(fd);
}

// What every event on a client ends with: close it if it is gone (or, while draining, done),
// else update its epoll interest and its header timer.
void connection_loop::after_event(int fd) {
  client& c = clients_[static_cast<std::size_t>(fd)];
  if (!c.conn || done_draining(c)) {
    close_client(fd);
    return;
  }
  update_interest(c);
  if (!c.conn) {
    close_client(fd);
    return;
  }
  update_head_timer(c);
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
    if (c.draining || c.close_after_write) {
      continue;  // after a 400 or the last request nothing more is answered: discarded, not kept
    }
    touch(fd);
    serve_input(c, std::string_view(buffer.data(), static_cast<std::size_t>(n)));
    // A short read emptied the socket: level-triggered epoll reports what comes next, so
    // another recv now would only return EAGAIN (one wasted system call per request).
    if (static_cast<std::size_t>(n) < buffer.size() || c.out.size() > output_high_water || c.close_after_write) {
      break;
    }
  }
  flush(c);
}

// Answers what `arrived` completes and keeps the rest in c.in. When nothing waits in c.in
// (the usual case) requests are framed straight from the read buffer, and only a partial
// request is copied.
void connection_loop::serve_input(client& c, std::string_view arrived) {
  if (c.in.empty()) {
    const std::size_t used = answer(c, arrived);
    if (used < arrived.size()) {
      c.in.assign(arrived.substr(used));
    }
  } else {
    c.in.append(arrived);
    c.in.erase(0, answer(c, c.in));
  }
  c.head_received = !c.in.empty() && !c.close_after_write && has_complete_head(c.in);
}

// Answers the complete requests at the start of `input` in order, until one is incomplete,
// bad, delayed or the last on the connection; returns the bytes they took.
std::size_t connection_loop::answer(client& c, std::string_view input) {
  std::size_t used = 0;
  while (!c.close_after_write && !c.delayed && used < input.size()) {
    parsed_request r = parse_request(input.substr(used));
    if (r.status == parse_status::incomplete) {
      break;
    }
    if (r.status == parse_status::bad) {
      c.out += bad_request_response(r.problem);
      c.close_after_write = true;
      return input.size();
    }
    const std::chrono::milliseconds delay = (delay_ && !c.waited) ? delay_(r) : std::chrono::milliseconds(0);
    if (delay.count() > 0) {
      c.delayed = true;  // answered by respond_delayed(); reading stops meanwhile
      c.respond_at = now_ + delay;
      note_deadline(c.respond_at);
      ++delayed_;
      break;
    }
    c.waited = false;
    if (draining_all_) {
      r.keep_alive = false;  // the last response on this connection: the server is stopping
    }
    head_unlink(c.conn.native_handle());  // the next head's time counts from this response
    respond_(r, c.out);
    used += r.length;
    c.close_after_write = !r.keep_alive;
  }
  return used;
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
    note_deadline(c.last + std::min<clock::duration>(limits_.idle, linger_limit));
    c.in.clear();
  }
}

void connection_loop::update_interest(client& c) {
  const bool want_write = !c.out.empty();
  const bool want_read = c.draining || (!c.delayed && c.out.size() <= output_high_water);
  if (want_write == c.writing && want_read == c.reading) {
    return;
  }
  std::error_code ec;
  loop_.modify(c.conn.native_handle(), (want_read ? EPOLLIN : 0U) | (want_write ? EPOLLOUT : 0U), ec);
  if (ec) {
    c.conn.close();  // the caller closes the client, which forgets it
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

// The header timer runs while the server waits for a request: from the connection's start,
// or from the moment its previous response was written out, to a complete head; then once
// more, from the head, to the end of its body, so that a body sent a byte at a time cannot
// hold the connection (and a drain) past twice the limit. It does not run while a response is
// queued or after a 400.
void connection_loop::update_head_timer(client& c) {
  const bool waiting = !c.draining && !c.close_after_write && !c.delayed && c.out.empty();
  const int fd = c.conn.native_handle();
  if (c.awaiting_head && c.timing_body != c.head_received) {
    head_unlink(fd);  // the head came (its body's time counts from now), or the request ended
  }
  if (waiting == c.awaiting_head) {
    return;
  }
  if (!waiting) {
    head_unlink(fd);
    return;
  }
  c.awaiting_head = true;
  c.timing_body = c.head_received;
  c.head_since = now_;  // the newest: the head order stays sorted by head_since
  note_deadline(c.head_since + limits_.header);
  c.head_older = head_newest_;
  c.head_newer = none;
  (head_newest_ != none ? clients_[static_cast<std::size_t>(head_newest_)].head_newer : head_oldest_) = fd;
  head_newest_ = fd;
}

void connection_loop::head_unlink(int fd) {
  client& c = clients_[static_cast<std::size_t>(fd)];
  if (!c.awaiting_head) {
    return;
  }
  (c.head_older != none ? clients_[static_cast<std::size_t>(c.head_older)].head_newer : head_oldest_) = c.head_newer;
  (c.head_newer != none ? clients_[static_cast<std::size_t>(c.head_newer)].head_older : head_newest_) = c.head_older;
  c.head_older = none;
  c.head_newer = none;
  c.awaiting_head = false;
}

void connection_loop::close_client(int fd) {
  client& c = clients_[static_cast<std::size_t>(fd)];
  unlink(fd);
  head_unlink(fd);
  if (c.draining) {
    --draining_;
    c.draining = false;
  }
  if (c.delayed) {
    --delayed_;
    c.delayed = false;
  }
  loop_.forget(fd);
  c.conn.close();  // closes the descriptor, then releases the permit (connection's order)
  keep_small(c.in);
  keep_small(c.out);
  --open_;
  if (after_close_) {
    after_close_();
  }
}

void connection_loop::close_idlest() {
  if (oldest_ != none) {
    close_client(oldest_);
  }
}

void connection_loop::close_all() noexcept {
  while (oldest_ != none) {
    const int fd = oldest_;
    client& c = clients_[static_cast<std::size_t>(fd)];
    unlink(fd);
    loop_.forget(fd);
    c.conn.close();
  }
  clients_.clear();
  open_ = 0;
  draining_ = 0;
  delayed_ = 0;
  head_oldest_ = none;
  head_newest_ = none;
}

// Timeouts: limits.idle for every connection, limits.header for those waiting for a request
// head, linger_limit for one draining after a 400, a held-back response (delay_), the end of
// a run of header timeouts and of the drain. The idle and head orders are by time, so their
// oldest entries are the next deadlines; draining and delayed connections are few and
// scanned, only while there are any.
connection_loop::clock::time_point connection_loop::next_timer() const noexcept {
  auto next = clock::time_point::max();
  if (oldest_ != none) {
    next = clients_[static_cast<std::size_t>(oldest_)].last + limits_.idle;
  }
  if (head_oldest_ != none) {
    next = std::min(next, clients_[static_cast<std::size_t>(head_oldest_)].head_since + limits_.header);
  }
  if (timeouts_running_) {
    next = std::min(next, last_header_timeout_ + limits_.header);
  }
  if (draining_all_) {
    next = std::min(next, drain_until_);
  }
  if (draining_ > 0 || delayed_ > 0) {
    const auto limit = std::min<clock::duration>(limits_.idle, linger_limit);
    for (int fd = oldest_; fd != none; fd = clients_[static_cast<std::size_t>(fd)].newer) {
      const client& c = clients_[static_cast<std::size_t>(fd)];
      if (c.draining) {
        next = std::min(next, c.last + limit);
      }
      if (c.delayed) {
        next = std::min(next, c.respond_at);
      }
    }
  }
  due_ = next;
  return next;
}

// A deadline set after the last next_timer() may come before what it returned.
void connection_loop::note_deadline(clock::time_point when) noexcept { due_ = std::min(due_, when); }

void connection_loop::expire() {
  if (delayed_ > 0) {
    respond_delayed();
  }
  expire_heads();
  while (oldest_ != none && clients_[static_cast<std::size_t>(oldest_)].last + limits_.idle <= now_) {
    expire_idle(oldest_);
  }
  if (draining_ > 0) {
    const auto limit = std::min<clock::duration>(limits_.idle, linger_limit);
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

// Closes the connection `fd`, idle past limits.idle, unless a request arrived at the last
// moment (it waits unread in the socket): that one is read and answered, which makes the
// connection active again.
void connection_loop::expire_idle(int fd) {
  client& c = clients_[static_cast<std::size_t>(fd)];
  if (!answerable(c) || unread_bytes(c) == 0) {
    close_client(fd);
    return;
  }
  read_from(c);
  touch(fd);  // even if the read ended in a close: the loop over the idle order moves on
  after_event(fd);
}

// Closes the connections whose request head is late, counting them; a run of such closes is
// logged when it starts and when it ends, not once per client (a slowloris attack is
// thousands of them).
void connection_loop::expire_heads() {
  while (head_oldest_ != none && clients_[static_cast<std::size_t>(head_oldest_)].head_since + limits_.header <= now_) {
    close_client(head_oldest_);
    ++header_timeouts_;
    ++timeouts_in_run_;
    last_header_timeout_ = now_;
    note_deadline(last_header_timeout_ + limits_.header);
    if (!timeouts_running_) {
      timeouts_running_ = true;
      if (log_) {
        log_(
            "header timeout: closing connections that send no complete request head, or no body after "
            "it, within " +
            seconds_text(limits_.header) + " (counted in transient_serve_header_timeouts_total)");
      }
    }
  }
  if (timeouts_running_ && last_header_timeout_ + limits_.header <= now_) {
    end_timeout_run();
  }
}

void connection_loop::end_timeout_run() {
  timeouts_running_ = false;
  if (log_) {
    log_("header timeouts ended: " + std::to_string(timeouts_in_run_) +
         " connection(s) closed without a complete request");
  }
  timeouts_in_run_ = 0;
}

// Answers the held-back requests whose delay is over, then what followed them.
void connection_loop::respond_delayed() {
  for (int fd = oldest_; fd != none;) {
    client& c = clients_[static_cast<std::size_t>(fd)];
    const int newer = c.newer;
    if (c.delayed && c.respond_at <= now_) {
      c.delayed = false;
      c.waited = true;
      --delayed_;
      touch(fd);
      serve_input(c, {});  // nothing new arrived: answer what waits behind the held-back request
      flush(c);
      after_event(fd);
    }
    fd = newer;
  }
}

std::thread thread_without_signals(std::function<void()> body) {
  sigset_t block;
  sigset_t old;
  sigemptyset(&block);
  for (const int signal : stop_signal_numbers) {
    sigaddset(&block, signal);
  }
  for (const int signal : upgrade_signal_numbers) {
    sigaddset(&block, signal);
  }
  for (const int signal : ignored_signal_numbers) {
    sigaddset(&block, signal);
  }
  ::pthread_sigmask(SIG_BLOCK, &block, &old);
  std::thread t(std::move(body));
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return t;
}

server_options side_port_options(std::string_view name, std::uint64_t max_connections) {
  server_options options;
  options.max_connections = max_connections;
  options.policy.stall_timeout = {};
  options.diagnosis_fds = false;
  options.policy.sink = [prefix = "transient serve (" + std::string(name) + " port): "](const policy_event& e) {
    if (e.kind != policy_event_kind::diagnosis) {
      const std::string line = prefix + format(e) + "\n";
      [[maybe_unused]] const ssize_t n = ::write(2, line.data(), line.size());
    }
  };
  return options;
}

std::thread run_side_port(server& s, std::string_view name) {
  return thread_without_signals([&s, what = "transient serve: " + std::string(name) + " port stopped: "] {
    try {
      if (const stop_info r = s.run(); !r.ok()) {
        std::cerr << what << r.error.message() << '\n';
      }
    } catch (const std::exception& e) {
      std::cerr << what << e.what() << '\n';
    }
  });
}

}  // namespace transient::tool
