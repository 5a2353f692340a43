// `transient serve`: an HTTP/1.1 keep-alive responder on transient's accept loop (or, for
// demonstration, on a naive one). See serve_options.cpp for the command line.
//
// Run to completion: each of --threads N loops (serve_loop) owns an epoll set, an acceptor on
// the one verified listener (EPOLLEXCLUSIVE when there are several, so a connection wakes one
// loop) and the connections it accepted; all acceptors draw from one shared budget.
#include <fcntl.h>
#include <signal.h>

#include <atomic>
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
#include "serve_uring_loop.hpp"
#include "transient/diagnostics.hpp"
#include "transient/policy_metrics.hpp"
#include "transient/shared_budget.hpp"

namespace transient::tool {
namespace {

class serve_group;

// What a SIGINT/SIGTERM stops. Signals are blocked on every thread but the main one, so the
// handler runs only there, never while main is tearing these objects down (it clears them
// first). Everything the handler calls is async-signal-safe (acceptor::stop documents it).
std::atomic<serve_group*> signal_group{nullptr};
std::atomic<naive_loop*> signal_naive{nullptr};
std::atomic<metrics_endpoint*> signal_metrics{nullptr};

extern "C" void on_stop_signal(int /*signal*/);

void install_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = &on_stop_signal;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
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

// The loops of serve_transient: one per --threads, all on one listener and one budget. The
// first failure (a stall, a dead listener, an exception) stops every loop and is reported.
class serve_group {
 public:
  serve_group(const serve_settings& s, listener l, descriptor_leak* leak) {
    const auto source = std::make_shared<const listener>(std::move(l));
    const auto budget = shared_budget::create(s.max_connections);
    for (unsigned i = 0; i < s.threads; ++i) {
      acceptor_options options;
      options.budget = budget;
      options.exclusive = s.threads > 1;
      options.policy.shed = s.shed;
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
      if (s.engine == serve_engine::io_uring) {
        loops_.push_back(make_serve_uring_loop(s.idle_timeout, &append_ok_response, source, std::move(options),
                                               std::move(after_accept)));
      } else {
        loops_.push_back(std::make_unique<serve_loop>(s.idle_timeout, &append_ok_response, source, std::move(options),
                                                      std::move(after_accept)));
      }
      if (leak != nullptr) {
        loops_.back()->connections().set_after_close([leak] { leak->pay(); });
      }
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

  // Stops every loop. Async-signal-safe.
  void stop() noexcept {
    for (const auto& l : loops_) {
      l->stop();
    }
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
  void run_loop(serve_engine_loop& l) {
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
    stop();  // the first loop to end ends them all
  }

  std::vector<std::unique_ptr<serve_engine_loop>> loops_;
  std::mutex mutex_;  // guards failure_ and exception_ (the first failure wins)
  stop_info failure_;
  std::exception_ptr exception_;
};

extern "C" void on_stop_signal(int /*signal*/) {
  if (auto* g = signal_group.load()) {
    g->stop();
  }
  if (auto* n = signal_naive.load()) {
    n->stop();
  }
  if (auto* m = signal_metrics.load()) {
    m->stop();
  }
}

int serve_transient(const serve_settings& s, listener l) {
  descriptor_leak leak(s.leak_per_connection);
  serve_group group(s, std::move(l), s.leak_per_connection > 0 ? &leak : nullptr);
  std::string problem;
  const auto metrics = start_metrics(
      s, [&group] { return to_prometheus(group.metrics()); }, problem);
  if (!problem.empty()) {
    std::cerr << "transient serve: " << problem << '\n';
    return 1;
  }
  announce(group.local_endpoint());
  signal_group.store(&group);
  signal_metrics.store(metrics.get());
  const int status = group.run();
  signal_group.store(nullptr);
  signal_metrics.store(nullptr);
  return status;
}

int serve_naive(const serve_settings& s, listener l) {
  connection_loop io(s.idle_timeout, &append_ok_response);
  naive_loop loop(io.epoll_fd(), std::move(l), [&io](connection c) { io.add(std::move(c)); });
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
  io.run(loop);
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
