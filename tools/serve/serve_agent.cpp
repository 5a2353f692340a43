// The agent port of `transient serve` (see serve_agent.hpp).
#include "serve_agent.hpp"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <utility>
#include <vector>

#include "serve_connections.hpp"

namespace transient::tool {

unsigned agent_weight(const policy_metrics& budget) noexcept {
  if (budget.max_connections == 0) {
    return 100;
  }
  const std::uint64_t free = budget.max_connections - std::min(budget.live, budget.max_connections);
  const std::uint64_t percent = free * 100 / budget.max_connections;  // a budget is at most 2^32: no overflow
  return static_cast<unsigned>(std::clamp<std::uint64_t>(percent, 1, 100));
}

namespace {

// What the agent says after '#': the reason up to its first detail (" (", ";"), printable
// ASCII only (HAProxy reads the line up to its first CR or LF), at most 80 characters.
std::string short_reason(const std::string& reason) {
  std::string out = reason.substr(0, std::min(reason.find(" ("), reason.find(';')));
  out.resize(std::min<std::size_t>(out.size(), 80));
  std::replace_if(
      out.begin(), out.end(), [](char c) { return c < ' ' || c > '~'; }, ' ');
  return out;
}

}  // namespace

// A stop signal's drain (and an upgrade's) says "drain", not "stopped": DRAIN sends no new
// client, while the connections in flight, which serve still answers, go on; a DOWN server's
// sessions may be cut (on-marked-down shutdown-sessions). The balancer's own check marks the
// server down once the process has exited and its port refuses. A failure says why it is down.
std::string agent_line(const health_report& health, const policy_metrics& budget) {
  if (health.ready) {
    return "up ready " + std::to_string(agent_weight(budget)) + "%\n";
  }
  if (health.state == "stalled") {
    return "down #stalled: " + short_reason(health.reason) + "\n";
  }
  if (health.failed) {
    return "fail #" + short_reason(health.reason) + "\n";
  }
  return "up drain\n";
}

namespace {

// Reads and drops what the checker sent (HAProxy's agent-send string), at most a few KiB per
// call: closing with input unread sends a reset. True once the peer closed or failed.
bool discard_input(int fd) {
  std::array<char, 512> buffer{};
  for (int i = 0; i < 8; ++i) {
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), MSG_DONTWAIT);
    if (n == 0) {
      return true;
    }
    if (n < 0) {
      return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
    }
  }
  return false;
}

// The whole exchange on one connection: what came is read, the line written (it fits in any
// socket buffer), and the write side shut, so the checker reads the line, then the end.
void answer(int fd, const std::string& line) {
  (void)discard_input(fd);
  [[maybe_unused]] const ssize_t n = ::send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::shutdown(fd, SHUT_WR);
}

// The agent port's loop: each connection is answered at accept and lingers, reading and
// dropping, until the checker closes it or agent_linger passes.
class agent_loop final : public loop_handler, public io_watcher {
 public:
  agent_loop(loop& l, std::function<std::string()> line) : loop_(l), line_(std::move(line)) {}
  ~agent_loop() override { close_all(); }
  agent_loop(const agent_loop&) = delete;
  agent_loop& operator=(const agent_loop&) = delete;

  void on_connection(connection c) override {
    answer(c.native_handle(), line_());
    std::error_code ec;
    loop_.watch(c.native_handle(), EPOLLIN, *this, ec);
    if (!ec) {  // else it closes now: the line is written
      lingering_.push_back({std::move(c), loop_.now() + agent_linger});
    }
  }

  void on_accepting_end() override { close_all(); }

  [[nodiscard]] time_point next_timer() const noexcept override {
    time_point next = time_point::max();
    for (const entry& e : lingering_) {
      next = std::min(next, e.until);
    }
    return next;
  }

  void on_time(time_point now) override {
    close_if([now](const entry& e) { return e.until <= now; });
  }

  void on_ready(int fd, std::uint32_t events) override {
    const bool done = (events & (EPOLLHUP | EPOLLERR)) != 0 || discard_input(fd);
    if (done) {
      close_if([fd](const entry& e) { return e.conn.native_handle() == fd; });
    }
  }

 private:
  struct entry {
    connection conn;
    time_point until;
  };

  // Closes the lingering connections `which` selects (at most agent_connections: a scan).
  template <class Predicate>
  void close_if(Predicate which) {
    std::erase_if(lingering_, [&](entry& e) {
      if (!which(e)) {
        return false;
      }
      loop_.forget(e.conn.native_handle());
      (void)discard_input(e.conn.native_handle());
      e.conn.close();
      return true;
    });
  }

  void close_all() noexcept {
    close_if([](const entry&) { return true; });
  }

  loop& loop_;
  std::function<std::string()> line_;
  std::vector<entry> lingering_;
};

// The agent port's server: one loop; at its budget, or under a descriptor shortage (on the
// spare descriptor), a connection is answered by the refusal writer and closed at once.
server_options agent_server_options(const std::function<std::string()>& line) {
  server_options options = side_port_options("agent", agent_connections);
  options.peer_addresses = false;
  options.policy.shed = shed_mode::respond;
  options.policy.backoff.cap = std::chrono::milliseconds(100);  // a check waits at most this under EMFILE
  options.refuse = [line](int fd, const endpoint& /*peer*/) { answer(fd, line()); };
  return options;
}

}  // namespace

agent_endpoint::agent_endpoint(listener l, std::function<std::string()> line) {
  std::vector<listener> listeners;
  listeners.push_back(std::move(l));
  server_options options = agent_server_options(line);
  server_ = std::make_unique<server>(
      std::move(listeners), [line = std::move(line)](loop& on) { return std::make_unique<agent_loop>(on, line); },
      std::move(options));
  thread_ = run_side_port(*server_, "agent");
}

void agent_endpoint::close() {
  const std::lock_guard lock(closing_);
  if (thread_.joinable()) {
    server_->stop();
    thread_.join();
  }
}

agent_endpoint::~agent_endpoint() { close(); }

}  // namespace transient::tool
