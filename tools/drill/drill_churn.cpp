// Drill scenario 7: churn at the descriptor limit. Idle connections hold all but one of the
// descriptors RLIMIT_NOFILE allows, then short clients come one after another: each takes the
// last descriptor, the accept after it fails with EMFILE, and the client's close lets the
// next one in. Every client is served; the log stays at a few lines for the whole churn,
// because the flaps are one episode (policy_events.hpp).
#include <signal.h>

#include <cmath>

#include "drill_client.hpp"
#include "drill_steps.hpp"

namespace transient::tool {

scenario_result run_churn(const drill_settings& s) {
  scenario_result r{"churn at the limit", false, "", {}, {}, {}, {}};
  constexpr int rounds = 2;
  constexpr int clients_per_round = 100;
  // The numbers: a budget above what RLIMIT_NOFILE leaves, so descriptors run out first.
  const target_settings t = reference_target(s, serve_program::serve, {"--max-connections", "100"});
  exhausted_target x;
  start_exhausted(t, x);
  if (!x.problem.empty() || x.held.empty()) {
    r.detail = x.problem.empty() ? "the server never ran out of descriptors" : x.problem;
    return r;
  }
  serve_child& child = *x.server->process();
  const endpoint at = x.server->at();
  std::vector<unique_fd>& idle = x.held;
  unique_fd pending = std::move(x.probe);
  // What serve logs from here to the stop is the churn's: its start-up lines and the first
  // "accept degraded" came before.
  const std::uint64_t lines_before = child.written().stderr_lines;
  // One descriptor free: the waiting client takes it, and the churn the one after.
  idle.erase(idle.begin());
  if (read_response(pending.get(), std::chrono::seconds(5)).rfind("HTTP/1.1 200 OK", 0) != 0) {
    r.detail = "the waiting client was not served after a release";
    return r;
  }
  pending.reset();
  note(t, std::to_string(idle.size()) + " idle connections held; " + std::to_string(rounds) + " rounds of " +
              std::to_string(clients_per_round) + " short clients");
  int served = 0;
  for (int i = 0; i < rounds * clients_per_round && std::chrono::steady_clock::now() < s.deadline; ++i) {
    const unique_fd c = connect_and_request(at);
    if (c && read_response(c.get(), std::chrono::seconds(5)).rfind("HTTP/1.1 200 OK", 0) == 0) {
      ++served;
    }
  }
  const std::uint64_t lines = child.written().stderr_lines - lines_before;
  // serve drains: an idle connection stays open until its next request or the drain timeout,
  // so the drill closes its idle ones, which the churn no longer needs.
  const std::size_t idle_held = idle.size();
  child.send(SIGTERM);
  idle.clear();
  const auto status = child.wait_exit(std::chrono::seconds(5));
  const int clients = rounds * clients_per_round;
  r.figures = {{"idle_held", static_cast<double>(idle_held)},
               {"clients", static_cast<double>(clients)},
               {"served", static_cast<double>(served)},
               {"log_lines", static_cast<double>(lines)},
               {"log_lines_per_100", std::round(1000.0 * static_cast<double>(lines) / clients) / 10.0}};
  r.passed = served == clients && lines <= 2 && status == 0;
  r.detail = served != clients ? "a client was not served"
             : lines > 2       ? "the log grew with the churn: " + std::to_string(lines) + " lines"
             : status != 0     ? "serve did not stop cleanly"
                               : "every client served; the churn logged " + std::to_string(lines) + " lines";
  return r;
}

}  // namespace transient::tool
