// `transient serve`: an HTTP/1.1 keep-alive responder on transient's accept loop (or, for
// demonstration, on a naive one). See serve_options.cpp for the command line.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "command.hpp"
#include "serve_connections.hpp"
#include "serve_metrics.hpp"
#include "serve_naive.hpp"
#include "serve_notify.hpp"
#include "serve_options.hpp"
#include "transient/diagnostics.hpp"
#include "transient/policy_metrics.hpp"
#include "transient/server.hpp"

namespace transient::tool {
namespace {

// What a SIGINT/SIGTERM stops. Signals are blocked on every thread but the main one, so the
// handler runs only there, never while main is tearing these objects down (it clears them
// first). Everything the handler calls is async-signal-safe (server::stop documents it).
std::atomic<server*> signal_server{nullptr};
std::atomic<naive_loop*> signal_naive{nullptr};
std::atomic<metrics_endpoint*> signal_metrics{nullptr};

extern "C" void on_stop_signal(int /*signal*/) {
  if (auto* s = signal_server.load()) {
    s->stop();
  }
  if (auto* n = signal_naive.load()) {
    n->stop();
  }
  if (auto* m = signal_metrics.load()) {
    m->stop();
  }
}

void install_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = &on_stop_signal;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
  (void)::signal(SIGPIPE, SIG_IGN);  // a reader of our stdout may go away; sockets use MSG_NOSIGNAL
}

// Runs `body` on a new thread with SIGINT and SIGTERM blocked (so they reach the main thread).
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

listener open_listener(const serve_settings& s, std::string& problem) {
  listen_report report;
  listen_options options;
  listener l = s.port_range ? listen_in_range(s.listen_on, s.port_range->first, s.port_range->second, options, report)
                            : listen(s.listen_on, options, report);
  if (!l) {
    problem = report.message.empty() ? report.error.message() : report.message;
  } else if (!report.warning.empty()) {
    std::cerr << "transient serve: " << report.warning << '\n';
  }
  return l;
}

struct io_pool {
  std::vector<std::unique_ptr<connection_io>> loops;
  std::vector<std::thread> threads;
  std::atomic<std::size_t> next{0};

  io_pool(unsigned count, std::chrono::milliseconds idle, descriptor_leak* leak = nullptr) {
    for (unsigned i = 0; i < count; ++i) {
      loops.push_back(std::make_unique<connection_io>(idle, [](const parsed_request& r) { return ok_response(r); }));
      if (leak != nullptr) {
        loops.back()->set_after_close([leak] { leak->pay(); });
      }
    }
    for (auto& l : loops) {
      threads.push_back(thread_without_signals([io = l.get()] { io->run(); }));
    }
  }
  io_pool(const io_pool&) = delete;
  io_pool& operator=(const io_pool&) = delete;
  ~io_pool() {
    for (auto& l : loops) {
      l->stop();
    }
    for (auto& t : threads) {
      t.join();
    }
  }
  void add(connection c) { loops[next.fetch_add(1, std::memory_order_relaxed) % loops.size()]->add(std::move(c)); }
};

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
                                                std::string& problem) {
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
  return std::make_unique<metrics_endpoint>(std::move(l), std::move(text));
}

int serve_transient(const serve_settings& s, listener l) {
  descriptor_leak leak(s.leak_per_connection);
  io_pool pool(s.threads, s.idle_timeout, s.leak_per_connection > 0 ? &leak : nullptr);
  server_options options;
  options.max_connections = s.max_connections;
  options.threads = s.threads;
  options.policy.shed = s.shed;
  options.policy.stall_timeout = s.stall_timeout;
  options.policy.listener_verified = true;
  // The stop and its diagnosis are said once, at exit, by serve itself (with the stop reason
  // and the descriptors open); a loop's stop line only when it ends an episode that had not
  // recovered (else its `degraded` line would have no end); other events as usual.
  options.policy.sink = [](const policy_event& e) {
    const bool said_at_exit =
        e.kind == policy_event_kind::diagnosis || (e.kind == policy_event_kind::stopped && !e.error && e.failures == 0);
    if (!said_at_exit) {
      write_to_stderr(e);
    }
  };
  if (s.shed == shed_mode::respond) {
    options.refuse = [](int fd, const endpoint&) {
      static constexpr std::string_view refusal =
          "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\nRetry-After: 1\r\nConnection: close\r\n\r\nbusy\n";
      [[maybe_unused]] const ssize_t n = ::send(fd, refusal.data(), refusal.size(), MSG_NOSIGNAL);
    };
  }
  std::vector<listener> listeners;
  listeners.push_back(std::move(l));
  server srv(
      std::move(listeners),
      [&pool, &leak](connection c) {
        leak.on_accept();
        pool.add(std::move(c));
      },
      std::move(options));

  std::string problem;
  const auto metrics = start_metrics(
      s, [&srv] { return to_prometheus(srv.metrics()); }, problem);
  if (!problem.empty()) {
    std::cerr << "transient serve: " << problem << '\n';
    return 1;
  }
  announce(srv.local_endpoints().front());
  signal_server.store(&srv);
  signal_metrics.store(metrics.get());
  std::error_code ec;
  const stop_info info = srv.run(ec);
  signal_server.store(nullptr);
  signal_metrics.store(nullptr);
  if (!info) {
    std::cerr << "transient serve: stopped: " << to_string(info.reason) << ": " << info.error.message() << '\n';
    if (!info.diagnosis.empty()) {
      std::cerr << info.diagnosis << (info.diagnosis.back() == '\n' ? "" : "\n");
    }
    return 1;
  }
  return 0;
}

int serve_naive(const serve_settings& s, listener l) {
  io_pool pool(1, s.idle_timeout);
  naive_loop loop(std::move(l), [&pool](connection c) { pool.add(std::move(c)); });
  std::string problem;
  const auto metrics = start_metrics(
      s,
      [&loop] {
        return "# TYPE naive_accepted_total counter\nnaive_accepted_total " + std::to_string(loop.accepted()) +
               "\n# TYPE naive_accept_errors_total counter\nnaive_accept_errors_total " +
               std::to_string(loop.failures()) + "\n";
      },
      problem);
  if (!problem.empty()) {
    std::cerr << "transient serve: " << problem << '\n';
    return 1;
  }
  std::cerr << "transient serve: --policy naive: a loop that re-arms on every error, for demonstration only\n";
  announce(loop.local_endpoint());
  signal_naive.store(&loop);
  signal_metrics.store(metrics.get());
  loop.run();
  signal_naive.store(nullptr);
  signal_metrics.store(nullptr);
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
  install_signal_handlers();
  int status = 0;
  {
    std::string problem;
    listener l = open_listener(s, problem);
    if (!l) {
      std::cerr << "transient serve: cannot listen: " << problem << '\n';
      return 1;
    }
    try {
      status = s.policy == serve_policy::naive ? serve_naive(s, std::move(l)) : serve_transient(s, std::move(l));
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
