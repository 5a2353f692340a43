// Drill scenarios 2, 4 and 6: a serve child whose descriptors run out (RLIMIT_NOFILE 64 and a
// budget far above it, so accept fails with EMFILE while the drill holds its connections).
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <optional>

#include "drill_client.hpp"
#include "drill_scenarios.hpp"
#include "drill_target.hpp"

namespace transient::tool {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::size_t fill_cap = 200;  // more than child_fd_limit: exhaustion always comes first

double seconds_since(clock::time_point start) { return std::chrono::duration<double>(clock::now() - start).count(); }

void note(const drill_settings& s, const std::string& text) {
  if (s.progress) {
    s.progress(text);
  }
}

struct exhausted_server {
  std::unique_ptr<serve_child> child;
  endpoint at;
  std::vector<unique_fd> held;
  std::atomic<int> live{0};
  unique_fd pending;
  std::string problem;
};

// Starts `program` with `args` and fills it until it cannot accept; `problem` says what went
// wrong.
void start_exhausted(exhausted_server& x, serve_program program, const std::vector<std::string>& args,
                     clock::time_point deadline) {
  x.child = std::make_unique<serve_child>(args, child_fd_limit, program);
  const auto at = x.child->wait_listening(std::chrono::seconds(5));
  if (!at) {
    x.problem = "serve did not start: " + x.child->stderr_text();
    return;
  }
  x.at = *at;
  x.pending = drill_detail::fill_until_exhausted(*x.child, x.at, x.held, x.live, fill_cap, deadline);
  if (!x.pending) {
    x.problem = "the server never ran out of descriptors";
  }
}

std::vector<std::string> exhaustible_args(serve_program program) {
  if (program == serve_program::fixture_naive) {
    return {"--listen", "127.0.0.1:0"};  // no budget: accept fails with EMFILE
  }
  // A budget far above what RLIMIT_NOFILE leaves: accept fails with EMFILE, not backpressure.
  return {"--listen", "127.0.0.1:0", "--max-connections", "1000", "--stall-timeout", "30s"};
}

double median(std::vector<double> v) {
  if (v.empty()) {
    return NAN;
  }
  std::sort(v.begin(), v.end());
  return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
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

bool not_accepting(const serve_child& child, std::uint16_t port, std::uint64_t fd_limit) {
  const auto once = [&] {
    if (listen_queue_length(port) < 1) {
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
    if (not_accepting(child, at.port(), fd_limit)) {
      return answer::blocked;
    }
  }
  return answer::timeout;
}

unique_fd fill_until_exhausted(const serve_child& child, const endpoint& at, std::vector<unique_fd>& held,
                               std::atomic<int>& live, std::size_t cap, clock::time_point deadline) {
  for (std::size_t i = 0; i < cap && clock::now() < deadline; ++i) {
    unique_fd fd = connect_and_request(at);
    if (!fd) {
      return {};
    }
    const answer a = await_answer(fd.get(), child, at, child_fd_limit, std::chrono::seconds(5));
    if (a == answer::blocked || a == answer::timeout) {
      return fd;
    }
    if (a == answer::closed) {
      return {};
    }
    held.push_back(std::move(fd));
    live.fetch_add(1);
  }
  return {};
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
  exhausted_server x;
  start_exhausted(x, serve_program::serve, exhaustible_args(serve_program::serve), s.deadline);
  if (!x.problem.empty()) {
    r.detail = x.problem;
    return r;
  }
  drill_detail::sampler samples(*x.child, x.live);
  const bool degraded = x.child->wait_stderr("accept degraded", std::chrono::seconds(5));
  note(s, "exhausted at " + std::to_string(x.held.size()) + " connections; measuring for " +
              std::to_string(window.count()) + " ms");
  const drill_detail::window_usage usage = drill_detail::usage_over(*x.child, window);
  const std::uint64_t log_lines_exhausted = x.child->stderr_lines();

  std::vector<double> latencies;
  std::vector<release_mark> marks;
  int served = 0;
  bool early = false;  // a pending client served before any release
  for (int trial = 0; trial < trials && r.detail.empty(); ++trial) {
    if (clock::now() >= s.deadline) {
      r.detail = "the scenario's time ran out after " + std::to_string(trial) + " trials";
      break;
    }
    note(s, "trial " + std::to_string(trial + 1) + "/" + std::to_string(trials) + ": release one connection");
    if (trial > 0) {  // a new client waits in the backlog while descriptors are exhausted again
      x.pending = connect_and_request(x.at);
      if (!x.pending || drill_detail::await_answer(x.pending.get(), *x.child, x.at, child_fd_limit,
                                                   std::chrono::seconds(5)) != drill_detail::answer::blocked) {
        r.detail = "trial " + std::to_string(trial + 1) + ": the server was not exhausted again";
        break;
      }
    }
    pollfd p{x.pending.get(), POLLIN, 0};
    early = early || ::poll(&p, 1, static_cast<int>(gap.count())) > 0;
    const auto released = clock::now();
    x.held.erase(x.held.begin());  // closes the oldest connection: the server's descriptor frees
    x.live.fetch_sub(1);
    const std::string response = read_response(x.pending.get(), std::chrono::seconds(5));
    if (response.rfind("HTTP/1.1 200 OK", 0) != 0) {
      marks.push_back({samples.at(released), -1, 0});
      r.detail = "trial " + std::to_string(trial + 1) + ": the pending client was not served after a release";
      break;
    }
    const auto answered = clock::now();
    latencies.push_back(std::chrono::duration<double, std::milli>(answered - released).count());
    marks.push_back({samples.at(released), samples.at(answered), latencies.back()});
    x.held.push_back(std::move(x.pending));
    x.live.fetch_add(1);
    ++served;
  }
  const double end = samples.at(clock::now());
  auto timeline_samples = samples.finish();
  const auto exhausted = static_cast<double>(x.held.size());
  const std::uint64_t log_lines = x.child->stderr_lines();
  r.figures = {{"trials", static_cast<double>(trials)},
               {"served_after_release", static_cast<double>(served)},
               {"recovery_median_ms", median(latencies)},
               {"recovery_max_ms", latencies.empty() ? NAN : *std::max_element(latencies.begin(), latencies.end())},
               {"runnable_percent_exhausted", usage.runnable},
               {"cpu_percent_exhausted", usage.on_cpu},
               {"log_lines", static_cast<double>(log_lines)},
               {"connections_at_exhaustion", exhausted}};
  timeline chart{"exhaustion and recovery: transient serve, RLIMIT_NOFILE " + std::to_string(child_fd_limit),
                 exhausted,
                 "descriptors exhausted (" + std::to_string(x.held.size()) + " connections)",
                 std::move(timeline_samples),
                 drill_detail::paused_intervals(*x.child, samples.start(), end),
                 std::move(marks)};
  r.charts.push_back(std::move(chart));
  if (r.detail.empty()) {
    r.passed = degraded && served == trials && !early && usage.quiet() && log_lines_exhausted <= 4;
    r.detail = !degraded ? "no 'accept degraded' line: descriptors were not exhausted"
               : early   ? "a pending client was answered before any release: the server was not exhausted"
               : !usage.quiet()
                   ? "the server spun while exhausted (runnable " + std::to_string(static_cast<int>(usage.runnable)) +
                         " % of the time, on a CPU " + std::to_string(static_cast<int>(usage.on_cpu)) + " %)"
               : log_lines_exhausted > 4 ? "the server logged more than a few lines while exhausted"
                                         : "every pending client served after a release; no spin while exhausted";
  }
  x.child->send(SIGKILL);
  return r;
}

scenario_result run_naive_contrast(const drill_settings& s) {
  scenario_result r{"naive contrast", false, "", {}, {}, {}, {}};
  const milliseconds window(s.quick ? 500 : 1500);
  struct measured {
    drill_detail::window_usage usage{NAN, NAN};
    double log_bytes_per_s = NAN;
    std::string problem;
  };
  const auto measure = [&](const std::string& policy) {
    measured m;
    exhausted_server x;
    const serve_program program = policy == "naive" ? serve_program::fixture_naive : serve_program::serve;
    start_exhausted(x, program, exhaustible_args(program), s.deadline);
    if (!x.problem.empty()) {
      m.problem = policy + ": " + x.problem;
      return m;
    }
    note(s,
         policy + " policy exhausted; measuring runnable time and log for " + std::to_string(window.count()) + " ms");
    drill_detail::sampler samples(*x.child, x.live);
    const std::uint64_t bytes_before = x.child->stderr_bytes();
    const auto t0 = clock::now();
    m.usage = drill_detail::usage_over(*x.child, window);
    const double dt = seconds_since(t0);
    m.log_bytes_per_s = static_cast<double>(x.child->stderr_bytes() - bytes_before) / dt;
    if (policy == "naive") {
      const double end = samples.at(clock::now());
      r.charts.push_back(
          {"naive contrast: the naive loop (re-arm on every error), RLIMIT_NOFILE " + std::to_string(child_fd_limit),
           static_cast<double>(x.held.size()),
           "descriptors exhausted (" + std::to_string(x.held.size()) + " connections)",
           samples.finish(),
           drill_detail::paused_intervals(*x.child, samples.start(), end),
           {}});
    }
    x.child->send(SIGKILL);
    return m;
  };
  const measured ours = measure("transient");
  const measured naive = measure("naive");
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

scenario_result run_clean_stop(const drill_settings& s) {
  scenario_result r{"clean stop", false, "", {}, {}, {}, {}};
  exhausted_server x;
  // serve with the fixture's knob: requests for /slow are in flight at the SIGTERM.
  std::vector<std::string> args = exhaustible_args(serve_program::fixture_serve);
  args.insert(args.end(), {"--slow-response", "300ms"});
  start_exhausted(x, serve_program::fixture_serve, args, s.deadline);
  if (!x.problem.empty()) {
    r.detail = x.problem;
    return r;
  }
  if (!x.child->wait_stderr("accept degraded", std::chrono::seconds(5)) || x.held.size() < 2) {
    r.detail = "no 'accept degraded' line: descriptors were not exhausted";
    return r;
  }
  // The drain: one held connection asks for a slow response, then SIGTERM comes once serve has
  // read it (it sleeps again).
  const unique_fd in_flight = std::move(x.held.back());
  x.held.pop_back();
  constexpr std::string_view slow_request = "GET /slow HTTP/1.1\r\nHost: drill\r\n\r\n";
  const bool asked = ::send(in_flight.get(), slow_request.data(), slow_request.size(), MSG_NOSIGNAL) ==
                     static_cast<ssize_t>(slow_request.size());
  drill_detail::wait_asleep(*x.child, std::chrono::seconds(2));
  note(s, "exhausted, a slow response in flight; sending SIGTERM");
  const drill_detail::cpu_wait waited(*x.child);
  const auto sent = clock::now();
  x.child->send(SIGTERM);
  // The stop is what clients see: every idle connection closed. The process exit comes after
  // (and, in a sanitizer build, after the leak check), so it is judged apart, more loosely.
  std::size_t closed = 0;
  const auto close_deadline = sent + std::chrono::seconds(5);
  for (const auto& fd : x.held) {
    const auto left = std::max(std::chrono::ceil<milliseconds>(close_deadline - clock::now()), milliseconds(0));
    closed += wait_closed(fd.get(), left) ? 1 : 0;
  }
  const double stop_ms = std::chrono::duration<double, std::milli>(clock::now() - sent).count();
  const double stop_wait_ms = waited.ms();
  const bool completed =
      asked && read_response(in_flight.get(), milliseconds(5000)).find("\r\n\r\nok") != std::string::npos;
  const double in_flight_ms = std::chrono::duration<double, std::milli>(clock::now() - sent).count();
  const double exit_wait_ms = waited.ms();
  const auto status = x.child->wait_exit(std::chrono::seconds(10));
  const double exit_ms = status ? std::chrono::duration<double, std::milli>(x.child->exited_at() - sent).count() : NAN;
  // "transient serve: stopped cleanly; descriptors open: A at start, B at exit"
  x.child->wait_stderr("at exit", milliseconds(2000));
  const std::string err = x.child->stderr_text();
  double at_start = NAN;
  double at_exit = NAN;
  const std::size_t found = err.find("descriptors open: ");
  const bool counted =
      found != std::string::npos &&
      std::sscanf(err.c_str() + found, "descriptors open: %lf at start, %lf at exit", &at_start, &at_exit) == 2;
  r.figures = {{"stop_ms", stop_ms},
               {"stop_cpu_wait_ms", stop_wait_ms},
               {"exit_ms", exit_ms},
               {"exit_status", status ? *status : NAN},
               {"descriptors_at_start", at_start},
               {"descriptors_at_exit", at_exit},
               {"clients_closed", static_cast<double>(closed)},
               {"clients", static_cast<double>(x.held.size())},
               {"in_flight_completed", completed ? 1.0 : 0.0},
               {"in_flight_ms", completed ? in_flight_ms : NAN}};
  // Latencies less the time serve and the drill waited for a CPU: what serve itself took.
  const bool stopped_fast = stop_ms - stop_wait_ms <= 100.0;
  const bool exited_fast = exit_ms - exit_wait_ms <= 1000.0;
  r.passed = status && *status == 0 && closed == x.held.size() && stopped_fast && completed && exited_fast && counted &&
             at_start == at_exit;
  r.detail = !status                   ? "serve did not exit within 10 s of SIGTERM"
             : *status != 0            ? "serve exited with status " + std::to_string(*status)
             : closed != x.held.size() ? "some clients' connections were not closed"
             : !stopped_fast           ? "serve took more than 100 ms (less CPU waits) to close its idle connections"
             : !completed              ? "the response in flight at SIGTERM was not completed"
             : !exited_fast            ? "serve took more than 1 s (less CPU waits) to exit"
             : !counted                ? "serve did not report its descriptors at exit"
             : at_start != at_exit     ? "descriptors leaked: more open at exit than at start"
                                       : "idle closed within 100 ms while exhausted, the one in flight answered; "
                                         "every descriptor closed";
  return r;
}

}  // namespace transient::tool
