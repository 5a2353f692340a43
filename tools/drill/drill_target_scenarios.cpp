// The five scenarios of `transient drill --target` (see drill_target.hpp), on the steps the
// built-in scenarios share (drill_steps.hpp). Each starts its own target, is bounded in count
// and time, and names its verdict after the thresholds.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <thread>

#include "drill_client.hpp"
#include "drill_restart.hpp"  // open_descriptors
#include "drill_steps.hpp"
#include "transient/sockets/listener.hpp"

namespace transient::tool {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds connect_bound{1000};

scenario_result verdict_of(scenario_result r, std::string verdict, std::string detail, std::string fix = {}) {
  r.passed = verdict.empty();
  r.fix = r.passed ? "" : fix.empty() ? target_fix(verdict) : std::move(fix);
  r.verdict = verdict.empty() ? "PASS" : std::move(verdict);
  r.detail = std::move(detail);
  return r;
}

// The parent of `pid` (field 4 of /proc/PID/stat), 0 if unreadable.
pid_t parent_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(in, stat);
  const std::size_t close = stat.rfind(')');
  int parent = 0;
  return close != std::string::npos && std::sscanf(stat.c_str() + close + 1, " %*c %d", &parent) == 1 ? parent : 0;
}

// The processes listening on `port` that the drill started: descendants of the drill (which
// inherits the orphans of its targets as their subreaper) or of `target`.
std::vector<pid_t> listening_descendants(std::uint16_t port, pid_t target) {
  std::vector<pid_t> out;
  for (const auto& entry : who_listens(port)) {
    for (const auto& owner : entry.owners) {
      for (pid_t p = owner.pid; p > 1; p = parent_of(p)) {
        if (p == ::getpid() || p == target) {
          out.push_back(owner.pid);
          break;
        }
      }
    }
  }
  return out;
}

// ", held by pid N (command)" for what listens on `port`; "" if nothing can be seen.
std::string describe_holders(std::uint16_t port) {
  std::string out;
  for (const auto& entry : who_listens(port)) {
    for (const auto& owner : entry.owners) {
      std::string command;
      for (const char c : owner.command.substr(0, 80)) {
        command.push_back(static_cast<unsigned char>(c) < 0x20 || c == 0x7f ? '?' : c);  // one line, no escapes
      }
      out += (out.empty() ? ", held by pid " : ", pid ") + std::to_string(owner.pid) + " (" + command + ")";
    }
  }
  return out.empty() ? out : out + ", outside the process group the drill started";
}

std::string number_text(double v) {
  char buffer[32];
  (void)std::snprintf(buffer, sizeof buffer, v < 10 ? "%.1f" : "%.0f", v);
  return buffer;
}

std::string recovery_detail(const std::vector<trial>& trials, double worst, double worst_own) {
  std::size_t served = 0;
  std::size_t dropped = 0;
  for (const auto& t : trials) {
    served += t.probe == probe_outcome::served ? 1 : 0;
    dropped += t.probe == probe_outcome::reset || t.probe == probe_outcome::closed ? 1 : 0;
  }
  const std::string n = std::to_string(trials.size());
  std::string text = dropped > 0 ? "the waiting client was dropped (reset or closed) in " + std::to_string(dropped) +
                                       " of " + n + " trials; a new client was served after the release"
                                 : "the waiting client was served after a release in " + std::to_string(served) +
                                       " of " + n + " trials";
  return text + "; worst recovery " + number_text(worst) + " ms (" + number_text(worst_own) +
         " ms not counting CPU waits)";
}

// What the clean stop scenario saw after its SIGTERM.
struct stop_facts {
  sigterm_result term;
  std::optional<int> status;
  double exit_ms = NAN;
  double descriptors_before = 0;
  double descriptors_left = 0;
  bool still_listening = false;
  double unlisten_ms = NAN;
  std::vector<pid_t> holders;  // escaped processes still listening on the port
  std::string holder_text;
  double left_behind = 0;  // processes of its group still running after it exited
  std::size_t after_kill = 0;
};

// Sends SIGTERM and gathers the facts, then kills what is left: the group, and escaped holders.
// Over HTTP the held connections keep sending requests after the signal (sigterm_and_wait_closed).
stop_facts stop_target(target_server& server, const std::vector<unique_fd>& held, bool http) {
  stop_facts f;
  serve_child& child = *server.process();
  const std::uint16_t port = server.port();
  f.descriptors_before = open_descriptors(server.pid());
  const auto deadline = clock::now() + target_threshold::stop_within;
  const auto left = [&] { return std::max(std::chrono::ceil<milliseconds>(deadline - clock::now()), milliseconds(0)); };
  f.term = sigterm_and_wait_closed(server, held, deadline, http);
  f.status = child.wait_exit(left());
  f.exit_ms = f.status ? std::chrono::duration<double, std::milli>(child.exited_at() - f.term.sent).count() : NAN;
  f.descriptors_left = f.status ? 0 : open_descriptors(server.pid());
  // The port must stop listening too: the process the drill started may have exited while the
  // server itself, moved out of its group (setsid), ignores SIGTERM and listens on.
  while (listen_queue_length(server.at()) >= 0 && clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  f.still_listening = listen_queue_length(server.at()) >= 0;
  f.unlisten_ms = f.still_listening ? NAN : ms_since(f.term.sent);
  if (f.still_listening) {
    f.holders = listening_descendants(port, server.pid());
    f.holder_text = describe_holders(port);
  }
  if (f.status) {
    std::this_thread::sleep_for(milliseconds(50));  // what the target forked outlives it or not
  }
  f.left_behind = static_cast<double>(child.group_members().size());
  f.after_kill = server.stop(milliseconds(0)).size();
  for (const pid_t pid : f.holders) {
    ::kill(pid, SIGKILL);
  }
  return f;
}

// The clean stop's verdict on `f`, with `held` connections open at the SIGTERM.
scenario_result clean_stop_verdict(const scenario_result& r, const stop_facts& f, std::size_t held,
                                   std::uint16_t port) {
  const std::optional<int>& status = f.status;
  const std::size_t closed = f.term.closed;
  const std::string within = std::to_string(target_threshold::stop_within.count()) + " ms";
  if (!status) {
    return verdict_of(r, "IGNORES SIGTERM",
                      "still running " + within + " after SIGTERM (" + number_text(f.descriptors_left) +
                          " descriptors open); killed");
  }
  if (f.still_listening) {
    return verdict_of(r, "IGNORES SIGTERM",
                      "the process the drill started ended (" + status_text(*status) +
                          "), but 127.0.0.1:" + std::to_string(port) + " still listened " + within + " after SIGTERM" +
                          f.holder_text + "; killed",
                      "exit on SIGTERM yourself; a wrapper that starts the server in a session of its own (setsid) "
                      "must exec it or pass SIGTERM on to it, and the server must not ignore SIGTERM");
  }
  if (*status != 0 && *status != 128 + SIGTERM) {
    return verdict_of(r, "UNCLEAN STOP", "exited with " + status_text(*status) + " after SIGTERM");
  }
  if (f.left_behind > 0) {
    return verdict_of(r, "LEFT PROCESSES",
                      number_text(f.left_behind) + " process(es) of its group still ran after it exited; killed");
  }
  if (closed != held) {
    return verdict_of(r, "UNCLEAN STOP",
                      std::to_string(held - closed) + " connections still open " + within + " after SIGTERM");
  }
  return verdict_of(r, "",
                    "exited (" + status_text(*status) + ") " + number_text(f.exit_ms) +
                        " ms after SIGTERM, port closed; " + std::to_string(held) + " connections closed");
}

}  // namespace

scenario_result run_target_exhaustion(const target_settings& s) {
  scenario_result r{"exhaustion and recovery", false, "", {}, {}, {}, {}};
  const milliseconds long_wait(s.quick ? 1000 : 3000);
  const std::vector<milliseconds> waits =
      s.quick
          ? std::vector<milliseconds>{milliseconds(200), long_wait, milliseconds(200)}
          : std::vector<milliseconds>{milliseconds(200), long_wait, milliseconds(200), long_wait, milliseconds(200)};
  exhausted_target x;
  start_exhausted(s, x);
  if (!x.problem.empty()) {
    return verdict_of(r, x.verdict, x.problem, x.fix);
  }
  const auto exhausted_at = static_cast<double>(x.held.size());
  drill_detail::sampler samples(*x.server->process(), x.live);
  trials_result t = run_trials(s, x, waits, target_threshold::stuck_after_release, samples);
  const double worst = t.worst(false);
  const double worst_own = t.worst(true);
  r.figures = {{"connections_at_exhaustion", exhausted_at},
               {"trials", static_cast<double>(t.trials.size())},
               {"long_wait_ms", static_cast<double>(long_wait.count())},
               {"recovery_median_ms", median(t.recoveries)},
               {"recovery_max_ms", worst},
               {"recovery_max_own_ms", worst_own},
               {"probes_served", t.count(probe_outcome::served)},
               {"probes_reset", t.count(probe_outcome::reset)},
               {"probes_closed", t.count(probe_outcome::closed)},
               {"probes_waiting", t.count(probe_outcome::waiting)}};
  r.charts.push_back({"exhaustion and recovery: " + s.label + ", RLIMIT_NOFILE " + std::to_string(s.fd_limit),
                      exhausted_at,
                      "exhausted (" + std::to_string(static_cast<int>(exhausted_at)) + " connections)",
                      samples.finish(),
                      {},
                      t.marks()});
  // Judged less CPU waits: on a loaded machine a prompt server waits for a CPU like any other.
  if (t.verdict.empty() && worst_own > static_cast<double>(target_threshold::late_recovery.count())) {
    t.verdict = "LATE";
  }
  return verdict_of(r, t.verdict, t.detail.empty() ? recovery_detail(t.trials, worst, worst_own) : t.detail, t.fix);
}

scenario_result run_target_exhausted_cost(const target_settings& s) {
  scenario_result r{"CPU and log while exhausted", false, "", {}, {}, {}, {}};
  const milliseconds window(s.quick ? 1000 : 3000);
  exhausted_target x;
  start_exhausted(s, x);
  if (!x.problem.empty()) {
    return verdict_of(r, x.verdict, x.problem, x.fix);
  }
  note(s, "exhausted at " + std::to_string(x.held.size()) + " connections; measuring for " +
              std::to_string(window.count()) + " ms");
  std::this_thread::sleep_for(milliseconds(100));  // the first reaction to the exhaustion is not a rate
  const auto [lines0, bytes0] = x.server->log_volume();
  const sched_time sched0 = x.server->process()->sched();
  const auto t0 = clock::now();
  std::optional<int> status;
  while (clock::now() - t0 < window && !(status = x.server->exited())) {
    std::this_thread::sleep_for(milliseconds(50));
  }
  const sched_time sched1 = x.server->process()->sched();
  const double seconds = std::chrono::duration<double>(clock::now() - t0).count();
  const double runnable = 100.0 * (sched1.runnable() - sched0.runnable()) / seconds;
  const double cpu = 100.0 * (sched1.on_cpu - sched0.on_cpu) / seconds;
  const auto [lines1, bytes1] = x.server->log_volume();
  const double lines_per_s = static_cast<double>(lines1 - lines0) / seconds;
  const double bytes_per_s = static_cast<double>(bytes1 - bytes0) / seconds;
  r.figures = {{"window_s", seconds},
               {"runnable_percent_exhausted", runnable},
               {"cpu_percent_exhausted", cpu},
               {"log_lines", static_cast<double>(lines1 - lines0)},
               {"log_lines_per_s", lines_per_s},
               {"log_bytes_per_s", bytes_per_s}};
  if (status) {
    return verdict_of(r, "DEAD", "exited (" + status_text(*status) + ") while its descriptors were exhausted");
  }
  const bool spin = runnable > target_threshold::spin_runnable_percent || cpu > target_threshold::spin_cpu_percent;
  const bool flood = lines_per_s > target_threshold::flood_lines_per_s;
  const std::string what = "runnable " + number_text(runnable) + " % of the time (" + number_text(cpu) +
                           " % on a CPU), " + number_text(lines_per_s) + " log lines/s while exhausted";
  return verdict_of(r,
                    spin && flood ? "SPIN+FLOOD"
                    : spin        ? "SPIN"
                    : flood       ? "FLOOD"
                                  : "",
                    spin || flood ? what : "quiet: " + what);
}

scenario_result run_target_backpressure(const target_settings& s) {
  scenario_result r{"backpressure", false, "", {}, {}, {}, {}};
  const std::size_t clients = s.fd_limit * (s.quick ? 2 : 4);
  const target_server server(s);
  if (!server.problem().empty()) {
    return verdict_of(r, "NO START", server.problem());
  }
  note(s, std::to_string(clients) + " clients at once, RLIMIT_NOFILE " + std::to_string(s.fd_limit));
  const burst_result burst = client_burst(s, server, clients, std::chrono::seconds(s.quick ? 10 : 20));
  r.figures = {{"clients", static_cast<double>(clients)},
               {"fd_limit", static_cast<double>(s.fd_limit)},
               {"served", static_cast<double>(burst.served)},
               {"lost", static_cast<double>(clients - burst.served)},
               {"seconds", burst.seconds}};
  if (const auto status = server.exited()) {
    return verdict_of(r, "DEAD", "exited (" + status_text(*status) + ") under " + std::to_string(clients) + " clients");
  }
  if (burst.served != clients || !burst.drained) {
    return verdict_of(r, "LOST",
                      std::to_string(clients - burst.served) + " of " + std::to_string(clients) +
                          " clients reset, closed or not served in time");
  }
  return verdict_of(r, "", "all " + std::to_string(clients) + " clients served; none lost");
}

scenario_result run_target_clean_stop(const target_settings& s) {
  scenario_result r{"clean stop", false, "", {}, {}, {}, {}};
  constexpr std::size_t open = 8;
  target_server server(s);
  if (!server.problem().empty()) {
    return verdict_of(r, "NO START", server.problem());
  }
  std::vector<unique_fd> held;
  for (std::size_t i = 0; i < open; ++i) {
    unique_fd fd = connect_bounded(server.at(), connect_bound, std::nullopt, s.protocol == target_protocol::http);
    if (fd && await_outcome(fd.get(), server.at(), s.protocol, milliseconds(1000)) == probe_outcome::served) {
      held.push_back(std::move(fd));
    }
  }
  note(s, std::to_string(held.size()) + " connections open; sending SIGTERM");
  const stop_facts f = stop_target(server, held, s.protocol == target_protocol::http);
  r.figures = {{"connections", static_cast<double>(held.size())},
               {"connections_closed", static_cast<double>(f.term.closed)},
               {"stop_ms", f.term.closed == held.size() ? f.term.stop_ms : NAN},
               {"exit_ms", f.exit_ms},
               {"unlisten_ms", f.unlisten_ms},
               {"exit_status", f.status ? *f.status : NAN},
               {"descriptors_before", f.descriptors_before},
               {"descriptors_left", f.descriptors_left},
               {"processes_left", f.left_behind},
               {"escaped_listeners", static_cast<double>(f.holders.size())},
               {"processes_after_kill", static_cast<double>(f.after_kill)}};
  return clean_stop_verdict(r, f, held.size(), server.port());
}

scenario_result run_target_slow_clients(const target_settings& s) {
  scenario_result r{"slow clients", false, "", {}, {}, {}, {}};
  const std::size_t slow = s.fd_limit / 4;  // fewer than any server keeps room for: this is not a limit test
  const target_server server(s);
  if (!server.problem().empty()) {
    return verdict_of(r, "NO START", server.problem());
  }
  note(s, std::to_string(slow) + " idle, half-sent requests from 127.0.0.2");
  const slow_attack_result a = slow_attack(s, server, slow, true, target_threshold::other_address_within);
  double closed = 0;
  for (const auto& fd : a.idle) {
    closed += wait_closed(fd.get(), milliseconds(0)) ? 1 : 0;
  }
  r.figures = {{"slow_clients", static_cast<double>(a.idle.size())},
               {"other_served_ms", a.other_ms},
               {"slow_closed_by_server", closed}};
  if (const auto status = server.exited()) {
    return verdict_of(r, "DEAD", "exited (" + status_text(*status) + ") with slow clients open");
  }
  const std::string open = std::to_string(a.idle.size()) + " slow clients from 127.0.0.2 were open";
  if (a.other != probe_outcome::served) {
    return verdict_of(r, "STARVED",
                      "a client from 127.0.0.3 was not served within " +
                          std::to_string(target_threshold::other_address_within.count()) + " ms (" +
                          std::string(outcome_name(a.other)) + ") while " + open);
  }
  return verdict_of(r, "", "a client from 127.0.0.3 served in " + number_text(a.other_ms) + " ms while " + open);
}

}  // namespace transient::tool
