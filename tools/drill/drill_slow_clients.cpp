// Drill scenario 8, slow clients: one address opens as many idle connections as the budget
// allows and sends nothing (slowloris). With --max-per-peer and --header-timeout a client
// from another address is served at once and the idle ones are closed at the timeout;
// without them the other client waits (the contrast, as in the naive scenario).
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <cmath>

#include "drill_client.hpp"
#include "drill_steps.hpp"

namespace transient::tool {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr int budget = 8;
constexpr int per_peer = 4;

struct attack_result {
  std::string problem;
  int held = 0;                  // idle connections the server kept once it settled
  double other_served_ms = NAN;  // the other address's answer (NAN: none within the window)
  double other_cpu_wait_ms = 0;  // of which serve and the drill waited for a CPU
  double idle_closed_ms = NAN;   // when the last idle connection was closed (NAN: not all were)
};

// Runs serve with `args`, opens `budget` silent connections from 127.0.0.2, then asks from
// 127.0.0.3 (waiting at most `window`); with `wait_for_close`, waits for the idle connections
// to be closed (at most `close_limit` from the first).
attack_result attack(const drill_settings& s, const std::vector<std::string>& args, milliseconds window,
                     bool wait_for_close, milliseconds close_limit) {
  attack_result a;
  const target_settings t = reference_target(s, serve_program::serve, args);
  const target_server server(t);
  if (!server.problem().empty()) {
    a.problem = "serve did not start: " + server.problem();
    return a;
  }
  const slow_attack_result slow = slow_attack(t, server, budget, false, window);
  if (slow.idle.size() != budget) {
    a.problem = "cannot connect from 127.0.0.2";
    return a;
  }
  a.held = static_cast<int>(slow.held);
  a.other_served_ms = slow.other_ms;
  a.other_cpu_wait_ms = slow.other_cpu_wait_ms;
  bool all = wait_for_close;
  for (const auto& fd : slow.idle) {
    const auto left = close_limit - std::chrono::duration_cast<milliseconds>(clock::now() - slow.start);
    all = all && wait_closed(fd.get(), std::max(left, milliseconds(1)));
  }
  a.idle_closed_ms = all ? ms_since(slow.start) : NAN;
  server.signal(SIGTERM);
  server.process()->wait_exit(std::chrono::seconds(3));
  return a;
}

}  // namespace

scenario_result run_slow_clients(const drill_settings& s) {
  scenario_result r{"slow clients", false, "", {}, {}, {}, {}};
  const milliseconds header(s.quick ? 500 : 1000);
  const milliseconds window(s.quick ? 500 : 1000);  // how long the unprotected server is watched
  const std::vector<std::string> common{"--max-connections", std::to_string(budget)};

  note(s, std::to_string(budget) + " silent connections from 127.0.0.2; --max-per-peer " + std::to_string(per_peer) +
              ", --header-timeout " + std::to_string(header.count()) + "ms");
  std::vector<std::string> guarded = common;
  guarded.insert(guarded.end(), {"--max-per-peer", std::to_string(per_peer), "--header-timeout",
                                 std::to_string(header.count()) + "ms"});
  const attack_result with = attack(s, guarded, milliseconds(1000), true, header + milliseconds(1500));

  note(s, "the same without them (the contrast)");
  std::vector<std::string> open = common;
  open.insert(open.end(), {"--header-timeout", "60s"});  // the idle timeout's length: no head limit to speak of
  const attack_result without = attack(s, open, window, false, {});

  const double header_ms = static_cast<double>(header.count());
  r.figures = {{"budget", budget},
               {"max_per_peer", per_peer},
               {"header_timeout_ms", header_ms},
               {"idle_held", static_cast<double>(with.held)},
               {"other_served_ms", with.other_served_ms},
               {"other_cpu_wait_ms", with.other_cpu_wait_ms},
               {"idle_closed_ms", with.idle_closed_ms},
               {"unguarded_idle_held", static_cast<double>(without.held)},
               {"unguarded_other_served", std::isnan(without.other_served_ms) ? 0.0 : 1.0},
               {"unguarded_watched_ms", static_cast<double>(window.count())}};
  // Less the time serve and the drill waited for a CPU: what serve itself took.
  const bool served_fast = with.other_served_ms - with.other_cpu_wait_ms <= 100.0;
  const bool closed_in_time = with.idle_closed_ms >= header_ms * 0.9 && with.idle_closed_ms <= header_ms + 1000.0;
  const bool contrast = without.held == budget && std::isnan(without.other_served_ms);
  r.passed = with.problem.empty() && without.problem.empty() && with.held == per_peer && served_fast &&
             closed_in_time && contrast;
  r.detail = !with.problem.empty()      ? with.problem
             : !without.problem.empty() ? without.problem
             : with.held != per_peer    ? "the per-peer cap kept " + std::to_string(with.held) +
                                           " idle connections, not " + std::to_string(per_peer)
             : !served_fast    ? "the other address was not served within 100 ms (less CPU waits)"
             : !closed_in_time ? "the idle connections were not closed at the header timeout"
             : !contrast       ? "without the limits the other address was served anyway (no contrast)"
                               : "another address served at once, idle ones closed at the header timeout; "
                                 "without the limits it waited";
  return r;
}

}  // namespace transient::tool
