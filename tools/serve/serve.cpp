// `transient serve`: an HTTP/1.1 keep-alive responder on transient's accept loop. See
// serve_options.cpp for the command line.
//
// serve is transient::server (or uring_server, --engine io_uring) with a connection_loop as
// each loop's handler: the --threads N loops share the one verified listener and one budget
// (and, with --max-per-peer, one peer_limit), and each serves the connections it accepted.
//
// The stop is a drain: SIGTERM (or a failure such as a stall) stops the server's accepting,
// requests in flight and each idle connection's next request are answered with Connection:
// close, and the process exits when they are done or after --drain-timeout. Outside the
// process, the metrics port's /healthz and /readyz, the agent port's line (HAProxy's
// agent-check) and systemd's STATUS= and WATCHDOG=1 show the health the server publishes.
//
// SIGHUP and SIGUSR2 upgrade in place (serve_upgrade.hpp): a successor started from the binary
// on disk takes the listeners over, and once it serves them this process drains as on SIGTERM.
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "serve.hpp"
#include "serve_agent.hpp"
#include "serve_connections.hpp"
#include "serve_metrics.hpp"
#include "serve_options.hpp"
#include "serve_queue.hpp"
#include "serve_upgrade.hpp"
#include "transient/diagnosis/diagnostics.hpp"
#include "transient/drivers/server.hpp"
#include "transient/drivers/systemd.hpp"
#include "transient/errors/errors.hpp"
#include "transient/policy/budget.hpp"
#include "transient/policy/events.hpp"
#include "transient/sockets/handover.hpp"
#if TRANSIENT_HAVE_URING
#include "transient/drivers/uring.hpp"
#endif

namespace transient::tool {
namespace {

class serving;

// What a stop signal (SIGTERM, SIGINT, SIGQUIT) stops: the first drains, a second ends the
// drain at once. The handlers may run on any of the server's loops, and touch only what
// outlives them (the server and the drain-end eventfd; main clears the pointer before they
// go). Everything they call is async-signal-safe (server::stop documents it). The metrics
// port stays up until the loops have drained, so /readyz answers 503 meanwhile. A signal
// that comes before there is anything to stop (the handlers are installed before the
// listener opens) is counted in `stop_signals`, and honoured once there is.
std::atomic<serving*> signal_serving{nullptr};
std::atomic<int> stop_signals{0};

extern "C" void on_stop_signal(int /*signal*/);

// What an upgrade signal (SIGHUP, SIGUSR2) asks: the upgrades of the serving process (null
// before it serves and once it is done). The handler stamps the signal's time and writes to
// the eventfd its first loop watches (upgrade_watch::request): both async-signal-safe.
std::atomic<upgrade_watch*> signal_upgrade{nullptr};

extern "C" void on_upgrade_signal(int signal) {
  const std::int64_t now = monotonic_ns();
  if (auto* w = signal_upgrade.load()) {
    w->request(signal, now);
    return;
  }
  const std::string_view line = signal == SIGHUP ? "transient serve: SIGHUP ignored: not serving yet, or stopping\n"
                                                 : "transient serve: SIGUSR2 ignored: not serving yet, or stopping\n";
  [[maybe_unused]] const ssize_t n = ::write(2, line.data(), line.size());
}

// SIGUSR1, which supervisors send to reopen logs, would end the process without a drain:
// serve has nothing to reopen, so it says so and goes on.
extern "C" void on_ignored_signal(int /*signal*/) {
  const std::string_view line = "transient serve: SIGUSR1 ignored (nothing to reopen; SIGTERM drains and stops)\n";
  [[maybe_unused]] const ssize_t n = ::write(2, line.data(), line.size());
}

void install_signal_handlers() {
  struct sigaction action {};
  sigemptyset(&action.sa_mask);
  action.sa_handler = &on_stop_signal;
  for (const int signal : stop_signal_numbers) {
    ::sigaction(signal, &action, nullptr);
  }
  action.sa_handler = &on_upgrade_signal;
  for (const int signal : upgrade_signal_numbers) {
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
  std::vector<named_listener> passed = listeners_from_systemd(options, report);
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

// What the options ask for that a socket systemd passes already settles ("" if nothing). With
// --fd-store the sockets may be serve's own, stored: --listen then says which to expect.
std::string activation_conflict(const serve_settings& s) {
  if (!socket_activated() || s.fd_store) {
    return {};
  }
  if (s.listen_given) {
    return "--listen and --port-range cannot be used when systemd passes the socket (LISTEN_FDS is set for this "
           "process)";
  }
  if (s.backlog != 0) {
    return "--backlog cannot be used when systemd passes the socket (LISTEN_FDS is set for this process): its "
           "backlog is the socket unit's Backlog=";
  }
  return {};
}

// The listeners serve serves: its own, the metrics port's with --metrics, the agent port's with
// --agent.
struct serve_listeners {
  listener http;
  listener metrics;
  listener agent;
};

// The names of the listeners in a handover and in systemd's store (a successor expects exactly
// those the options ask for).
constexpr std::string_view http_name = "http";
constexpr std::string_view metrics_name = "metrics";
constexpr std::string_view agent_name = "agent";

// True if `stored` serves what `wanted` asks for: the same address, and the same port unless
// `wanted` says any (0).
bool same_place(const endpoint& stored, const endpoint& wanted) {
  return stored.address_string() == wanted.address_string() && (wanted.port() == 0 || stored.port() == wanted.port());
}

// The listener stored under `name` in `passed`, checked against what the options ask for
// (`wanted`: none means any); taken out of `passed`. Empty if there is none; a mismatch sets
// `problem`.
listener stored_listener(std::vector<named_listener>& passed, std::string_view name,
                         const std::optional<endpoint>& wanted, std::string& problem) {
  listener l = take_listener(passed, name);
  if (l && wanted && !same_place(l.local_endpoint(), *wanted)) {
    problem = "the listener \"" + std::string(name) + "\" systemd passed from its store is on " +
              l.local_endpoint().to_string() + ", not on " + wanted->to_string() +
              " as the options say (remove it from the store, or give the address it has)";
    return {};
  }
  return l;
}

// --fd-store under LISTEN_FDS: the listeners systemd kept, by name ("http"; "metrics" and
// "agent" into `stored`); without an "http", the one socket of a socket unit, as without
// --fd-store.
listener listeners_from_store(const serve_settings& s, serve_listeners& stored, std::string& problem) {
  systemd_options options;
  options.unset_environment = true;
  listen_report report;
  std::vector<named_listener> passed = listeners_from_systemd(options, report);
  if (report.error) {
    problem = "the sockets systemd passed (LISTEN_FDS): " +
              (report.message.empty() ? report.error.message() : report.message);
    return {};
  }
  const std::optional<endpoint> wanted = s.listen_given && !s.port_range ? std::optional(s.listen_on) : std::nullopt;
  listener http = stored_listener(passed, http_name, wanted, problem);
  if (problem.empty() && s.metrics) {  // without --metrics a stored one is closed: nothing serves it
    stored.metrics = stored_listener(passed, metrics_name, s.metrics, problem);
  }
  if (problem.empty() && s.agent) {  // the same for --agent
    stored.agent = stored_listener(passed, agent_name, s.agent, problem);
  }
  if (!problem.empty() || http) {
    return http;
  }
  std::erase_if(passed, [](const named_listener& n) { return !n.socket.is_open(); });  // what was taken
  if (passed.size() != 1 || s.listen_given) {
    problem = "systemd passed " + std::to_string(passed.size()) +
              " socket(s) (LISTEN_FDS) and none named \"http\" (the name --fd-store stores serve's listener under)";
    return {};
  }
  return std::move(passed.front().socket);
}

// The listener --listen or --port-range asks for, or the one systemd passed (with --fd-store,
// also the metrics and agent ports', into `stored`); on failure, `problem` says why and `error`
// is the cause.
listener open_listener(const serve_settings& s, serve_listeners& stored, std::string& problem, std::error_code& error) {
  if (socket_activated()) {
    return s.fd_store ? listeners_from_store(s, stored, problem) : systemd_listener_of(problem);
  }
  listen_report report;
  listen_options options;
  options.backlog = s.backlog;
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

// The listener of --metrics or --agent (`what`: "metrics", "agent"), none without it; on
// failure, `problem` says why.
listener open_port_listener(const std::optional<endpoint>& at, std::string_view what, std::string& problem) {
  if (!at) {
    return {};
  }
  listen_report report;
  listener l = listen(*at, listen_options{}, report);
  if (!l) {
    problem = "cannot listen on " + std::string(what) + " address " + at->to_string() + ": " + report.message;
  }
  return l;
}

std::unique_ptr<metrics_endpoint> start_metrics(listener l, std::function<std::string()> text,
                                                std::function<health_report()> health) {
  if (!l) {
    return nullptr;
  }
  std::cout << "metrics on http://" << l.local_endpoint().to_string() << "/metrics" << std::endl;
  return std::make_unique<metrics_endpoint>(std::move(l), std::move(text), std::move(health));
}

// The agent port on `l` (none without --agent), after a line that says where.
std::unique_ptr<agent_endpoint> start_agent(listener l, std::function<std::string()> line) {
  if (!l) {
    return nullptr;
  }
  std::cout << "agent on " << l.local_endpoint().to_string() << std::endl;
  return std::make_unique<agent_endpoint>(std::move(l), std::move(line));
}

// The listeners the old process handed over on `origin`'s channel, verified (take_over_listeners);
// false after saying why.
bool take_over(const serve_settings& s, const handover_origin& origin, serve_listeners& out) {
  take_over_options options;
  options.timeout = s.upgrade_timeout;
  options.expected_names.emplace_back(http_name);
  if (s.metrics) {
    options.expected_names.emplace_back(metrics_name);
  }
  if (s.agent) {
    options.expected_names.emplace_back(agent_name);
  }
  std::error_code ec;
  std::vector<named_listener> taken = take_over_listeners(origin.channel.get(), options, ec);
  if (ec) {
    std::cerr << "transient serve: cannot take over the listeners of PID " << origin.old_pid << ": " << ec.message()
              << '\n';
    return false;
  }
  for (named_listener& n : taken) {
    (n.name == http_name ? out.http : n.name == metrics_name ? out.metrics : out.agent) = std::move(n.socket);
  }
  return true;
}

// One line on stderr from any thread (a single write, so lines of several loops never mix).
void log_line(const std::string& text) {
  const std::string line = "transient serve: " + text + "\n";
  [[maybe_unused]] const ssize_t n = ::write(2, line.data(), line.size());
}

// A 503 for a client shed with --shed respond.
void refuse_busy(int fd, const endpoint& /*peer*/) {
  static constexpr std::string_view refusal =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\nRetry-After: 1\r\nConnection: close\r\n\r\nbusy\n";
  [[maybe_unused]] const ssize_t n = ::send(fd, refusal.data(), refusal.size(), MSG_NOSIGNAL);
}

// The stop and its diagnosis are said once, at exit, by serve itself (with the stop reason and
// the descriptors open); a loop's stop line only when it ends an episode that had not
// recovered (else its `degraded` line would have no end); other events as usual.
void log_policy_event(const policy_event& e) {
  const bool said_at_exit =
      e.kind == policy_event_kind::diagnosis || (e.kind == policy_event_kind::stopped && !e.error && e.failures == 0);
  if (!said_at_exit) {
    write_to_stderr(e);
  }
}

// The server's settings for serve's options.
server_options server_options_of(const serve_settings& s, std::shared_ptr<peer_limit> peers) {
  server_options options;
  options.max_connections = s.max_connections;
  options.threads = s.threads;
  options.peer_addresses = false;  // serve never reads them (a per-peer cap still does)
  options.policy.shed = s.shed;
  options.policy.peers = std::move(peers);
  options.policy.stall_timeout = s.stall_timeout;
  options.policy.listener_verified = true;
  options.policy.sink = &log_policy_event;
  if (s.max_queue_wait.count() > 0) {
    options.policy.max_queue_wait = s.max_queue_wait;
    options.policy.stale_shed = shed_mode::respond;  // a client still there learns why, and when to retry
  }
  if (s.shed == shed_mode::respond || s.max_queue_wait.count() > 0) {
    options.refuse = &refuse_busy;
  }
  return options;
}

// True if every place of the budget is taken. Under --shed other than queue the server goes
// on accepting (and shedding), so its state alone does not say so; readiness must, since a
// load balancer's new clients would only be shed.
bool budget_full(const policy_metrics& m) { return m.max_connections > 0 && m.live >= m.max_connections; }

// What a full budget does to a new client, for the health's reason.
std::string_view at_full_budget(shed_mode shed) {
  switch (shed) {
    case shed_mode::queue: return "wait";
    case shed_mode::close: return "are closed (--shed close)";
    case shed_mode::reset: return "are reset (--shed reset)";
    case shed_mode::respond: return "are answered 503 (--shed 503)";
  }
  return "are shed";
}

// What serve_transient runs and what the threads reporting on it read: the server, the
// counters of its connection loops, whether the stop began, and the eventfd that ends a drain
// (written by a second stop signal; every loop watches it while it drains).
class serving {
 public:
  // `origin`: the handover this process was started for (null if none), which must outlive it.
  serving(const serve_settings& s, listener l, const serve_extension& extension, handover_origin* origin)
      : origin_(origin),
        stall_timeout_(s.stall_timeout),
        shed_(s.shed),
        counters_(std::make_unique<connection_counters[]>(s.threads)),
        drain_end_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (!drain_end_) {
      throw std::system_error(errno, std::system_category(), "eventfd");
    }
    if (s.max_per_peer > 0) {
      peers_ = std::make_shared<peer_limit>(s.max_per_peer);
    }
    check_automatic_budget(s);
    std::vector<listener> listeners;
    listeners.push_back(std::move(l));
    try {
      server_ = make_server(s, std::move(listeners), handlers(s, extension));
    } catch (const std::system_error& e) {
      if (e.code() != std::errc::too_many_files_open && e.code() != std::errc::too_many_files_open_in_system) {
        throw;
      }
      std::error_code ec;
      throw std::system_error(e.code(),
                              "--threads " + std::to_string(s.threads) + ": " + e.what() +
                                  " (an epoll set, wake-ups, the diagnosis descriptors) and RLIMIT_NOFILE is " +
                                  std::to_string(fd_soft_limit(ec)) + ": use fewer --threads or raise the limit");
    }
    queue_.emplace(*server_, s.ready_queue_fraction);
    if (s.metrics) {
      open_process_fds();
    }
  }

  // Runs the server until it stops and its loops have drained. Returns 0 for a clean stop, 1
  // after printing why not.
  int run() {
    std::error_code ec;
    stop_info r;
    try {
      r = server_->run(ec);
    } catch (const std::exception& e) {
      std::cerr << "transient serve: stopped: " << e.what() << '\n';
      return 1;
    }
    if (!r.ok()) {
      std::cerr << "transient serve: stopped: " << to_string(r.reason) << ": " << r.error.message() << '\n';
      if (!r.diagnosis.empty()) {
        std::cerr << r.diagnosis << (r.diagnosis.back() == '\n' ? "" : "\n");
      }
      return 1;
    }
    return 0;
  }

  // Upgrades are asked for through `watch`, which the first loop watches while it accepts.
  // Before run().
  void take_upgrades(upgrade_watch& watch) noexcept { upgrades_ = &watch; }

  // Stops accepting; every loop drains. Async-signal-safe.
  void drain() noexcept {
    stopping_.store(true);
    server_->stop();
  }

  // Ends a drain at once: every loop closes its connections. Async-signal-safe.
  void end_drain() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(drain_end_.get(), &one, sizeof one);
  }

  // The health the probes and systemd see, from what the server published (never blocks the
  // loops): its worst state, or stalled / stopped once accepting has ended.
  [[nodiscard]] health_report health() const {
    const policy_health worst = server_->health();
    const std::size_t open = open_connections();
    health_report h;
    if (worst.state == health_state::stopped && worst.error) {
      const bool stalled = worst.error == condition::stalled;
      h.state = stalled ? "stalled" : "stopped";
      h.reason = (stalled ? "descriptors stayed exhausted with no progress for " +
                                std::to_string(stall_timeout_.count()) + " ms (" + worst.error.message() + ")"
                          : worst.error.message()) +
                 "; exiting after " + std::to_string(open) + " connection(s) in flight";
      h.live = false;
      h.ready = false;
      h.failed = true;
    } else if (stopping_.load() || worst.state == health_state::stopped) {
      h.state = "stopped";
      h.reason = "stopping: draining " + std::to_string(open) + " connection(s) in flight";
      h.live = false;
      h.ready = false;
    } else if (worst.state == health_state::degraded) {
      h.state = "degraded";
      h.reason = "accept failing, backing off: " + worst.error.message();
      h.ready = false;
    } else if (const policy_metrics m = server_->metrics();
               worst.state == health_state::backpressure || budget_full(m)) {
      h.state = "backpressure";
      h.reason = "connection budget full (" + std::to_string(m.live) + " of " + std::to_string(m.max_connections) +
                 "): new clients " + std::string(at_full_budget(shed_));
      h.ready = false;
    }
    if (h.live) {
      note_queue(h);
    }
    return h;
  }

  // The server's counters and serve's own, its state (as /healthz names it) and the process's
  // descriptors, in Prometheus text. A figure the process cannot read is left out.
  [[nodiscard]] std::string metrics_text() const {
    std::uint64_t timeouts = 0;
    for (unsigned i = 0; i < threads_; ++i) {
      timeouts += counters_[i].header_timeouts.load(std::memory_order_relaxed);
    }
    std::error_code ec;
    const std::string process = to_prometheus(read_process_metrics(process_fds_, ec));
    return to_prometheus(server_->metrics()) + state_to_prometheus(health().state, "transient", ec) + process +
           "# HELP transient_serve_header_timeouts_total Connections closed for sending no complete request head "
           "within --header-timeout.\n# TYPE transient_serve_header_timeouts_total counter\n"
           "transient_serve_header_timeouts_total " +
           std::to_string(timeouts) + "\n" + queue_metrics(queue_->read(), queue_->address(), queue_->drops());
  }

  // The agent port's line (serve_agent.hpp): the health /readyz answers with, and the budget.
  [[nodiscard]] std::string agent_text() const { return agent_line(health(), server_->metrics()); }

  // The systemd side of the health (systemd.hpp): serve's health as STATUS=, STOPPING=1 once
  // the drain begins, no WATCHDOG=1 once degraded without progress or stalled (WatchdogSec=
  // then restarts a server whose descriptors leak, even with --stall-timeout 0).
  [[nodiscard]] supervision supervised() const {
    supervision v = supervision_of(*server_);
    const health_report h = health();
    v.status = h.state + (h.reason.empty() ? "" : ": " + h.reason);
    v.stopping = h.state == "stopped" || h.state == "stalled";
    v.healthy = h.state == "accepting" || h.state == "backpressure" || h.state == "stopped";
    return v;
  }

  [[nodiscard]] const basic_server& server() const noexcept { return *server_; }

  // True once the drain began.
  [[nodiscard]] bool stopping() const noexcept { return stopping_.load(); }

 private:
  // What the metrics' process figures need, taken while descriptors are free: /proc/self/fd kept
  // open (a scrape under exhaustion lists it instead of probing every descriptor number up to
  // the limit), and the start time, which is read once and kept. A failure leaves the figures
  // to be read as they can.
  void open_process_fds() {
    std::error_code ignored;
    process_fds_ = diagnosis_fds::open(ignored);
    (void)read_process_metrics(process_fds_, ignored);
  }

  // The automatic budget needs room below RLIMIT_NOFILE; say which option gives one.
  static void check_automatic_budget(const serve_settings& s) {
    std::error_code ec;
    if (s.max_connections == 0 && default_max_connections(ec) == 0 && ec) {
      throw std::system_error(ec, "the automatic connection budget leaves no room: RLIMIT_NOFILE is " +
                                      std::to_string(fd_soft_limit(ec)) +
                                      " and at least 32 descriptors are kept as headroom; give "
                                      "--max-connections N or raise the limit");
    }
  }

  // Each loop's handler: a connection_loop, with serve's log, counters and drain end, and
  // what the extension adds.
  loop_handler_factory handlers(const serve_settings& s, const serve_extension& extension) {
    threads_ = s.threads;
    connection_limits limits;
    limits.idle = s.idle_timeout;
    limits.header = s.header_timeout;
    limits.drain = s.drain_timeout;
    return [this, limits, configure = extension.configure](loop& l) -> std::unique_ptr<loop_handler> {
      auto connections = std::make_unique<connection_loop>(l, limits, &append_ok_response);
      connections->set_log(&log_line);
      connections->set_counters(&counters_[l.index()]);
      connections->set_drain_end(drain_end_.get());
      if (configure) {
        configure(*connections);
      }
      std::unique_ptr<loop_handler> handler = std::move(connections);
      if (origin_ != nullptr) {
        handler = logging_first_accept(std::move(handler), *origin_, &log_line);
      }
      if (upgrades_ != nullptr && l.index() == 0) {
        handler = watching_upgrades(std::move(handler), l, *upgrades_);
      }
      if (origin_ != nullptr) {
        report_ready_once();  // last: told, the old process drains, so only a whole handler may tell it
      }
      return handler;
    };
  }

  // A successor's word to the old process, from the first of its loops to be about to accept:
  // the old process then drains. The channel closes after it (no descriptor is left of the
  // handover).
  void report_ready_once() {
    if (origin_->reported.exchange(true)) {
      return;
    }
    std::error_code ec;
    report_ready(origin_->channel.get(), ec);
    if (ec) {
      log_line("upgrade: could not tell PID " + std::to_string(origin_->old_pid) +
               " that this process serves: " + ec.message());
    }
    origin_->channel.reset();
  }

  [[nodiscard]] std::unique_ptr<basic_server> make_server(const serve_settings& s, std::vector<listener> listeners,
                                                          loop_handler_factory handlers) const {
    server_options options = server_options_of(s, peers_);
    if (s.engine == serve_engine::epoll) {
      return std::make_unique<transient::server>(std::move(listeners), std::move(handlers), std::move(options));
    }
#if TRANSIENT_HAVE_URING
    return std::make_unique<uring_server>(std::move(listeners), std::move(handlers), std::move(options));
#else
    throw std::system_error(std::make_error_code(std::errc::not_supported),
                            "--engine io_uring: this transient was built without liburing (Debian: liburing-dev)");
#endif
  }

  // A queue above --ready-queue-fraction takes the server out of rotation (a load balancer
  // moves traffic before SYNs drop) and is named in the reason, while /healthz stays 200:
  // the process is alive, only behind.
  void note_queue(health_report& h) const {
    const std::optional<queue_reading> r = queue_->read();
    if (!r || !r->above) {
      return;
    }
    h.ready = false;
    h.reason += (h.reason.empty() ? "" : "; ") + describe(*r, queue_->ready_fraction());
  }

  [[nodiscard]] std::size_t open_connections() const {
    std::size_t open = 0;
    for (unsigned i = 0; i < threads_; ++i) {
      open += counters_[i].open.load(std::memory_order_relaxed);
    }
    return open;
  }

  handover_origin* origin_;
  upgrade_watch* upgrades_ = nullptr;  // take_upgrades()
  std::chrono::milliseconds stall_timeout_;
  shed_mode shed_;  // --shed: what a full budget does to a new client
  unsigned threads_ = 0;
  std::unique_ptr<connection_counters[]> counters_;  // one per loop, by loop index
  unique_fd drain_end_;
  std::shared_ptr<peer_limit> peers_;  // --max-per-peer; its permits keep it alive
  std::unique_ptr<basic_server> server_;
  std::optional<queue_watch> queue_;  // of server_'s listener, for the probes, the metrics and STATUS=
  diagnosis_fds process_fds_;         // with --metrics (open_process_fds); read on the metrics port's thread only
  std::atomic<bool> stopping_{false};
};

extern "C" void on_stop_signal(int /*signal*/) {
  const bool first = stop_signals.fetch_add(1) == 0;
  if (auto* g = signal_serving.load()) {
    first ? g->drain() : g->end_drain();
  }
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
            << (s.max_connections == 0 ? " (auto: the limit less a headroom)" : "") << std::endl;
}

// The descriptors of serve's listeners (-1: none), read before the listeners move into what
// serves them, for the store and for a successor.
struct listener_fds {
  int http = -1;
  int metrics = -1;
  int agent = -1;
};

listener_fds fds_of(const serve_listeners& ls) {
  return {ls.http.native_handle(), ls.metrics ? ls.metrics.native_handle() : -1,
          ls.agent ? ls.agent.native_handle() : -1};
}

// serve's listeners under their names, for the store and for a successor: "http", "metrics"
// with --metrics, "agent" with --agent.
std::vector<listener_offer> offers_of(const listener_fds& fds) {
  std::vector<listener_offer> offers{{http_name, fds.http}};
  if (fds.metrics >= 0) {
    offers.push_back({metrics_name, fds.metrics});
  }
  if (fds.agent >= 0) {
    offers.push_back({agent_name, fds.agent});
  }
  return offers;
}

// --fd-store: the listeners go into systemd's file descriptor store (when NOTIFY_SOCKET is set),
// so that the next start gets them back, clients queued and all. A failure is said, not fatal:
// serve serves as without the store.
void store_listeners(const serve_settings& s, const listener_fds& fds) {
  if (!s.fd_store || std::getenv("NOTIFY_SOCKET") == nullptr) {
    return;
  }
  std::error_code ec;
  store_listeners_in_systemd(offers_of(fds), ec);
  if (ec) {
    log_line("--fd-store: could not store the listeners in systemd's file descriptor store: " + ec.message());
  }
}

// The ports that speak for the process's health besides its own: the metrics port (/readyz)
// and the agent port.
struct health_ports {
  std::unique_ptr<metrics_endpoint> metrics;
  std::unique_ptr<agent_endpoint> agent;
};

// What an upgrade of `group` hands over and does: the listeners (by descriptor: the server and
// the health ports hold them until they stop), and once the successor serves, the drain. The
// health ports stop first: the successor shares their listeners, and a draining process's
// "drain" or 503 there would take a healthy instance out of rotation. They are destroyed on
// the upgrade's thread, which ends before serve_transient's `ports` go.
upgrade_hooks upgrade_hooks_of(serving& group, const listener_fds& fds, health_ports& ports) {
  upgrade_hooks hooks;
  hooks.offers = [fds] { return offers_of(fds); };
  hooks.stopping = [&group] { return stop_signals.load() > 0 || group.stopping(); };
  hooks.drain = [&group, &ports] {
    ports.agent.reset();
    ports.metrics.reset();
    group.drain();
  };
  hooks.log = &log_line;
  return hooks;
}

// Opens serve's listeners (--listen or systemd's socket, --metrics, --agent): 0, or the exit
// status after saying why not.
int open_listeners(const serve_settings& s, serve_listeners& out) {
  std::string problem;
  std::error_code error;
  out.http = open_listener(s, out, problem, error);
  if (!out.http) {
    std::cerr << "transient serve: cannot listen: " << problem << '\n';
    // A port this user may not bind is the operator's choice to change, as a bad value is.
    return error == std::errc::permission_denied ? exit_usage : 1;
  }
  if (!out.metrics) {
    out.metrics = open_port_listener(s.metrics, "metrics", problem);
  }
  if (problem.empty() && !out.agent) {
    out.agent = open_port_listener(s.agent, "agent", problem);
  }
  if (!problem.empty()) {
    std::cerr << "transient serve: " << problem << '\n';
    return 1;
  }
  return 0;
}

int serve_transient(const serve_settings& s, const fd_limit_raise& raised, serve_listeners ls,
                    const upgrade_image& image, handover_origin* origin, const serve_extension& extension) {
  const listener_fds fds = fds_of(ls);
  serving group(s, std::move(ls.http), extension, origin);
  health_ports ports;
  ports.metrics = start_metrics(
      std::move(ls.metrics), [&group] { return group.metrics_text(); }, [&group] { return group.health(); });
  ports.agent = start_agent(std::move(ls.agent), [&group] { return group.agent_text(); });
  // The server takes signals before "listening on" tells anyone to send them; one that came
  // earlier still stops it (drain() may then run twice: it is idempotent).
  signal_serving.store(&group);
  if (const int signals = stop_signals.load(); signals > 0) {
    group.drain();
    if (signals > 1) {
      group.end_drain();
    }
  }
  store_listeners(s, fds);
  // Upgrades too are taken before "listening on" tells anyone to ask for one.
  upgrade_watch upgrades(image, s.upgrade_timeout, upgrade_hooks_of(group, fds, ports));
  group.take_upgrades(upgrades);
  signal_upgrade.store(&upgrades);
  announce(group.server().local_endpoints().front());
  say_budget(s, raised, group.server().metrics());
  std::error_code unusable;  // announce() said so
  const supervisor_notifier notifier([&group] { return group.supervised(); }, unusable);
  const int status = group.run();
  signal_upgrade.store(nullptr);
  signal_serving.store(nullptr);
  return status;
}

}  // namespace

int serve(arguments args) { return serve(args, serve_extension{}); }

int serve(arguments args, const serve_extension& extension) {
  const int descriptors_at_start = open_descriptors();
  const upgrade_image image = read_upgrade_image();  // now: the binary on disk may be replaced later
  std::string handover_problem;
  const std::unique_ptr<handover_origin> origin = handover_from_environment(handover_problem);
  if (!handover_problem.empty()) {
    std::cerr << "transient serve: " << handover_problem << '\n';
    return 1;
  }
  const serve_parse_result parsed = parse_serve_arguments(args, extension.options);
  if (parsed.help) {
    return 0;
  }
  if (!parsed.problem.empty()) {
    std::cerr << extension.options.name << ": " << parsed.problem << '\n';
    return exit_usage;
  }
  const serve_settings& s = parsed.settings;
  if (const std::string conflict = activation_conflict(s); !conflict.empty()) {
    std::cerr << "transient serve: " << conflict << '\n';
    return exit_usage;
  }
  install_signal_handlers();
  const fd_limit_raise raised = raise_descriptor_limit(s);
  int status = 0;
  {
    serve_listeners ls;
    if (origin != nullptr) {
      if (!take_over(s, *origin, ls)) {
        return 1;
      }
    } else if (const int failed = open_listeners(s, ls); failed != 0) {
      return failed;
    }
    try {
      status = serve_transient(s, raised, std::move(ls), image, origin.get(), extension);
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
