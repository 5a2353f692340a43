// --target's scenario 7, restart under load: the restart load (drill_restart.hpp) against the
// target while the user's own restart command (--restart 'CMD') runs 20 times (--quick 5), then
// what it lost and what the listening processes hold against before.
#include <signal.h>

#include <algorithm>
#include <set>

#include "drill_restart.hpp"
#include "drill_steps.hpp"
#include "drill_target.hpp"
#include "transient/sockets/listener.hpp"

namespace transient::tool {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// The built-in scenario's load (drill_restart.cpp says why this much).
constexpr load_shape load{};
// How long the restart command may run, and how long the target may take to answer after it.
constexpr milliseconds command_bound{10000};
constexpr milliseconds settle_bound{5000};

// The processes listening on `port` (who_listens' owners).
std::set<pid_t> listening_processes(std::uint16_t port, std::error_code& ec) {
  std::set<pid_t> owners;
  for (const listen_entry& e : who_listens(port, ec)) {
    for (const process_info& p : e.owners) {
      owners.insert(p.pid);
    }
  }
  return owners;
}

// The descriptors of the processes listening on `port`, summed; nullopt where not readable (no
// owner seen, or one whose /proc/PID/fd the drill may not read).
std::optional<int> listening_descriptors(std::uint16_t port) {
  std::error_code ec;
  const std::set<pid_t> owners = listening_processes(port, ec);
  int total = 0;
  for (const pid_t pid : owners) {
    const int n = open_descriptors(pid);
    if (n < 0) {
      return std::nullopt;
    }
    total += n;
  }
  return owners.empty() || ec ? std::nullopt : std::optional<int>(total);
}

// listening_descriptors once two reads 20 ms apart agree (the server has closed what the drill
// closed), or as it is after `bound`.
std::optional<int> settled_descriptors(std::uint16_t port, milliseconds bound) {
  const auto deadline = clock::now() + bound;
  auto last = listening_descriptors(port);
  while (clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(20));
    const auto now = listening_descriptors(port);
    if (now == last) {
      return now;
    }
    last = now;
  }
  return last;
}

// listening_descriptors once it is at most `before`, or as it is after `bound`.
std::optional<int> descriptors_after(std::uint16_t port, std::optional<int> before, milliseconds bound) {
  const auto deadline = clock::now() + bound;
  auto n = listening_descriptors(port);
  while ((!n || (before && *n > *before)) && clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(20));
    n = listening_descriptors(port);
  }
  return n;
}

// The target's pid for {pid}: the process the drill started, or, once it has exited (a server
// that upgraded itself in place), the process listening on its port.
pid_t serving_pid(const target_server& server) {
  if (!server.process()->reap(milliseconds(0))) {
    return server.pid();
  }
  std::error_code ec;
  for (const listen_entry& e : who_listens(server.port(), ec)) {
    if (!e.owners.empty()) {
      return e.owners.front().pid;
    }
  }
  return server.pid();
}

// The restart command's words with {pid} and {port} replaced.
child_launch restart_launch(const target_settings& s, pid_t pid, std::uint16_t port) {
  child_launch launch;
  for (std::string w : s.restart) {
    for (const auto& [key, value] : {std::pair<std::string, std::string>{"{pid}", std::to_string(pid)},
                                     std::pair<std::string, std::string>{"{port}", std::to_string(port)}}) {
      for (std::size_t at = w.find(key); at != std::string::npos; at = w.find(key, at + value.size())) {
        w.replace(at, key.size(), value);
      }
    }
    launch.argv.push_back(std::move(w));
  }
  launch.program = resolve_program(launch.argv.front());
  launch.fd_limit = 1024;
  return launch;
}

// Runs the restart command to its end (bounded); "" if it exited 0, else what went wrong.
std::string run_restart_command(const child_launch& launch) {
  if (launch.program.empty()) {
    return "cannot run '" + launch.argv.front() + "'";
  }
  serve_child command(launch);
  const auto status = command.wait_exit(command_bound);
  if (!status) {
    return "did not finish within " + std::to_string(command_bound.count()) + " ms";
  }
  const std::string said = command.stderr_text().substr(0, 200);
  return *status == 0 ? "" : status_text(*status) + (said.empty() ? "" : ": " + said);
}

// Waits (bounded by `deadline`) until the target answers a short request again.
bool answers_again(const endpoint& at, clock::time_point deadline) {
  while (clock::now() < deadline) {
    if (short_request(at, milliseconds(1000)) == request_end::answered) {
      return true;
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
  return false;
}

// The processes listening on `port` once they stay the same for 200 ms (bounded by `deadline`):
// a process the restart replaced (an old generation draining, old workers) has let go.
std::set<pid_t> settled_listeners(std::uint16_t port, clock::time_point deadline) {
  constexpr milliseconds stable{200};
  std::error_code ec;
  std::set<pid_t> last = listening_processes(port, ec);
  auto since = clock::now();
  while (clock::now() - since < stable && clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(10));
    std::set<pid_t> now = listening_processes(port, ec);
    if (now != last) {
      last = std::move(now);
      since = clock::now();
    }
  }
  return last;
}

// What the restarts did.
struct restarts_seen {
  int done = 0;           // restart commands that finished and after which the target answered
  int quiet = 0;          // restarts during which no request was answered
  int renewed = 0;        // restarts after which a process listened that did not before
  std::string verdict;    // "RESTART FAILED", "DOWN"; empty if every restart ran
  std::string detail;     // with verdict
  request_counts counts;  // the load's
};

// One restart: the command, then the target answering again; sets seen.verdict on failure.
void restart_once(const target_settings& s, const target_server& server, restarts_seen& seen) {
  std::error_code ec;
  const std::set<pid_t> before = listening_processes(server.port(), ec);
  const std::string failed = run_restart_command(restart_launch(s, serving_pid(server), server.port()));
  const auto settle_deadline = clock::now() + settle_bound;
  const bool answers = failed.empty() && answers_again(server.at(), settle_deadline);
  if (answers) {
    const std::set<pid_t> after = settled_listeners(server.port(), settle_deadline);
    seen.renewed += std::any_of(after.begin(), after.end(), [&](pid_t p) { return before.count(p) == 0; }) ? 1 : 0;
  }
  if (!failed.empty()) {
    seen.verdict = "RESTART FAILED";
    seen.detail = "the restart command, run " + std::to_string(seen.done + 1) + ": " + failed;
  } else if (!answers) {
    seen.verdict = "DOWN";
    seen.detail =
        "no answer within " + std::to_string(settle_bound.count()) + " ms of restart " + std::to_string(seen.done + 1);
  }
}

restarts_seen restart_under_load(const target_settings& s, const target_server& server) {
  restarts_seen seen;
  restart_load l(server.at(), load);
  for (int i = 0; i < restarts_for(s.quick) && seen.verdict.empty() && clock::now() < s.deadline; ++i) {
    run_between_restarts(l);
    const std::uint64_t flowing = l.counts().answered;
    note(s, "restart " + std::to_string(i + 1) + " of " + std::to_string(restarts_for(s.quick)));
    restart_once(s, server, seen);
    seen.done += seen.verdict.empty() ? 1 : 0;
    seen.quiet += seen.verdict.empty() && l.counts().answered == flowing ? 1 : 0;
  }
  seen.counts = l.stop();
  return seen;
}

std::string count_text(std::uint64_t n) { return std::to_string(n); }

std::string descriptors_text(std::optional<int> n) { return n ? std::to_string(*n) : "n/a"; }

std::string losses_text(const request_counts& c) {
  return "answered " + count_text(c.answered) + ", refused " + count_text(c.refused) + ", reset " +
         count_text(c.reset) + ", unanswered " + count_text(c.unanswered) +
         (c.not_sent == 0 ? "" : ", not sent (the drill's own failures) " + count_text(c.not_sent));
}

std::string restart_verdict(const restarts_seen& seen, int restarts, std::optional<int> before,
                            std::optional<int> after) {
  if (!seen.verdict.empty()) {
    return seen.verdict;
  }
  if (seen.done < restarts || seen.quiet > 0) {
    return "NO LOAD";
  }
  const bool lost = seen.counts.lost() > 0;
  const bool left = before && after && *after > *before;
  return lost && left ? "RESTART LOSS+LEFT DESCRIPTORS" : lost ? "RESTART LOSS" : left ? "LEFT DESCRIPTORS" : "";
}

std::vector<figure> restart_figures(const restarts_seen& seen, std::optional<int> before, std::optional<int> after) {
  const auto n = [](std::uint64_t v) { return static_cast<double>(v); };
  const auto d = [](std::optional<int> v) { return v ? static_cast<double>(*v) : NAN; };
  return {{"restarts", static_cast<double>(seen.done)},
          {"answered", n(seen.counts.answered)},
          {"refused", n(seen.counts.refused)},
          {"reset", n(seen.counts.reset)},
          {"unanswered", n(seen.counts.unanswered)},
          {"not_sent", n(seen.counts.not_sent)},
          {"restarts_without_answers", static_cast<double>(seen.quiet)},
          {"restarts_with_new_listeners", static_cast<double>(seen.renewed)},
          {"listener_descriptors_before", d(before)},
          {"listener_descriptors_after", d(after)}};
}

}  // namespace

scenario_result run_target_restart(const target_settings& s) {
  scenario_result r{"restart", false, "", {}, {}, {}, {}};
  if (s.restart.empty() || s.protocol != target_protocol::http) {
    r.passed = true;
    r.verdict = s.restart.empty() ? "SKIPPED" : "N/A";
    r.detail = s.restart.empty() ? "needs --restart 'CMD', the command that restarts the server, e.g. "
                                   "--restart 'kill -HUP {pid}'"
                                 : "needs HTTP (each request's answer): run it without --protocol tcp";
    return r;
  }
  const target_server server(s);
  if (!server.problem().empty()) {
    r.verdict = "NO START";
    r.fix = target_fix(r.verdict);
    r.detail = server.problem();
    return r;
  }
  const std::optional<int> before = settled_descriptors(server.port(), milliseconds(1000));
  const restarts_seen seen = restart_under_load(s, server);
  const std::optional<int> after = descriptors_after(server.port(), before, milliseconds(2000));
  r.figures = restart_figures(seen, before, after);
  const int restarts = restarts_for(s.quick);
  const std::string verdict = restart_verdict(seen, restarts, before, after);
  r.passed = verdict.empty();
  r.verdict = r.passed ? "PASS" : verdict;
  r.fix = r.passed ? "" : target_fix(verdict);
  r.detail = (seen.detail.empty() ? "" : seen.detail + "; ") + std::to_string(seen.done) + " of " +
             std::to_string(restarts) + " restarts under load: " + losses_text(seen.counts) +
             "; descriptors of the listening processes " + descriptors_text(before) + " before, " +
             descriptors_text(after) + " after" + "; " + std::to_string(seen.renewed) +
             " restarts brought a new listening process" +
             (seen.quiet > 0 ? "; " + std::to_string(seen.quiet) + " restarts saw no answered request" : "");
  return r;
}

}  // namespace transient::tool
