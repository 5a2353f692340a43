// The built-in drill's scenario 10, restart under load: continuous load against one `transient
// serve` while it restarts 20 times (--quick 5), first by its in-place upgrade (SIGHUP), then,
// as the contrast, by stop then start on the same port. Two rows: the upgrade's is judged, the
// contrast's losses are shown.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "drill_restart.hpp"
#include "drill_scenarios.hpp"
#include "drill_steps.hpp"
#include "drill_target.hpp"
#include "transient/sockets/listener.hpp"

namespace transient::tool {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Two threads of short connections and two keep-alive ones: on two busy cores that is as much
// load as the machine gives while serve and its successor still get their share.
constexpr load_shape load{};
// How long one restart may take: the successor's start and handover, the old process's drain.
constexpr milliseconds restart_bound{10000};
constexpr milliseconds start_bound{5000};

// `transient serve` on 127.0.0.1:port in a process group of its own, which its successors join.
child_launch serve_launch(std::uint16_t port) {
  child_launch launch;
  launch.program = self_path();
  launch.argv = {"transient", "serve", "--listen", "127.0.0.1:" + std::to_string(port)};
  append_serve_engine(launch.argv);
  launch.fd_limit = child_fd_limit;
  return launch;
}

// What one run (20 restarts of one kind) measured.
struct run_record {
  std::string problem;              // why the run stopped early; empty if it ran through
  int restarts = 0;                 // restarts completed
  request_counts counts;            // the load's requests
  int quiet_windows = 0;            // restarts during which no request was answered
  std::vector<double> handover_ms;  // the successors' "first accept" lines
  int descriptors_first = -1;       // the first process's, idle after start-up
  int descriptors_last = -1;        // the last process's, idle after the load
  std::vector<pid_t> old_alive;     // processes of earlier generations still running
};

// The descriptors of `pid` once two reads 20 ms apart agree (bounded by `bound`).
int settled_descriptors(pid_t pid, milliseconds bound) {
  const auto deadline = clock::now() + bound;
  int last = open_descriptors(pid);
  while (clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(20));
    const int now = open_descriptors(pid);
    if (now == last) {
      return now;
    }
    last = now;
  }
  return last;
}

// The descriptors of `pid` once it holds no more than `first`, or settled after `bound`.
int idle_descriptors(pid_t pid, int first, milliseconds bound) {
  const auto deadline = clock::now() + bound;
  int n = open_descriptors(pid);
  while (n > first && clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(5));
    n = open_descriptors(pid);
  }
  return n > first ? settled_descriptors(pid, milliseconds(500)) : n;
}

// The first process started and answering; its idle descriptors recorded.
bool start_first(serve_child& first, const endpoint& at, run_record& rec) {
  if (!first.wait_listening(start_bound) || short_request(at, milliseconds(2000)) != request_end::answered) {
    rec.problem = "serve did not start: " + first.stderr_text();
    return false;
  }
  rec.descriptors_first = settled_descriptors(first.pid(), milliseconds(2000));
  return true;
}

// True once `pid` exited; reaps it (the first through its serve_child, later generations,
// the drill's children as a subreaper, directly).
bool has_exited(serve_child& first, pid_t pid) {
  if (pid == first.pid()) {
    return first.reap(milliseconds(0)).has_value();
  }
  int status = 0;
  const pid_t r = ::waitpid(pid, &status, WNOHANG);
  return r == pid || (r < 0 && ::kill(pid, 0) != 0 && errno == ESRCH);
}

// What one upgrade showed in serve's stderr since the signal.
struct upgrade_seen {
  std::optional<pid_t> successor;  // "upgrade: PID N took over ..."
  std::optional<double> handover;  // "upgrade: first accept X ms after the signal to PID old"
  std::string failed;              // "upgrade failed: ...", or a serve without the upgrade ignoring SIGHUP
};

upgrade_seen read_upgrade_lines(const serve_child& first, std::size_t from, pid_t old) {
  upgrade_seen seen;
  const auto lines = first.stderr_timeline();
  for (std::size_t i = from; i < lines.size(); ++i) {
    const std::string& text = lines[i].text;
    if (const auto pid = parse_took_over_line(text)) {
      seen.successor = pid;
    } else if (const auto h = parse_handover_line(text); h && h->old == old) {
      seen.handover = h->ms;
    } else if ((text.find("upgrade failed") != std::string::npos || text.find("SIGHUP ignored") != std::string::npos) &&
               seen.failed.empty()) {
      seen.failed = text;
    }
  }
  return seen;
}

// One upgrade: SIGHUP to `old`, then waits until a successor took over and `old` exited, and
// (a little longer) for the successor's handover line. Returns the successor; sets rec.problem
// when there is none. The successor is known by its "took over" line or, once `old` exited, by
// listening on the port; both are looked for until the line wait is over, since on a busy
// machine the line may still be in the pipe, and the listener search may miss a process, at
// the moment `old` exits.
std::optional<pid_t> upgrade_once(serve_child& first, pid_t old, std::uint16_t port, run_record& rec,
                                  clock::time_point deadline) {
  const std::size_t from = first.stderr_timeline().size();
  ::kill(old, SIGHUP);
  std::optional<clock::time_point> exited;
  std::optional<pid_t> listening;  // another process listening on the port, once `old` exited
  upgrade_seen seen;
  while (clock::now() < deadline) {
    seen = read_upgrade_lines(first, from, old);
    if (!exited && has_exited(first, old)) {
      exited = clock::now();
    }
    if (exited && !seen.successor && !listening) {
      listening = other_listener(port, old);
    }
    seen.successor = seen.successor ? seen.successor : listening;
    const bool line_wait_over = exited && (seen.handover || clock::now() - *exited > milliseconds(2000));
    if (!seen.failed.empty() || line_wait_over) {
      break;
    }
    std::this_thread::sleep_for(milliseconds(2));
  }
  if (seen.handover) {
    rec.handover_ms.push_back(*seen.handover);
  }
  if (!seen.failed.empty() || !exited || !seen.successor) {
    rec.problem = !seen.failed.empty() ? "serve said: " + seen.failed
                  : !exited ? "PID " + std::to_string(old) + " did not exit within the restart's bound after SIGHUP"
                            : "SIGHUP ended PID " + std::to_string(old) + " without a successor listening";
    return std::nullopt;
  }
  return seen.successor;
}

// Stops the process serving last (SIGTERM, then the whole group) and reaps every generation.
void stop_all(serve_child& first, pid_t serving) {
  ::kill(serving, SIGTERM);
  const auto deadline = clock::now() + milliseconds(3000);
  while (!has_exited(first, serving) && clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  first.stop_group(milliseconds(0));
}

// Run A: the in-place upgrade, `restarts` times under load.
run_record upgrade_run(const drill_settings& s, std::uint16_t port) {
  run_record rec;
  const subreaper reaper;
  const endpoint at = endpoint::loopback_v4(port);
  serve_child first(serve_launch(port));
  if (!start_first(first, at, rec)) {
    return rec;
  }
  pid_t serving = first.pid();
  {
    restart_load l(at, load);
    for (int i = 0; i < restarts_for(s.quick) && rec.problem.empty(); ++i) {
      run_between_restarts(l);
      const std::uint64_t flowing = l.counts().answered;
      const auto next = upgrade_once(first, serving, port, rec, std::min(clock::now() + restart_bound, s.deadline));
      if (!next) {
        break;
      }
      serving = *next;
      rec.restarts += 1;
      rec.quiet_windows += l.counts().answered == flowing ? 1 : 0;
    }
    rec.counts = l.stop();
  }
  rec.descriptors_last = idle_descriptors(serving, rec.descriptors_first, milliseconds(2000));
  for (const pid_t pid : first.group_members()) {
    if (pid != serving) {
      rec.old_alive.push_back(pid);
    }
  }
  stop_all(first, serving);
  return rec;
}

// Starts serve on `port` (again); nullptr with rec.problem set if it does not listen.
std::unique_ptr<serve_child> start_on(std::uint16_t port, run_record& rec) {
  auto child = std::make_unique<serve_child>(serve_launch(port));
  if (!child->wait_listening(start_bound)) {
    rec.problem = "serve did not start again on port " + std::to_string(port) + ": " + child->stderr_text();
    return nullptr;
  }
  return child;
}

// One stop then start: SIGTERM, the exit awaited, serve started again on the same port.
std::unique_ptr<serve_child> stop_then_start(std::unique_ptr<serve_child> child, std::uint16_t port, run_record& rec) {
  child->send(SIGTERM);
  if (!child->wait_exit(restart_bound)) {
    rec.problem = "serve did not exit within " + std::to_string(restart_bound.count()) + " ms of SIGTERM";
    return nullptr;
  }
  child.reset();
  return start_on(port, rec);
}

// Run B: stop then start on the same port, `restarts` times under load.
run_record stop_start_run(const drill_settings& s, std::uint16_t port) {
  run_record rec;
  const endpoint at = endpoint::loopback_v4(port);
  auto child = std::make_unique<serve_child>(serve_launch(port));
  if (!start_first(*child, at, rec)) {
    return rec;
  }
  {
    restart_load l(at, load);
    for (int i = 0; i < restarts_for(s.quick) && child && clock::now() < s.deadline; ++i) {
      run_between_restarts(l);
      const std::uint64_t flowing = l.counts().answered;
      child = stop_then_start(std::move(child), port, rec);
      rec.restarts += child ? 1 : 0;
      rec.quiet_windows += child && l.counts().answered == flowing ? 1 : 0;
    }
    rec.counts = l.stop();
  }
  if (child) {
    rec.descriptors_last = idle_descriptors(child->pid(), rec.descriptors_first, milliseconds(2000));
    child->send(SIGTERM);
    child->wait_exit(milliseconds(3000));
  }
  return rec;
}

std::string count_text(std::uint64_t n) { return std::to_string(n); }

std::string ms_text(double ms) {
  char buffer[32];
  (void)std::snprintf(buffer, sizeof buffer, "%.1f", ms);
  return buffer;
}

// "answered 1234, refused 0, reset 0, unanswered 0".
std::string counts_text(const request_counts& c) {
  std::string out = "answered " + count_text(c.answered) + ", refused " + count_text(c.refused) + ", reset " +
                    count_text(c.reset) + ", unanswered " + count_text(c.unanswered);
  return c.not_sent == 0 ? out : out + ", not sent (the drill's own failures) " + count_text(c.not_sent);
}

std::vector<figure> run_figures(const run_record& rec, const std::string& prefix) {
  const auto n = [](std::uint64_t v) { return static_cast<double>(v); };
  return {{prefix + "restarts", static_cast<double>(rec.restarts)},
          {prefix + "answered", n(rec.counts.answered)},
          {prefix + "refused", n(rec.counts.refused)},
          {prefix + "reset", n(rec.counts.reset)},
          {prefix + "unanswered", n(rec.counts.unanswered)},
          {prefix + "not_sent", n(rec.counts.not_sent)},
          {prefix + "restarts_without_answers", static_cast<double>(rec.quiet_windows)},
          {prefix + "descriptors_first", static_cast<double>(rec.descriptors_first)},
          {prefix + "descriptors_last", static_cast<double>(rec.descriptors_last)}};
}

// Descriptors the last generation holds beyond the first's, and old processes still running.
std::string left_behind(const run_record& rec) {
  std::string out;
  if (rec.descriptors_last < 0 || rec.descriptors_first < 0) {
    out = "descriptors unreadable";
  } else if (rec.descriptors_last > rec.descriptors_first) {
    out = "the last process holds " + std::to_string(rec.descriptors_last) + " descriptors idle, the first held " +
          std::to_string(rec.descriptors_first);
  }
  for (const pid_t pid : rec.old_alive) {
    out += (out.empty() ? "old process still running: PID " : ", PID ") + std::to_string(pid);
  }
  return out;
}

// Why the upgrade run failed; empty when it passed.
std::string upgrade_problem(const run_record& rec, int restarts) {
  const std::string left = left_behind(rec);
  return !rec.problem.empty()      ? "after " + std::to_string(rec.restarts) + " upgrades: " + rec.problem
         : rec.restarts < restarts ? "the scenario's time ran out after " + std::to_string(rec.restarts) + " of " +
                                         std::to_string(restarts) + " upgrades"
         : rec.quiet_windows > 0 ? std::to_string(rec.quiet_windows) +
                                       " upgrades saw no answered request: the load did not run through them, so "
                                       "they prove nothing"
         : rec.counts.lost() > 0 ? "requests lost: " + counts_text(rec.counts)
         : !left.empty()         ? left
                                 : "";
}

std::string handover_text(const std::vector<double>& ms) {
  if (ms.empty()) {
    return "no handover line from the successors";
  }
  return "handover median " + ms_text(median(ms)) + " ms, max " + ms_text(*std::max_element(ms.begin(), ms.end())) +
         " ms";
}

scenario_result upgrade_row(const run_record& rec, int restarts) {
  scenario_result r{"restart: in-place upgrade", false, "", run_figures(rec, "upgrade_"), {}, {}, {}};
  r.figures.push_back({"upgrade_handover_median_ms", rec.handover_ms.empty() ? NAN : median(rec.handover_ms)});
  r.figures.push_back(
      {"upgrade_handover_max_ms",
       rec.handover_ms.empty() ? NAN : *std::max_element(rec.handover_ms.begin(), rec.handover_ms.end())});
  r.figures.push_back({"upgrade_old_processes_left", static_cast<double>(rec.old_alive.size())});
  const std::string problem = upgrade_problem(rec, restarts);
  r.passed = problem.empty();
  r.detail = r.passed
                 ? std::to_string(rec.restarts) + " SIGHUP upgrades under load: " + counts_text(rec.counts) + "; " +
                       handover_text(rec.handover_ms) + "; descriptors " + std::to_string(rec.descriptors_first) +
                       " idle at start, " + std::to_string(rec.descriptors_last) + " at the end, no old process left"
                 : problem;
  return r;
}

scenario_result stop_start_row(const run_record& rec, int restarts) {
  scenario_result r{"restart: stop then start", false, "", run_figures(rec, "stop_start_"), {}, {}, {}};
  const std::string problem = !rec.problem.empty() ? rec.problem
                              : rec.restarts < restarts
                                  ? "the scenario's time ran out after " + std::to_string(rec.restarts) + " of " +
                                        std::to_string(restarts) + " restarts"
                                  : "";
  r.passed = problem.empty();
  r.verdict = r.passed ? "SHOWN" : "";
  r.detail = (r.passed ? "" : problem + "; ") + std::to_string(rec.restarts) +
             " SIGTERM-then-start restarts on the same port under load: " + counts_text(rec.counts) +
             " (shown, not judged)";
  return r;
}

}  // namespace

std::optional<pid_t> other_listener(std::uint16_t port, pid_t old) {
  std::error_code ec;
  for (const listen_entry& e : who_listens(port, ec)) {
    for (const process_info& p : e.owners) {
      if (p.pid != old) {
        return p.pid;
      }
    }
  }
  return std::nullopt;
}

std::vector<scenario_result> run_restart(const drill_settings& s) {
  const int restarts = restarts_for(s.quick);
  const std::uint16_t port = pick_free_port();
  if (port == 0) {
    return {{"restart: in-place upgrade", false, "no free loopback port", {}, {}, {}, {}}};
  }
  note(s, std::to_string(restarts) + " SIGHUP upgrades under load on port " + std::to_string(port));
  const run_record upgrade = upgrade_run(s, port);
  note(s, std::to_string(restarts) + " stop-then-start restarts under load on the same port");
  const run_record stop_start = stop_start_run(s, port);
  return {upgrade_row(upgrade, restarts), stop_start_row(stop_start, restarts)};
}

}  // namespace transient::tool
