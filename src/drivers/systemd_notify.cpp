// sd_notify without libsystemd (see systemd.hpp).
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>

#include "detail/notify_socket.hpp"
#include "transient/drivers/systemd.hpp"

namespace transient {
namespace {

// Half of WATCHDOG_USEC, if it is set and WATCHDOG_PID (when set) is this process; else 0.
std::chrono::microseconds watchdog_interval() {
  const char* usec = std::getenv("WATCHDOG_USEC");
  const char* pid = std::getenv("WATCHDOG_PID");
  if (usec == nullptr || (pid != nullptr && std::string_view(pid) != std::to_string(::getpid()))) {
    return {};
  }
  std::uint64_t value = 0;
  const std::string_view text(usec);
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value == 0) {
    return {};
  }
  return std::chrono::microseconds(value / 2);
}

}  // namespace

supervisor_socket::supervisor_socket(std::error_code& ec) {
  const auto where = detail::notify_socket_address(ec);
  if (!where) {
    return;  // unset (no supervisor), or malformed (`ec` says so)
  }
  address_ = where->address;
  length_ = where->length;
  fd_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd_) {
    ec.assign(errno, std::system_category());
  }
}

void supervisor_socket::send(std::string_view state, std::error_code& ec) const {
  ec.clear();
  if (::sendto(fd_.get(), state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&address_),
               length_) < 0) {
    ec.assign(errno, std::system_category());
  }
}

bool notify_supervisor(std::string_view state, std::error_code& ec) {
  const supervisor_socket socket(ec);
  if (ec) {
    return true;
  }
  if (!socket) {
    return false;
  }
  socket.send(state, ec);
  return true;
}

supervision supervision_of(const basic_server& server) {
  const policy_health h = server.health();
  const policy_metrics m = server.metrics();
  supervision s;
  s.status = std::string(to_string(h.state)) + (h.error ? ": " + h.error.message() : "");
  s.stopping = h.state == health_state::stopped;
  s.failed = s.stopping && static_cast<bool>(h.error);
  s.healthy = h.state == health_state::accepting || h.state == health_state::backpressure || (s.stopping && !s.failed);
  s.progress = m.accepted + (m.live << 32U);
  for (const std::uint64_t n : m.shed) {
    s.progress += n;
  }
  return s;
}

supervisor_notifier::supervisor_notifier(std::function<supervision()> probe, std::error_code& ec)
    : probe_(std::move(probe)), socket_(ec) {
  if (!socket_) {
    return;  // NOTIFY_SOCKET unset, or unusable (`ec` says so)
  }
  interval_ = watchdog_interval();
  thread_ = std::thread([this] { run(); });
}

supervisor_notifier::~supervisor_notifier() {
  {
    const std::lock_guard lock(mutex_);
    done_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
}

void supervisor_notifier::send(const std::string& message) const {
  std::error_code ec;
  socket_.send(message, ec);  // a supervisor gone away is not the server's failure
}

void supervisor_notifier::run() {
  const clock::duration tick = interval_.count() > 0
                                   ? std::min<clock::duration>(interval_, std::chrono::milliseconds(100))
                                   : clock::duration(std::chrono::milliseconds(100));
  next_ping_ = clock::now();
  last_progress_ = probe_().progress;
  std::unique_lock lock(mutex_);
  while (!done_) {
    lock.unlock();
    report(true);
    lock.lock();
    wake_.wait_for(lock, tick, [this] { return done_; });
  }
  lock.unlock();
  report(false);  // the final state (stalled, stopped) before the process exits
}

// Sends STATUS= if it changed, STOPPING=1 once, and the watchdog ping when due.
void supervisor_notifier::report(bool ping) {
  const supervision s = probe_();
  if (s.status != last_status_) {
    send("STATUS=" + s.status);
    last_status_ = s.status;
  }
  if (s.stopping && !stopping_sent_) {
    send("STOPPING=1");
    stopping_sent_ = true;
  }
  const auto now = clock::now();
  if (ping && interval_.count() > 0 && now >= next_ping_) {
    if (!s.failed && (s.healthy || s.progress != last_progress_)) {
      send("WATCHDOG=1");
    }
    last_progress_ = s.progress;
    next_ping_ = now + interval_;
  }
}

}  // namespace transient
