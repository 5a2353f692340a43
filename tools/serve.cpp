// `transient serve`: an HTTP/1.1 keep-alive responder on transient's accept loop (or, for
// demonstration, on a naive one). See serve_options.cpp for the command line.
//
// Run to completion: each of --threads N loops (serve_loop) owns an epoll set, an acceptor on
// the one verified listener (EPOLLEXCLUSIVE when there are several, so a connection wakes one
// loop) and the connections it accepted; all acceptors draw from one shared budget (and,
// with --max-per-peer, one peer_limit).
//
// The stop is a drain: SIGTERM (or a failure such as a stall) stops every acceptor at once,
// idle connections close, requests in flight are answered, and the process exits when they
// are done or after --drain-timeout. Outside the process, the metrics port's /healthz and
// /readyz and systemd's STATUS= and WATCHDOG=1 show the health the loops publish.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "command.hpp"
#include "serve_connections.hpp"
#include "serve_loop.hpp"
#include "serve_metrics.hpp"
#include "serve_naive.hpp"
#include "serve_notify.hpp"
#include "serve_options.hpp"
#include "transient/budget_fit.hpp"
#include "transient/connection_budget.hpp"
#include "transient/diagnostics.hpp"
#include "transient/error.hpp"
#include "transient/peer_limit.hpp"
#include "transient/policy_metrics.hpp"
#include "transient/shared_budget.hpp"

namespace transient::tool {
namespace {

class serve_group;

// What a stop signal (SIGTERM, SIGINT, SIGQUIT) stops: the first drains, a second ends the
// drain at once. Signals are blocked on every thread but the main one, so the handlers run
// only there, never while main is tearing these objects down (it clears them first).
// Everything the handlers call is async-signal-safe (acceptor::stop documents it). The
// metrics port stays up until the loops have drained, so /readyz answers 503 meanwhile. A
// signal that comes before there is anything to stop (the handlers are installed before the
// listener opens) is counted in `stop_signals`, and honoured once there is.
std::atomic<serve_group*> signal_group{nullptr};
std::atomic<naive_loop*> signal_naive{nullptr};
std::atomic<int> stop_signals{0};

extern "C" void on_stop_signal(int /*signal*/);

// SIGHUP, SIGUSR1 and SIGUSR2, which supervisors send to reload or reopen logs, would end the
// process without a drain: serve has nothing to reload or reopen, so it says so and goes on.
extern "C" void on_ignored_signal(int signal) {
  const std::string_view line =
      signal == SIGHUP    ? "transient serve: SIGHUP ignored (nothing to reload; SIGTERM drains and stops)\n"
      : signal == SIGUSR1 ? "transient serve: SIGUSR1 ignored (nothing to reopen; SIGTERM drains and stops)\n"
                          : "transient serve: SIGUSR2 ignored (no upgrade in place; SIGTERM drains and stops)\n";
  [[maybe_unused]] const ssize_t n = ::write(2, line.data(), line.size());
}

void install_signal_handlers() {
  struct sigaction action {};
  sigemptyset(&action.sa_mask);
  action.sa_handler = &on_stop_signal;
  for (const int signal : stop_signal_numbers) {
    ::sigaction(signal, &action, nullptr);
  }
  action.sa_handler = &on_ignored_signal;
  for (const int signal : ignored_signal_numbers) {
    ::sigaction(signal, &action, nullptr);
  }
  (void)::signal(SIGPIPE, SIG_IGN);  // a reader of our stdout may go away; sockets use MSG_NOSIGNAL
}

// Descriptors this process holds (the census does not count the one it reads them through).
int open_descriptors() { return static_cast<int>(take_fd_census().total); }

// The hidden --leak-per-connection knob: descriptors opened and never closed, outside the
// budget, so the drill can show the watchdog naming a leak. /dev/null: a "character device".
// Each accepted connection owes `count` descriptors; what cannot be opened (the table is
// full) is owed until a connection closes, whose freed descriptor the leak takes at once, as
// a handler that opens a file per request and never closes it would.
class descriptor_leak {
 public:
  explicit descriptor_leak(unsigned per_connection) : per_connection_(per_connection) {}
  void on_accept() {
    owed_.fetch_add(per_connection_);
    pay();
  }
  void pay() {
    unsigned owed = owed_.load();
    while (owed > 0 && owed_.compare_exchange_weak(owed, owed - 1)) {
      const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);  // deliberately never closed
      if (fd < 0) {
        owed_.fetch_add(1);
        return;
      }
      owed = owed_.load();
    }
  }

 private:
  unsigned per_connection_;
  std::atomic<unsigned> owed_{0};
};

// True if systemd passed sockets to this process: LISTEN_PID is our pid and LISTEN_FDS set
// (sd_listen_fds(3)); a LISTEN_PID of another process was meant for an ancestor.
bool socket_activated() {
  const char* pid = std::getenv("LISTEN_PID");
  const char* fds = std::getenv("LISTEN_FDS");
  if (pid == nullptr || fds == nullptr) {
    return false;
  }
  long value = 0;
  const std::string_view text(pid);
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  return ec == std::errc{} && end == text.data() + text.size() && value == static_cast<long>(::getpid());
}

// The one socket systemd passed, verified like any listener (listeners_from_systemd).
listener systemd_listener_of(std::string& problem) {
  systemd_options options;
  options.unset_environment = true;  // children (none today) must not take our sockets
  listen_report report;
  std::vector<systemd_listener> passed = listeners_from_systemd(options, report);
  if (report.error) {
    problem =
        "the socket systemd passed (LISTEN_FDS): " + (report.message.empty() ? report.error.message() : report.message);
    return {};
  }
  if (passed.size() != 1) {
    problem = "systemd passed " + std::to_string(passed.size()) + " sockets (LISTEN_FDS); serve serves exactly one";
    return {};
  }
  return std::move(passed.front().socket);
}

// The listener --listen or --port-range asks for, or the one systemd passed; on failure,
// `problem` says why and `error` is the cause.
listener open_listener(const serve_settings& s, std::string& problem, std::error_code& error) {
  if (socket_activated()) {
    return systemd_listener_of(problem);
  }
  listen_report report;
  listen_options options;
  listener l = s.port_range ? listen_in_range(s.listen_on, s.port_range->first, s.port_range->second, options, report)
                            : listen(s.listen_on, options, report);
  if (!l) {
    problem = report.message.empty() ? report.error.message() : report.message;
    error = report.error;
  } else if (!report.warning.empty()) {
    std::cerr << "transient serve: " << report.warning << '\n';
  }
  return l;
}

// Only now, with the listener verified (listen() checked it against the kernel's LISTEN table)
// and the server built, may a supervisor hear that we are ready: a service must never announce
// itself on a port it does not really hold.
void announce(const endpoint& where) {
  std::cout << "listening on " << where.to_string() << " (verified)" << std::endl;
  std::error_code ec;
  if (notify_supervisor("READY=1", ec) && ec) {
    std::cerr << "transient serve: could not notify NOTIFY_SOCKET: " << ec.message() << '\n';
  }
}

std::unique_ptr<metrics_endpoint> start_metrics(const serve_settings& s, std::function<std::string()> text,
                                                std::function<health_report()> health, std::string& problem) {
  if (!s.metrics) {
    return nullptr;
  }
  listen_report report;
  listener l = listen(*s.metrics, listen_options{}, report);
  if (!l) {
    problem = "cannot listen on metrics address " + s.metrics->to_string() + ": " + report.message;
    return nullptr;
  }
  std::cout << "metrics on http://" << l.local_endpoint().to_string() << "/metrics" << std::endl;
  return std::make_unique<metrics_endpoint>(std::move(l), std::move(text), std::move(health));
}

// One line on stderr from any thread (a single write, so lines of several loops never mix).
void log_line(const std::string& text) {
  const std::string line = "transient serve: " + text + "\n";
  [[maybe_unused]] const ssize_t n = ::write(2, line.data(), line.size());
}

// The loops of serve_transient: one per --threads, all on one listener, one budget and one
// per-peer cap. The first acceptor to stop (SIGTERM, a stall, a dead listener, an exception)
// makes every loop stop accepting and drain; the first failure is reported.
class serve_group {
 public:
  serve_group(const serve_settings& s, listener l, descriptor_leak* leak) : stall_timeout_(s.stall_timeout) {
    const auto source = std::make_shared<const listener>(std::move(l));
    const auto budget = budget_for(s);
    if (s.max_per_peer > 0) {
      peers_ = std::make_unique<peer_limit>(s.max_per_peer);
    }
    connection_limits limits;
    limits.idle = s.idle_timeout;
    limits.header = s.header_timeout;
    limits.drain = s.drain_timeout;
    limits.slow_response = s.slow_response;
    for (unsigned i = 0; i < s.threads; ++i) {
      acceptor_options options;
      options.budget = budget;
      options.exclusive = s.threads > 1;
      options.peer_addresses = false;  // serve never reads them (a per-peer cap still does)
      options.policy.shed = s.shed;
      options.policy.peers = peers_;
      options.policy.stall_timeout = s.stall_timeout;
      options.policy.listener_verified = true;
      if (s.threads > 1) {  // the lines name the listener (the policy adds it) and the loop
        options.policy.label = "loop " + std::to_string(i + 1) + "/" + std::to_string(s.threads);
      }
      // The stop and its diagnosis are said once, at exit, by serve itself (with the stop reason
      // and the descriptors open); a loop's stop line only when it ends an episode that had not
      // recovered (else its `degraded` line would have no end); other events as usual.
      options.policy.sink = [](const policy_event& e) {
        const bool said_at_exit = e.kind == policy_event_kind::diagnosis ||
                                  (e.kind == policy_event_kind::stopped && !e.error && e.failures == 0);
        if (!said_at_exit) {
          write_to_stderr(e);
        }
      };
      if (s.shed == shed_mode::respond) {
        options.refuse = [](int fd, const endpoint&) {
          static constexpr std::string_view refusal =
              "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\nRetry-After: 1\r\nConnection: "
              "close\r\n\r\nbusy\n";
          [[maybe_unused]] const ssize_t n = ::send(fd, refusal.data(), refusal.size(), MSG_NOSIGNAL);
        };
      }
      std::function<void()> after_accept;
      if (leak != nullptr) {
        after_accept = [leak] { leak->on_accept(); };
      }
      add_loop(s, [&] {
        return std::make_unique<serve_loop>(limits, &append_ok_response, source, std::move(options),
                                            std::move(after_accept), s.engine);
      });
      if (leak != nullptr) {
        loops_.back()->connections().set_after_close([leak] { leak->pay(); });
      }
      loops_.back()->connections().set_log(&log_line);
      loops_.back()->set_on_accept_end([this] { drain(); });
    }
  }

  // The budget --max-connections asks for; an automatic one that leaves no room names the
  // option that gives one.
  static std::shared_ptr<shared_budget> budget_for(const serve_settings& s) {
    try {
      return shared_budget::create(s.max_connections);
    } catch (const std::system_error& e) {
      if (s.max_connections != 0) {
        throw;
      }
      std::error_code ec;
      throw std::system_error(e.code(), "the automatic connection budget leaves no room: RLIMIT_NOFILE is " +
                                            std::to_string(fd_soft_limit(ec)) +
                                            " and at least 32 descriptors are kept in reserve; give "
                                            "--max-connections N or raise the limit");
    }
  }

  // Adds the loop `make` builds. Running out of descriptors for it says what each loop holds.
  void add_loop(const serve_settings& s, const std::function<std::unique_ptr<serve_loop>()>& make) {
    const int before = per_loop_ == 0 ? open_descriptors() : 0;  // measured at the first loop only
    try {
      loops_.push_back(make());
    } catch (const std::system_error& e) {
      if (e.code() != std::errc::too_many_files_open && e.code() != std::errc::too_many_files_open_in_system) {
        throw;
      }
      std::error_code ec;
      throw std::system_error(
          e.code(), "--threads " + std::to_string(s.threads) + ": loop " + std::to_string(loops_.size() + 1) +
                        " cannot start (" + e.what() + "); each loop holds " +
                        (per_loop_ > 0 ? std::to_string(per_loop_) : std::string("a few")) +
                        " descriptors of its own (an epoll set, wake-ups, the diagnostics reserve) and RLIMIT_NOFILE "
                        "is " +
                        std::to_string(fd_soft_limit(ec)) + ": use fewer --threads or raise the limit");
    }
    if (per_loop_ == 0) {
      per_loop_ = open_descriptors() - before;
    }
  }

  // Runs every loop (the first on the calling thread) until stop() or the first failure.
  // Returns 0 for a clean stop, 1 after printing why not.
  int run() {
    std::vector<std::thread> threads;
    for (std::size_t i = 1; i < loops_.size(); ++i) {
      threads.push_back(thread_without_signals([this, i] { run_loop(*loops_[i]); }));
    }
    run_loop(*loops_.front());
    for (auto& t : threads) {
      t.join();
    }
    if (exception_) {
      try {
        std::rethrow_exception(exception_);
      } catch (const std::exception& e) {
        std::cerr << "transient serve: stopped: " << e.what() << '\n';
      }
      return 1;
    }
    if (!failure_) {
      std::cerr << "transient serve: stopped: " << to_string(failure_.reason) << ": " << failure_.error.message()
                << '\n';
      if (!failure_.diagnosis.empty()) {
        std::cerr << failure_.diagnosis << (failure_.diagnosis.back() == '\n' ? "" : "\n");
      }
      return 1;
    }
    return 0;
  }

  // Stops every loop's accepting; each ends once its connections in flight are answered
  // (at most --drain-timeout). Async-signal-safe.
  void drain() noexcept {
    draining_.store(true);
    for (const auto& l : loops_) {
      l->drain();
    }
  }

  // Ends a drain at once: every loop closes its connections and returns. Async-signal-safe.
  void end_drain() noexcept {
    for (const auto& l : loops_) {
      l->connections().end_drain();
    }
  }

  // The health the probes and systemd see, from what the loops published (never blocks them):
  // the worst loop's state, or stalled / stopped once accepting has ended.
  [[nodiscard]] health_report health() const {
    health_report h;
    std::size_t open = 0;
    policy_health worst;
    for (const auto& l : loops_) {
      const loop_snapshot snap = l->snapshot();
      open += snap.open_connections;
      if (snap.health.state >= worst.state) {
        worst = snap.health;
      }
    }
    if (worst.state == health_state::stopped && worst.error) {
      const bool stalled = worst.error == condition::stalled;
      h.state = stalled ? "stalled" : "stopped";
      h.reason = (stalled ? "descriptors stayed exhausted with no progress for " +
                                std::to_string(stall_timeout_.count()) + " ms (" + worst.error.message() + ")"
                          : worst.error.message()) +
                 "; exiting after " + std::to_string(open) + " connection(s) in flight";
      h.live = false;
      h.ready = false;
    } else if (draining_.load() || worst.state == health_state::stopped) {
      h.state = "stopped";
      h.reason = "stopping: draining " + std::to_string(open) + " connection(s) in flight";
      h.live = false;
      h.ready = false;
    } else if (worst.state == health_state::degraded) {
      h.state = "degraded";
      h.reason = "accept failing, backing off: " + worst.error.message();
      h.ready = false;
    } else if (worst.state == health_state::backpressure) {
      const policy_metrics m = metrics();
      h.state = "backpressure";
      h.reason = "connection budget full (" + std::to_string(m.live) + " of " + std::to_string(m.max_connections) +
                 "): new clients wait";
      h.ready = false;
    }
    return h;
  }

  // True if a loop's acceptor stopped on a failure (a stall): no watchdog ping any more.
  [[nodiscard]] bool failed() const {
    return std::any_of(loops_.begin(), loops_.end(), [](const auto& l) {
      const loop_snapshot snap = l->snapshot();
      return snap.health.state == health_state::stopped && static_cast<bool>(snap.health.error);
    });
  }

  // A number that grows while the loops do work (accepts, sheds, and the budget's live
  // count moving as connections come and go); failed accepts do not count.
  [[nodiscard]] std::uint64_t progress() const {
    std::uint64_t total = 0;
    for (const auto& l : loops_) {
      const policy_metrics m = l->metrics();
      total += m.accepted;
      for (const std::uint64_t n : m.shed) {
        total += n;
      }
    }
    return total + (loops_.front()->budget()->budget().live() << 32U);
  }

  // Connections closed for a late request head, over all loops.
  [[nodiscard]] std::uint64_t header_timeouts() const {
    std::uint64_t total = 0;
    for (const auto& l : loops_) {
      total += l->snapshot().header_timeouts;
    }
    return total;
  }

  // The counters of every loop's acceptor, with the budget's current live and peak.
  [[nodiscard]] policy_metrics metrics() const {
    policy_metrics m;
    for (const auto& l : loops_) {
      m += l->metrics();
    }
    const connection_budget& b = loops_.front()->budget()->budget();
    m.live = b.live();
    m.peak = b.peak();
    m.max_connections = b.max_connections();
    return m;
  }

  [[nodiscard]] const endpoint& local_endpoint() const noexcept { return loops_.front()->local_endpoint(); }

 private:
  void run_loop(serve_loop& l) {
    try {
      l.run();
      if (!l.result()) {
        const std::lock_guard lock(mutex_);
        if (failure_ && !exception_) {
          failure_ = l.result();
        }
      }
    } catch (...) {
      const std::lock_guard lock(mutex_);
      if (failure_ && !exception_) {
        exception_ = std::current_exception();
      }
    }
    drain();  // the first loop to end ends them all (already done when its acceptor stopped)
  }

  std::chrono::milliseconds stall_timeout_;
  int per_loop_ = 0;                   // descriptors the first loop took
  std::shared_ptr<peer_limit> peers_;  // shared with the permits of the connections it counts
  std::vector<std::unique_ptr<serve_loop>> loops_;
  std::atomic<bool> draining_{false};
  std::mutex mutex_;  // guards failure_ and exception_ (the first failure wins)
  stop_info failure_;
  std::exception_ptr exception_;
};

extern "C" void on_stop_signal(int /*signal*/) {
  const bool first = stop_signals.fetch_add(1) == 0;
  if (auto* g = signal_group.load()) {
    first ? g->drain() : g->end_drain();
  }
  if (auto* n = signal_naive.load()) {
    n->stop();
  }
}

// The systemd side of the health (sd_notify(3)): STATUS=<state>: <reason> at every change,
// STOPPING=1 once the drain begins, and, when WATCHDOG_USEC is set for this process,
// WATCHDOG=1 every half interval while the loops make progress or are healthy and idle
// (accepting, backpressure). None once degraded without progress or stalled: WatchdogSec=
// then restarts a server whose descriptors leak, even with --stall-timeout 0. On a thread
// of its own that reads what the loops publish.
class supervisor_notifier {
 public:
  explicit supervisor_notifier(const serve_group& group) : group_(group), socket_(problem_) {
    if (!socket_) {
      return;  // NOTIFY_SOCKET unset, or unusable (announce() said so)
    }
    interval_ = watchdog_interval();
    thread_ = thread_without_signals([this] { run(); });
  }
  ~supervisor_notifier() {
    {
      const std::lock_guard lock(mutex_);
      done_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) {
      thread_.join();
    }
  }
  supervisor_notifier(const supervisor_notifier&) = delete;
  supervisor_notifier& operator=(const supervisor_notifier&) = delete;

 private:
  using clock = std::chrono::steady_clock;

  // Half of WATCHDOG_USEC, if it is set and WATCHDOG_PID (when set) is this process; else 0.
  static std::chrono::microseconds watchdog_interval() {
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

  void send(const std::string& message) const {
    std::error_code ec;
    socket_.send(message, ec);  // a supervisor gone away is not serve's failure
  }

  void run() {
    const auto tick = interval_.count() > 0 ? std::min<clock::duration>(interval_, std::chrono::milliseconds(100))
                                            : clock::duration(std::chrono::milliseconds(100));
    next_ping_ = clock::now();
    last_progress_ = group_.progress();
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

  // Sends STATUS= if the health changed, STOPPING=1 once, and the watchdog ping when due.
  void report(bool ping) {
    const health_report h = group_.health();
    const std::string status = "STATUS=" + h.state + (h.reason.empty() ? "" : ": " + h.reason);
    if (status != last_status_) {
      send(status);
      last_status_ = status;
    }
    if ((h.state == "stopped" || h.state == "stalled") && !stopping_sent_) {
      send("STOPPING=1");
      stopping_sent_ = true;
    }
    const auto now = clock::now();
    if (ping && interval_.count() > 0 && now >= next_ping_) {
      const std::uint64_t progress = group_.progress();
      const bool healthy = h.state == "accepting" || h.state == "backpressure" || h.state == "stopped";
      if (!group_.failed() && (healthy || progress != last_progress_)) {
        send("WATCHDOG=1");
      }
      last_progress_ = progress;
      next_ping_ = now + interval_;
    }
  }

  const serve_group& group_;
  std::error_code problem_;
  supervisor_socket socket_;
  std::chrono::microseconds interval_{0};
  std::mutex mutex_;  // guards done_
  std::condition_variable wake_;
  bool done_ = false;
  // The notifier thread's own state.
  clock::time_point next_ping_{};
  std::uint64_t last_progress_ = 0;
  std::string last_status_;
  bool stopping_sent_ = false;
  std::thread thread_;  // last: started when everything above is initialized
};

std::string serve_metrics_text(const serve_group& group) {
  return to_prometheus(group.metrics()) +
         "# HELP transient_serve_header_timeouts_total Connections closed for sending no complete request head "
         "within --header-timeout.\n# TYPE transient_serve_header_timeouts_total counter\n"
         "transient_serve_header_timeouts_total " +
         std::to_string(group.header_timeouts()) + "\n";
}

// RLIMIT_NOFILE raised to its hard limit (--fd-limit raise): a service's soft limit is
// usually 1,024 under a far higher hard one. What it did goes into the start-up line; a
// failure is said at once.
fd_limit_raise raise_descriptor_limit(const serve_settings& s) {
  if (!s.raise_fd_limit) {
    return {};
  }
  std::error_code ec;
  const fd_limit_raise r = raise_fd_limit(ec);
  if (ec) {
    log_line("cannot raise RLIMIT_NOFILE from " + std::to_string(r.before) + " to the hard limit " +
             std::to_string(r.hard) + ": " + ec.message());
  }
  return r;
}

// The start-up line of the descriptors, after "listening on": the limit in force (and how it
// came to be) and the budget that follows.
void say_budget(const serve_settings& s, const fd_limit_raise& raised, const policy_metrics& m) {
  std::error_code ec;
  const std::uint64_t limit = fd_soft_limit(ec);
  std::cout << "descriptors: RLIMIT_NOFILE " << (ec ? std::string("unknown") : std::to_string(limit))
            << (raised.raised() ? " (raised from " + std::to_string(raised.before) + ", the hard limit)" : "")
            << ", connection budget " << m.max_connections
            << (s.max_connections == 0 ? " (auto: the limit less a reserve)" : "") << std::endl;
}

int serve_transient(const serve_settings& s, const fd_limit_raise& raised, listener l) {
  descriptor_leak leak(s.leak_per_connection);
  serve_group group(s, std::move(l), s.leak_per_connection > 0 ? &leak : nullptr);
  std::string problem;
  const auto metrics = start_metrics(
      s, [&group] { return serve_metrics_text(group); }, [&group] { return group.health(); }, problem);
  if (!problem.empty()) {
    std::cerr << "transient serve: " << problem << '\n';
    return 1;
  }
  // The group takes signals before "listening on" tells anyone to send them; one that came
  // earlier still stops it (drain() may then run twice: it is idempotent).
  signal_group.store(&group);
  if (const int signals = stop_signals.load(); signals > 0) {
    group.drain();
    if (signals > 1) {
      group.end_drain();
    }
  }
  announce(group.local_endpoint());
  say_budget(s, raised, group.metrics());
  const supervisor_notifier notifier(group);
  const int status = group.run();
  signal_group.store(nullptr);
  return status;
}

int serve_naive(const serve_settings& s, listener l) {
  connection_limits limits;
  limits.idle = s.idle_timeout;
  limits.header = s.header_timeout;
  limits.drain = {};  // the naive loop closes everything at once, as most servers do
  connection_loop io(limits, &append_ok_response);
  naive_loop loop(io.epoll_fd(), std::move(l), [&io](connection c) { io.add(std::move(c)); });
  std::string problem;
  const auto metrics = start_metrics(
      s,
      [&loop] {
        return "# TYPE naive_accepted_total counter\nnaive_accepted_total " + std::to_string(loop.accepted()) +
               "\n# TYPE naive_accept_errors_total counter\nnaive_accept_errors_total " +
               std::to_string(loop.failures()) + "\n";
      },
      {}, problem);
  if (!problem.empty()) {
    std::cerr << "transient serve: " << problem << '\n';
    return 1;
  }
  std::cerr << "transient serve: --policy naive: a loop that re-arms on every error, for demonstration only\n";
  signal_naive.store(&loop);
  if (stop_signals.load() > 0) {
    loop.stop();
  }
  announce(loop.local_endpoint());
  io.run(loop);
  signal_naive.store(nullptr);
  return 0;
}

}  // namespace

int serve(arguments args) {
  const int descriptors_at_start = open_descriptors();
  const serve_parse_result parsed = parse_serve_arguments(args);
  if (parsed.help) {
    std::cout << serve_help;
    return 0;
  }
  if (!parsed.problem.empty()) {
    std::cerr << "transient serve: " << parsed.problem << '\n';
    return exit_usage;
  }
  const serve_settings& s = parsed.settings;
  if (s.listen_given && socket_activated()) {
    std::cerr << "transient serve: --listen and --port-range cannot be used when systemd passes the socket "
                 "(LISTEN_FDS is set for this process)\n";
    return exit_usage;
  }
  install_signal_handlers();
  const fd_limit_raise raised = raise_descriptor_limit(s);
  int status = 0;
  {
    std::string problem;
    std::error_code error;
    listener l = open_listener(s, problem, error);
    if (!l) {
      std::cerr << "transient serve: cannot listen: " << problem << '\n';
      // A port this user may not bind is the operator's choice to change, as a bad value is.
      return error == std::errc::permission_denied ? exit_usage : 1;
    }
    try {
      status =
          s.policy == serve_policy::naive ? serve_naive(s, std::move(l)) : serve_transient(s, raised, std::move(l));
    } catch (const std::system_error& e) {
      std::cerr << "transient serve: " << e.what() << '\n';
      return 1;
    }
  }
  if (status == 0) {
    std::cerr << "transient serve: stopped cleanly; descriptors open: " << descriptors_at_start << " at start, "
              << open_descriptors() << " at exit\n";
  }
  return status;
}

}  // namespace transient::tool
