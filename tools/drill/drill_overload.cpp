// The overload scenario's steps (see drill_overload.hpp): the burst of clients with deadlines,
// counted from outside, and the watch of the accept queue and /readyz.
#include "drill_overload.hpp"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <vector>

#include "drill_client.hpp"
#include "drill_scenarios.hpp"
#include "drill_target.hpp"
#include "transient/policy/budget.hpp"
#include "transient/sockets/listener.hpp"

namespace transient::tool {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Descriptors the drill needs besides its clients: its own, the children's pipes, the watch's.
constexpr std::uint64_t spare_descriptors = 64;

// The drill's RLIMIT_NOFILE soft limit raised to the hard limit while it lives (the library's
// raise_fd_limit), restored after.
class raised_fd_limit {
 public:
  raised_fd_limit() : raise_(raise_fd_limit(error_)) {}
  ~raised_fd_limit() {
    if (raise_.raised()) {
      const rlimit restored{raise_.before, raise_.hard};
      (void)::setrlimit(RLIMIT_NOFILE, &restored);
    }
  }
  raised_fd_limit(const raised_fd_limit&) = delete;
  raised_fd_limit& operator=(const raised_fd_limit&) = delete;
  // The problem for `clients` descriptors ("" if they fit).
  [[nodiscard]] std::string problem(std::size_t clients) const {
    const std::uint64_t needed = clients + spare_descriptors;
    if (!error_ && raise_.after >= needed) {
      return {};
    }
    return "the drill needs " + std::to_string(needed) + " descriptors for " + std::to_string(clients) +
           " clients, but its RLIMIT_NOFILE hard limit is " + std::to_string(raise_.hard) +
           ": raise it (ulimit -Hn, LimitNOFILE=) and run the drill again";
  }

 private:
  std::error_code error_;
  fd_limit_raise raise_;
};

// One client of the burst.
struct client {
  enum class state : unsigned char { connecting, waiting, done };
  unique_fd fd;
  clock::time_point start;
  state now = state::connecting;
  std::string head;  // the response's first bytes, up to its status code
};

// Everything the burst's loop works on.
struct burst {
  const overload_plan& plan;
  std::vector<client> clients;
  unique_fd epoll;
  overload_counts counts;
  clock::time_point start;
  std::size_t done = 0;
};

std::string request_for(const std::string& path) { return "GET " + path + " HTTP/1.1\r\nHost: drill\r\n\r\n"; }

void finish(burst& b, client& c) {
  c.fd.reset();
  c.now = client::state::done;
  ++b.done;
}

// Starts client `i`'s non-blocking connect; a connect that fails at once is refused.
void start_client(burst& b, std::size_t i, const sockaddr_storage& address, socklen_t length) {
  client& c = b.clients[i];
  c.start = clock::now();
  c.fd = unique_fd(::socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  const bool started =
      c.fd && (::connect(c.fd.get(), reinterpret_cast<const sockaddr*>(&address), length) == 0 || errno == EINPROGRESS);
  epoll_event e{EPOLLOUT, {.u64 = i}};
  if (!started || ::epoll_ctl(b.epoll.get(), EPOLL_CTL_ADD, c.fd.get(), &e) != 0) {
    ++b.counts.refused;
    finish(b, c);
  }
}

bool past_deadline(const burst& b, const client& c, clock::time_point t) { return t - c.start > b.plan.deadline; }

// Client `i`'s connect completed (or failed): within the deadline it sends its request.
void on_connected(burst& b, std::size_t i) {
  client& c = b.clients[i];
  int error = 0;
  socklen_t size = sizeof error;
  if (::getsockopt(c.fd.get(), SOL_SOCKET, SO_ERROR, &error, &size) != 0 || error != 0) {
    ++b.counts.refused;
    finish(b, c);
    return;
  }
  if (past_deadline(b, c, clock::now())) {  // a client with a connect timeout gave up already
    ++b.counts.dropped;
    finish(b, c);
    return;
  }
  ++b.counts.connected;
  const std::string request = request_for(b.plan.path);
  epoll_event e{EPOLLIN, {.u64 = i}};
  if (::send(c.fd.get(), request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size()) ||
      ::epoll_ctl(b.epoll.get(), EPOLL_CTL_MOD, c.fd.get(), &e) != 0) {
    ++b.counts.unanswered;
    finish(b, c);
    return;
  }
  c.now = client::state::waiting;
}

// Counts client `c`'s answer, status `status`, which came at `t`.
void count_answer(burst& b, const client& c, int status, clock::time_point t) {
  const bool in_time = !past_deadline(b, c, t);
  const bool refusal = status >= 500;
  (refusal ? (in_time ? b.counts.shed : b.counts.late_shed) : (in_time ? b.counts.served : b.counts.waste)) += 1;
  b.counts.last_answer_s = std::max(b.counts.last_answer_s, std::chrono::duration<double>(t - b.start).count());
}

// Reads what came for client `i`: its status line is its answer; a close before it is none.
void on_readable(burst& b, std::size_t i) {
  client& c = b.clients[i];
  std::array<char, 512> buffer{};
  const ssize_t n = ::recv(c.fd.get(), buffer.data(), buffer.size(), MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
    return;
  }
  if (n <= 0) {
    ++b.counts.unanswered;
    finish(b, c);
    return;
  }
  c.head.append(buffer.data(), std::min<std::size_t>(static_cast<std::size_t>(n), 64));
  if (c.head.size() < 12) {  // "HTTP/1.1 200"
    return;
  }
  const int status = c.head.rfind("HTTP/", 0) == 0 ? std::atoi(c.head.c_str() + 9) : 0;
  count_answer(b, c, status, clock::now());
  finish(b, c);
}

// Clients still connecting past their deadline are dropped: closed, as a connect timeout does.
void drop_late_connects(burst& b) {
  const auto now = clock::now();
  for (auto& c : b.clients) {
    if (c.now == client::state::connecting && past_deadline(b, c, now)) {
      ++b.counts.dropped;
      finish(b, c);
    }
  }
}

// Waits for the clients' events until every client is done or `end`.
void run_loop(burst& b, clock::time_point end) {
  std::array<epoll_event, 256> events{};
  while (b.done < b.clients.size() && clock::now() < end) {
    const int n = ::epoll_wait(b.epoll.get(), events.data(), static_cast<int>(events.size()), 2);
    for (int k = 0; k < n; ++k) {
      const std::size_t i = events[static_cast<std::size_t>(k)].data.u64;
      if (b.clients[i].now == client::state::connecting) {
        on_connected(b, i);
      } else if (b.clients[i].now == client::state::waiting) {
        on_readable(b, i);
      }
    }
    drop_late_connects(b);
  }
  for (auto& c : b.clients) {
    if (c.now != client::state::done) {
      ++(c.now == client::state::connecting ? b.counts.dropped : b.counts.unanswered);
      finish(b, c);
    }
  }
}

std::optional<listen_drops> drops_now() {
  std::error_code ec;
  const listen_drops d = read_listen_drops(ec);
  return ec ? std::nullopt : std::optional<listen_drops>(d);
}

}  // namespace

overload_counts overload_burst(const endpoint& at, const overload_plan& plan, clock::time_point scenario_deadline) {
  const raised_fd_limit limit;
  burst b{plan, std::vector<client>(plan.clients), unique_fd(::epoll_create1(EPOLL_CLOEXEC)), {}, {}, 0};
  b.counts.clients = plan.clients;
  b.counts.problem = limit.problem(plan.clients);
  if (!b.counts.problem.empty() || !b.epoll) {
    b.counts.problem += b.epoll ? "" : "epoll_create1 failed";
    return b.counts;
  }
  sockaddr_storage address{};
  const socklen_t length = at.to_sockaddr(address);
  const std::optional<listen_drops> before = drops_now();
  b.start = clock::now();
  for (std::size_t i = 0; i < plan.clients; ++i) {
    start_client(b, i, address, length);
  }
  run_loop(b, std::min(b.start + plan.watch, scenario_deadline));
  b.counts.seconds = std::chrono::duration<double>(clock::now() - b.start).count();
  const std::optional<listen_drops> after = drops_now();
  if (before && after) {
    b.counts.namespace_drops = listen_drops{after->overflows - before->overflows, after->drops - before->drops};
  }
  return b.counts;
}

readiness_watch::readiness_watch(const serve_child& child, std::uint16_t port, std::uint32_t limit, endpoint metrics)
    : child_(child), port_(port), limit_(limit), metrics_(metrics), thread_([this] { run(); }) {}

readiness_watch::~readiness_watch() { (void)finish(); }

readiness_seen readiness_watch::finish() {
  done_ = true;
  if (thread_.joinable()) {
    thread_.join();
  }
  return seen_;
}

void readiness_watch::run() {
  const auto start = clock::now();
  std::optional<drill_detail::cpu_wait> waited;  // from the crossing: made on this thread, which it measures too
  while (!done_ && std::isnan(seen_.ready_503_ms)) {
    watch_queue(start);
    if (seen_.crossed && !waited) {
      waited.emplace(child_);
    }
    ask_ready(start);
    if (!std::isnan(seen_.ready_503_ms) && waited) {
      seen_.ready_cpu_wait_ms = std::min(waited->ms(), seen_.ready_503_ms);
    }
    ++seen_.polls;
    std::this_thread::sleep_for(milliseconds(2));
  }
}

void readiness_watch::watch_queue(clock::time_point start) {
  std::error_code ec;
  const std::vector<listen_entry> entries = listen_sockets(port_, ec);
  if (entries.size() != 1) {  // not listening (yet, or any more)
    return;
  }
  const std::uint32_t queued = entries.front().queued;
  // The kernel's limit where it says (sock_diag); the backlog serve was given otherwise.
  const std::uint32_t limit = entries.front().queue_limit.value_or(limit_);
  seen_.limit = limit;
  seen_.peak_queue = std::max(seen_.peak_queue, static_cast<double>(queued));
  if (!seen_.crossed && queued > 0 && 2 * queued > limit) {
    seen_.crossed = true;
    seen_.crossed_s = std::chrono::duration<double>(clock::now() - start).count();
  }
}

void readiness_watch::ask_ready(clock::time_point start) {
  if (get_status(metrics_, "/readyz", milliseconds(500)) != 503) {
    return;
  }
  if (!seen_.crossed) {
    seen_.ready_503_before = true;
    return;
  }
  const double since = std::chrono::duration<double>(clock::now() - start).count() - seen_.crossed_s;
  seen_.ready_503_ms = std::max(since * 1000.0, 0.0);
}

}  // namespace transient::tool
