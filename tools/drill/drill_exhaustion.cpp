// Drill scenarios 2, 4 and 6: a server whose descriptors run out (RLIMIT_NOFILE 64 and a
// budget far above it, so accept fails with EMFILE while the drill holds its connections),
// run with the steps every target shares (drill_steps.hpp); and what the drill measures of a
// server's process (drill_detail).
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <optional>

#include "drill_client.hpp"
#include "drill_steps.hpp"

namespace transient::tool {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::vector<std::string> exhaustible_args(serve_program program) {
  if (program == serve_program::fixture_naive) {
    return {};  // no budget: accept fails with EMFILE
  }
  // A budget far above what RLIMIT_NOFILE leaves: accept fails with EMFILE, not backpressure.
  return {"--max-connections", "1000", "--stall-timeout", "30s"};
}

// Starts `program` as a target and fills it until it cannot accept; x.problem says what went
// wrong.
target_settings start_exhausted(const drill_settings& s, serve_program program, const std::vector<std::string>& args,
                                exhausted_target& x) {
  target_settings t = reference_target(s, program, args);
  start_exhausted(t, x);
  if (!x.problem.empty()) {
    x.problem = t.label + ": " + x.problem;
  }
  return t;
}

// The figures of the exhaustion scenario.
std::vector<figure> exhaustion_figures(int trials, double served, const trials_result& tr,
                                       const drill_detail::window_usage& usage, double log_lines, double exhausted) {
  return {{"trials", static_cast<double>(trials)},
          {"served_after_release", served},
          {"recovery_median_ms", median(tr.recoveries)},
          {"recovery_max_ms", tr.worst(false)},
          {"runnable_percent_exhausted", usage.runnable},
          {"cpu_percent_exhausted", usage.on_cpu},
          {"log_lines", log_lines},
          {"connections_at_exhaustion", exhausted}};
}

// The exhaustion scenario's detail, from the first claim that failed.
std::string exhaustion_detail(const trials_result& tr, bool degraded, bool early,
                              const drill_detail::window_usage& usage, std::uint64_t log_lines_exhausted) {
  return !tr.detail.empty() ? tr.detail
         : !degraded        ? "no 'accept degraded' line: descriptors were not exhausted"
         : early            ? "a pending client was answered before any release: the server was not exhausted"
         : !usage.quiet()
             ? "the server spun while exhausted (runnable " + std::to_string(static_cast<int>(usage.runnable)) +
                   " % of the time, on a CPU " + std::to_string(static_cast<int>(usage.on_cpu)) + " %)"
         : log_lines_exhausted > 4 ? "the server logged more than a few lines while exhausted"
                                   : "every pending client served after a release; no spin while exhausted";
}

}  // namespace

namespace drill_detail {

sampler::sampler(const serve_child& child, const std::atomic<int>& live)
    : child_(child), live_(live), start_(clock::now()) {
  thread_ = std::thread([this] {
    double last_runnable = child_.sched().runnable();
    auto last = clock::now();
    for (int i = 0; i < 6000 && !done_.load(); ++i) {  // at most two minutes
      std::this_thread::sleep_for(milliseconds(20));
      const double runnable = child_.sched().runnable();
      const auto now = clock::now();
      const double dt = std::chrono::duration<double>(now - last).count();
      const double share = dt <= 0 ? 0.0 : std::clamp(100.0 * (runnable - last_runnable) / dt, 0.0, 100.0);
      samples_.push_back(
          {std::chrono::duration<double>(now - start_).count(), static_cast<double>(live_.load()), share});
      last_runnable = runnable;
      last = now;
    }
  });
}

sampler::~sampler() {
  done_.store(true);
  if (thread_.joinable()) {
    thread_.join();
  }
}

std::vector<timeline_sample> sampler::finish() {
  done_.store(true);
  if (thread_.joinable()) {
    thread_.join();
  }
  return samples_;
}

window_usage usage_over(const serve_child& child, milliseconds window) {
  const sched_time before = child.sched();
  const auto start = clock::now();
  std::this_thread::sleep_for(window);
  const sched_time after = child.sched();
  const double wall = std::chrono::duration<double>(clock::now() - start).count();
  return {100.0 * (after.runnable() - before.runnable()) / wall, 100.0 * (after.on_cpu - before.on_cpu) / wall};
}

cpu_wait::cpu_wait(const serve_child& child)
    : child_(child), start_(child.sched().waiting + this_thread_sched().waiting) {}

double cpu_wait::ms() const {
  return std::max(0.0, 1000.0 * (child_.sched().waiting + this_thread_sched().waiting - start_));
}

bool not_accepting(const serve_child& child, const endpoint& at, std::uint64_t fd_limit) {
  const auto once = [&] {
    if (listen_queue_length(at) < 1) {
      return false;
    }
    return child.runnable_threads() == 0 || child.max_open_descriptors() >= static_cast<int>(fd_limit);
  };
  if (!once()) {
    return false;
  }
  std::this_thread::sleep_for(milliseconds(5));
  return once();
}

bool wait_asleep(const serve_child& child, milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  int seen = 0;
  while (clock::now() < deadline) {
    seen = child.runnable_threads() == 0 ? seen + 1 : 0;
    if (seen == 2) {
      return true;
    }
    std::this_thread::sleep_for(milliseconds(5));
  }
  return false;
}

answer await_answer(int fd, const serve_child& child, const endpoint& at, std::uint64_t fd_limit,
                    milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  while (clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5) > 0) {
      // The answer began: the rest of it follows at once (a few hundred bytes on loopback).
      return read_response(fd, std::chrono::seconds(2)).empty() ? answer::closed : answer::served;
    }
    if (not_accepting(child, at, fd_limit)) {
      return answer::blocked;
    }
  }
  return answer::timeout;
}

std::vector<std::pair<double, double>> paused_intervals(const serve_child& child, clock::time_point start, double end) {
  std::vector<std::pair<double, double>> out;
  std::optional<double> opened;  // start of the interval in progress (before `start`: negative)
  for (const auto& line : child.stderr_timeline()) {
    const double t = std::chrono::duration<double>(line.at - start).count();
    if (line.text.find("accept degraded") != std::string::npos && !opened) {
      opened = t;
    } else if ((line.text.find("accept recovered") != std::string::npos ||
                line.text.find("accept stopped") != std::string::npos) &&
               opened) {
      out.emplace_back(std::max(*opened, 0.0), t);
      opened.reset();
    }
  }
  if (opened) {
    out.emplace_back(std::max(*opened, 0.0), end);
  }
  return out;
}

}  // namespace drill_detail

scenario_result run_exhaustion(const drill_settings& s) {
  scenario_result r{"exhaustion and recovery", false, "", {}, {}, {}, {}};
  const int trials = s.quick ? 5 : 9;
  const milliseconds window(s.quick ? 500 : 1500);
  const milliseconds gap(s.quick ? 100 : 150);  // exhausted this long before each release
  exhausted_target x;
  const target_settings t = start_exhausted(s, serve_program::serve, exhaustible_args(serve_program::serve), x);
  if (!x.problem.empty()) {
    r.detail = x.problem;
    return r;
  }
  serve_child& child = *x.server->process();
  drill_detail::sampler samples(child, x.live);
  const bool degraded = child.wait_stderr("accept degraded", std::chrono::seconds(5));
  note(t, "exhausted at " + std::to_string(x.held.size()) + " connections; measuring for " +
              std::to_string(window.count()) + " ms");
  const drill_detail::window_usage usage = drill_detail::usage_over(child, window);
  const std::uint64_t log_lines_exhausted = child.written().stderr_lines;
  const trials_result tr = run_trials(t, x, std::vector<milliseconds>(trials, gap), std::chrono::seconds(5), samples);
  // Served before its release: the server was not exhausted.
  const bool early = std::any_of(tr.trials.begin(), tr.trials.end(),
                                 [](const trial& one) { return one.recovery_ms && one.mark.released <= 0; });
  const auto served = static_cast<double>(std::count_if(
      tr.trials.begin(), tr.trials.end(), [](const trial& one) { return one.recovery_ms && one.mark.released > 0; }));
  const double end = samples.at(clock::now());
  auto timeline_samples = samples.finish();
  const auto exhausted = static_cast<double>(x.held.size());
  r.figures =
      exhaustion_figures(trials, served, tr, usage, static_cast<double>(child.written().stderr_lines), exhausted);
  r.charts.push_back({"exhaustion and recovery: transient serve, RLIMIT_NOFILE " + std::to_string(child_fd_limit),
                      exhausted, "descriptors exhausted (" + std::to_string(x.held.size()) + " connections)",
                      std::move(timeline_samples), drill_detail::paused_intervals(child, samples.start(), end),
                      tr.marks()});
  r.passed = tr.verdict.empty() && degraded && served == trials && !early && usage.quiet() && log_lines_exhausted <= 4;
  r.detail = exhaustion_detail(tr, degraded, early, usage, log_lines_exhausted);
  return r;
}

namespace {

// A server's use of the machine and its log while exhausted.
struct measured {
  drill_detail::window_usage usage{NAN, NAN};
  double log_bytes_per_s = NAN;
  std::string problem;
};

// Exhausts `program` and measures it over `window`; the naive loop's timeline goes to `charts`.
measured measure_exhausted(const drill_settings& s, serve_program program, milliseconds window,
                           std::vector<timeline>& charts) {
  measured m;
  exhausted_target x;
  const target_settings t = start_exhausted(s, program, exhaustible_args(program), x);
  if (!x.problem.empty()) {
    m.problem = x.problem;
    return m;
  }
  note(t, t.label + " exhausted; measuring runnable time and log for " + std::to_string(window.count()) + " ms");
  serve_child& child = *x.server->process();
  drill_detail::sampler samples(child, x.live);
  const std::uint64_t bytes_before = child.written().stderr_bytes;
  const auto t0 = clock::now();
  m.usage = drill_detail::usage_over(child, window);
  const double dt = std::chrono::duration<double>(clock::now() - t0).count();
  m.log_bytes_per_s = static_cast<double>(child.written().stderr_bytes - bytes_before) / dt;
  if (program == serve_program::fixture_naive) {
    const double end = samples.at(clock::now());
    charts.push_back(
        {"naive contrast: the naive loop (re-arm on every error), RLIMIT_NOFILE " + std::to_string(child_fd_limit),
         static_cast<double>(x.held.size()),
         "descriptors exhausted (" + std::to_string(x.held.size()) + " connections)",
         samples.finish(),
         drill_detail::paused_intervals(child, samples.start(), end),
         {}});
  }
  return m;
}

}  // namespace

scenario_result run_naive_contrast(const drill_settings& s) {
  scenario_result r{"naive contrast", false, "", {}, {}, {}, {}};
  const milliseconds window(s.quick ? 500 : 1500);
  const measured ours = measure_exhausted(s, serve_program::serve, window, r.charts);
  const measured naive = measure_exhausted(s, serve_program::fixture_naive, window, r.charts);
  r.figures = {{"transient_runnable_percent", ours.usage.runnable}, {"naive_runnable_percent", naive.usage.runnable},
               {"transient_cpu_percent", ours.usage.on_cpu},        {"naive_cpu_percent", naive.usage.on_cpu},
               {"transient_log_bytes_per_s", ours.log_bytes_per_s}, {"naive_log_bytes_per_s", naive.log_bytes_per_s}};
  if (!ours.problem.empty() || !naive.problem.empty()) {
    r.detail = ours.problem.empty() ? naive.problem : ours.problem;
    return r;
  }
  // Runnable time, not a CPU share: the naive loop never sleeps, so it stays runnable however
  // little of a CPU the load leaves it.
  const bool quiet = ours.usage.quiet() && ours.log_bytes_per_s < naive.log_bytes_per_s;
  const bool spins = naive.usage.runnable >= 50.0;
  r.passed = quiet && spins;
  r.detail = !quiet   ? "no contrast: transient did not stay quieter than the naive loop"
             : !spins ? "no contrast: the naive loop was runnable less than half the time (it did not spin)"
                      : "the naive loop spins and floods the log; transient waits quietly";
  return r;
}

namespace {

// What the clean stop saw after its SIGTERM.
struct clean_stop_facts {
  sigterm_result term;
  double stop_wait_ms = 0;  // of stop_ms, the time serve and the drill waited for a CPU
  bool completed = false;   // the response in flight at the SIGTERM arrived
  double in_flight_ms = NAN;
  double exit_wait_ms = 0;
  std::optional<int> status;
  double exit_ms = NAN;
  double at_start = NAN;  // descriptors open, as serve reports them at exit
  double at_exit = NAN;
  bool counted = false;
};

// Asks for a slow response on `in_flight`, then SIGTERM once serve has read it (it sleeps
// again): idle connections close, the one in flight is answered (the drain), serve exits.
clean_stop_facts stop_with_one_in_flight(const target_server& server, const exhausted_target& x,
                                         const unique_fd& in_flight) {
  clean_stop_facts f;
  serve_child& child = *server.process();
  (void)read_response(in_flight.get(), milliseconds(1000));  // its first answer, so that the next is the slow one
  constexpr std::string_view slow_request = "GET /slow HTTP/1.1\r\nHost: drill\r\n\r\n";
  const bool asked = ::send(in_flight.get(), slow_request.data(), slow_request.size(), MSG_NOSIGNAL) ==
                     static_cast<ssize_t>(slow_request.size());
  drill_detail::wait_asleep(child, std::chrono::seconds(2));
  const drill_detail::cpu_wait waited(child);
  // The stop is what clients see: every idle connection closed once it sends its next request
  // (serve's drain answers it with Connection: close). The process exit comes after
  // (and, in a sanitizer build, after the leak check), so it is judged apart, more loosely.
  f.term = sigterm_and_wait_closed(server, x.held, clock::now() + std::chrono::seconds(5), true);
  f.stop_wait_ms = waited.ms();
  f.completed = asked && read_response(in_flight.get(), milliseconds(5000)).find("\r\n\r\nok") != std::string::npos;
  f.in_flight_ms = f.completed ? ms_since(f.term.sent) : NAN;
  f.exit_wait_ms = waited.ms();
  f.status = child.wait_exit(std::chrono::seconds(10));
  f.exit_ms = f.status ? std::chrono::duration<double, std::milli>(child.exited_at() - f.term.sent).count() : NAN;
  // "transient serve: stopped cleanly; descriptors open: A at start, B at exit"
  child.wait_stderr("at exit", milliseconds(2000));
  const std::string err = child.stderr_text();
  const std::size_t found = err.find("descriptors open: ");
  f.counted =
      found != std::string::npos &&
      std::sscanf(err.c_str() + found, "descriptors open: %lf at start, %lf at exit", &f.at_start, &f.at_exit) == 2;
  return f;
}

// The clean stop's verdict on `f` with `clients` idle connections open at the SIGTERM.
scenario_result clean_stop_verdict(scenario_result r, const clean_stop_facts& f, std::size_t clients) {
  // Latencies less the time serve and the drill waited for a CPU: what serve itself took.
  const bool stopped_fast = f.term.stop_ms - f.stop_wait_ms <= 100.0;
  const bool exited_fast = f.exit_ms - f.exit_wait_ms <= 1000.0;
  const bool all_closed = f.term.closed == clients;
  r.passed = f.status && *f.status == 0 && all_closed && stopped_fast && f.completed && exited_fast && f.counted &&
             f.at_start == f.at_exit;
  r.detail = !f.status        ? "serve did not exit within 10 s of SIGTERM"
             : *f.status != 0 ? "serve exited with status " + std::to_string(*f.status)
             : !all_closed    ? "some clients' connections were not closed"
             : !stopped_fast ? "serve took more than 100 ms (less CPU waits) to close its idle connections after their "
                               "next requests"
             : !f.completed  ? "the response in flight at SIGTERM was not completed"
             : !exited_fast  ? "serve took more than 1 s (less CPU waits) to exit"
             : !f.counted    ? "serve did not report its descriptors at exit"
             : f.at_start != f.at_exit ? "descriptors leaked: more open at exit than at start"
                                       : "idle closed within 100 ms while exhausted (each after its next request), "
                                         "the one in flight answered; every descriptor closed";
  return r;
}

}  // namespace

scenario_result run_clean_stop(const drill_settings& s) {
  scenario_result r{"clean stop", false, "", {}, {}, {}, {}};
  exhausted_target x;
  // serve with the fixture's knob: requests for /slow are in flight at the SIGTERM.
  std::vector<std::string> args = exhaustible_args(serve_program::fixture_serve);
  args.insert(args.end(), {"--slow-response", "300ms"});
  const target_settings t = start_exhausted(s, serve_program::fixture_serve, args, x);
  if (!x.problem.empty()) {
    r.detail = x.problem;
    return r;
  }
  if (!x.server->process()->wait_stderr("accept degraded", std::chrono::seconds(5)) || x.held.size() < 2) {
    r.detail = "no 'accept degraded' line: descriptors were not exhausted";
    return r;
  }
  const unique_fd in_flight = std::move(x.held.back());
  x.held.pop_back();
  note(t, "exhausted, a slow response in flight; sending SIGTERM");
  const clean_stop_facts f = stop_with_one_in_flight(*x.server, x, in_flight);
  r.figures = {{"stop_ms", f.term.stop_ms},
               {"stop_cpu_wait_ms", f.stop_wait_ms},
               {"exit_ms", f.exit_ms},
               {"exit_status", f.status ? *f.status : NAN},
               {"descriptors_at_start", f.at_start},
               {"descriptors_at_exit", f.at_exit},
               {"clients_closed", static_cast<double>(f.term.closed)},
               {"clients", static_cast<double>(x.held.size())},
               {"in_flight_completed", f.completed ? 1.0 : 0.0},
               {"in_flight_ms", f.in_flight_ms}};
  return clean_stop_verdict(r, f, x.held.size());
}

}  // namespace transient::tool
