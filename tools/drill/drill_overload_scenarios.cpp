// The overload scenario: the built-in drill's scenario 9 (serve with a budget of 8 and a 50 ms
// service time) and --target's scenario 6 (any HTTP server, its own service time), both on
// overload_burst (drill_overload.hpp).
#include <signal.h>

#include "drill_overload.hpp"
#include "drill_scenarios.hpp"
#include "drill_steps.hpp"
#include "drill_target.hpp"

namespace transient::tool {
namespace {

using std::chrono::milliseconds;

// The scenario's shape, as issue 24 states it.
constexpr int budget = 8;
constexpr milliseconds service{50};
constexpr milliseconds deadline{1000};

// 1,000 clients; --quick 300, which still overloads a budget serving 160 a second for twice the
// deadline and keeps the scenario within a few seconds.
std::size_t clients_for(bool quick) { return quick ? 300 : 1000; }

// How long late clients are watched: long enough for serve to work through every queued client
// (clients / 160 a second), bounded.
milliseconds watch_for(bool quick) { return quick ? milliseconds(4000) : milliseconds(9000); }

std::string count_text(std::size_t n) { return std::to_string(n); }

// The burst's figures, each name prefixed with `prefix`.
std::vector<figure> burst_figures(const overload_counts& c, const std::string& prefix) {
  const auto n = [](std::size_t v) { return static_cast<double>(v); };
  const bool drops = c.namespace_drops.has_value();
  return {{prefix + "connected", n(c.connected)},
          {prefix + "goodput", n(c.served)},
          {prefix + "answered_in_time", n(c.answered_in_time())},
          {prefix + "refused_503_in_time", n(c.shed)},
          {prefix + "waste", n(c.waste)},
          {prefix + "late_503", n(c.late_shed)},
          {prefix + "dropped", n(c.dropped)},
          {prefix + "refused_connect", n(c.refused)},
          {prefix + "no_answer", n(c.unanswered)},
          {prefix + "netns_listen_overflows", drops ? n(c.namespace_drops->overflows) : NAN},
          {prefix + "netns_listen_drops", drops ? n(c.namespace_drops->drops) : NAN},
          {prefix + "last_answer_s", c.last_answer_s}};
}

// "goodput 161, waste 839, dropped 0, no answer 0 of 1000".
std::string burst_text(const overload_counts& c) {
  return "goodput " + count_text(c.served) + ", 503 in time " + count_text(c.shed) + ", waste " + count_text(c.waste) +
         ", late 503 " + count_text(c.late_shed) + ", dropped " + count_text(c.dropped) + ", no answer " +
         count_text(c.unanswered) + " of " + count_text(c.clients);
}

// One run of serve (the fixture, for its slow response) under the burst.
struct serve_run {
  std::string problem;
  overload_counts counts;
};

serve_run overload_serve(const drill_settings& s, const std::vector<std::string>& args) {
  serve_run run;
  std::vector<std::string> all{"--max-connections", std::to_string(budget), "--slow-response",
                               std::to_string(service.count()) + "ms"};
  all.insert(all.end(), args.begin(), args.end());
  const target_settings t = reference_target(s, serve_program::fixture_serve, all);
  target_server server(t);
  if (!server.problem().empty()) {
    run.problem = "serve did not start: " + server.problem();
    return run;
  }
  overload_plan plan;
  plan.clients = clients_for(s.quick);
  plan.deadline = deadline;
  plan.watch = watch_for(s.quick);
  plan.path = "/slow";
  run.counts = overload_burst(server.at(), plan, s.deadline);
  run.problem = run.counts.problem;
  server.signal(SIGTERM);
  server.process()->wait_exit(std::chrono::seconds(3));
  return run;
}

scenario_result target_verdict(scenario_result r, std::string verdict, std::string detail) {
  r.passed = verdict.empty();
  r.fix = r.passed ? "" : target_fix(verdict);
  r.verdict = verdict.empty() ? "PASS" : std::move(verdict);
  r.detail = std::move(detail);
  return r;
}

}  // namespace

scenario_result run_overload(const drill_settings& s) {
  scenario_result r{"overload", false, "", {}, {}, {}, {}};
  const std::size_t clients = clients_for(s.quick);
  if (s.progress) {
    s.progress(std::to_string(clients) + " clients at once, budget " + std::to_string(budget) + ", " +
               std::to_string(service.count()) + " ms each, deadline " + std::to_string(deadline.count()) + " ms");
  }
  const serve_run unbounded = overload_serve(s, {});
  r.figures = {{"clients", static_cast<double>(clients)},
               {"budget", budget},
               {"service_ms", static_cast<double>(service.count())},
               {"deadline_ms", static_cast<double>(deadline.count())}};
  const auto more = burst_figures(unbounded.counts, "unbounded_");
  r.figures.insert(r.figures.end(), more.begin(), more.end());
  const overload_counts& c = unbounded.counts;
  r.passed = unbounded.problem.empty() && c.connected + c.dropped + c.refused == c.clients;
  r.detail = !unbounded.problem.empty() ? unbounded.problem
             : !r.passed                ? "clients unaccounted for"
                                        : "without a bound on the queue wait: " + burst_text(c);
  return r;
}

scenario_result run_target_overload(const target_settings& s) {
  scenario_result r{"overload", false, "", {}, {}, {}, {}};
  if (s.protocol != target_protocol::http) {
    r.passed = true;
    r.verdict = "N/A";
    r.detail = "needs HTTP (each client's answer and its status): run it without --protocol tcp";
    return r;
  }
  const target_server server(s);
  if (!server.problem().empty()) {
    return target_verdict(r, "NO START", server.problem());
  }
  overload_plan plan;
  plan.clients = clients_for(s.quick);
  plan.deadline = deadline;
  plan.watch = watch_for(s.quick);
  note(s, std::to_string(plan.clients) + " clients at once, GET /, deadline " + std::to_string(deadline.count()) +
              " ms each");
  const overload_counts c = overload_burst(server.at(), plan, s.deadline);
  r.figures = {{"clients", static_cast<double>(plan.clients)}, {"deadline_ms", static_cast<double>(deadline.count())}};
  const auto more = burst_figures(c, "");
  r.figures.insert(r.figures.end(), more.begin(), more.end());
  if (!c.problem.empty()) {
    r.detail = c.problem;
    r.verdict = "FAIL";
    return r;
  }
  if (const auto status = server.exited()) {
    return target_verdict(r, "DEAD",
                          "exited (" + status_text(*status) + ") under " + count_text(c.clients) + " clients");
  }
  // Every connected client is answered in time, after it (waste), or never (unanswered).
  const bool waste = c.waste + c.late_shed > 0;
  const bool unanswered = c.unanswered > 0;
  return target_verdict(r,
                        waste && unanswered ? "WASTE+UNANSWERED"
                        : waste             ? "WASTE"
                        : unanswered        ? "UNANSWERED"
                                            : "",
                        burst_text(c));
}

}  // namespace transient::tool
