// `transient drill [--quick] [--json] [--svg FILE]`: runs `transient serve` children through
// failure scenarios on loopback and shows what transient does in each; exit 0 only if all pass.
// With `--target COMMAND`, puts any server through five of them instead (drill_target.cpp).
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "command.hpp"
#include "drill_report.hpp"
#include "drill_scenarios.hpp"
#include "drill_target.hpp"

namespace transient::tool {
namespace {

constexpr std::string_view drill_help =
    "usage: transient drill [--quick] [--json] [--svg FILE] [--engine epoll|io_uring]\n"
    "\n"
    "Runs `transient serve` children (loopback only, RLIMIT_NOFILE 64) through the scenarios\n"
    "and prints a table; exit 0 only if every scenario passed. A run takes about 11 s, --quick\n"
    "about 5 s (two busy cores); each scenario shows progress on stderr at least every 5 s and\n"
    "ends within 60 s at most.\n"
    "\n"
    "  1 backpressure             more concurrent clients than the budget: all served, none lost\n"
    "  2 exhaustion and recovery  descriptors run out; a waiting client is served after one\n"
    "                             release, and not before (several trials); serve quiet\n"
    "                             meanwhile: runnable less than half the time, on a CPU < 10 %\n"
    "  3 leak                     descriptors leak outside the budget: serve stops as stalled\n"
    "                             within the stall timeout + 1 s, its diagnosis naming the leak\n"
    "  4 naive contrast           the same exhaustion against a naive loop that re-arms on every\n"
    "                             error: runnable time and log volume (naive: runnable at least\n"
    "                             half the time)\n"
    "  5 port race                16 serve processes hunt one port range: all distinct, verified\n"
    "  6 clean stop               SIGTERM while exhausted: idle connections closed within\n"
    "                             100 ms, a slow response in flight completes (the drain),\n"
    "                             exit within 1 s, no descriptor leaked\n"
    "  7 churn at the limit       idle connections hold all but one descriptor while 200 short\n"
    "                             clients come and go: all served, at most 2 log lines\n"
    "  8 slow clients             one address holds idle connections: with --max-per-peer and\n"
    "                             --header-timeout another address is served within 100 ms\n"
    "                             and the idle ones closed at the timeout; without, it waits\n"
    "\n"
    "Runnable time is a process's time on a CPU or waiting for one (/proc/PID/task/*/schedstat):\n"
    "a loop that spins stays near 100 % however busy the machine, while its CPU share falls; a\n"
    "loop that sleeps stays well under half, its wake-ups' waits for a CPU included.\n"
    "Latencies (100 ms, 1 s) are judged less the time the server and the drill waited for a CPU.\n"
    "Scenarios 3, 4 and 6 also run the test fixture transient-fixture (serve with a leak or a\n"
    "slow response, and the naive loop), which the package installs in /usr/libexec/transient/.\n"
    "\n"
    "  --quick     fewer trials and shorter windows (for CI)\n"
    "  --engine E  the serve children accept with E: epoll (default) or io_uring (serve\n"
    "              --engine; the naive loop of the contrast runs on epoll)\n"
    "  --json      one JSON object on stdout: passed, seconds, scenarios[{name, passed, detail,\n"
    "              fix (when failed), figures...}]\n"
    "  --svg FILE  write a chart of scenarios 2 and 4 on one time axis (live connections, limit,\n"
    "              paused intervals, runnable %, each release and when its client was served)\n"
    "\n"
    "usage: transient drill --target 'COMMAND ... {port}' [--protocol http|tcp] [--ready-timeout D]\n"
    "                       [--log FILE]... [--fd-limit N] [--scenarios LIST] [--no-reference]\n"
    "                       [--quick] [--json] [--svg FILE]\n"
    "\n"
    "Puts any server's accept loop through the drill. COMMAND is split like a shell's words (no\n"
    "shell: quotes and backslashes, no expansion); {port} becomes a free loopback port the drill\n"
    "picked, so the server must take its port from the command: 'python3 -m http.server {port}\n"
    "--bind 127.0.0.1'. The drill starts the server itself, in a process group of its own, with\n"
    "RLIMIT_NOFILE set low (soft and hard), for each scenario, and kills the whole group (and\n"
    "what left it) at the end. The server must answer HTTP/1.1 GET / on 127.0.0.1:{port} (any\n"
    "status), or with --protocol tcp accept. A run with the reference takes about 21 s, --quick\n"
    "about 7 s; each scenario shows progress at least every 5 s and works 40 s at most (--quick\n"
    "20 s), then a few seconds to stop the server.\n"
    "\n"
    "  1 exhaustion and recovery      descriptors filled with held connections, a client waits; one\n"
    "                                 released after a short and a long wait (3 s; --quick 1 s)\n"
    "  2 CPU and log while exhausted  runnable time of the process group (schedstat), its CPU\n"
    "                                 time, and log lines a second\n"
    "  3 backpressure                 4x (--quick 2x) the descriptor limit in clients: none lost\n"
    "  4 clean stop                   SIGTERM with connections open: closed, exited by itself,\n"
    "                                 its port no longer listening, nothing left\n"
    "  5 slow clients                 a quarter of the limit in half-sent requests from\n"
    "                                 127.0.0.2: a client from 127.0.0.3 still served\n"
    "\n"
    "A server that closes each connection after answering (http.server) cannot have its table\n"
    "filled over HTTP (CANNOT FILL): drill it with --protocol tcp, which holds connections that\n"
    "send no request.\n"
    "\n"
    "  --ready-timeout D   how long the server may take to answer after its start (default 5s)\n"
    "  --log FILE          a log file the server writes, counted with its stdout and stderr\n"
    "  --fd-limit N        its RLIMIT_NOFILE (default 64)\n"
    "  --scenarios LIST    only these, each once, such as 1,4 (default 1,2,3,4,5)\n"
    "  --no-reference      skip the same scenarios against `transient serve` (the reference)\n"
    "Verdicts name their thresholds in the report, and each failed one says what to change;\n"
    "exit 0 only if the target passed all, 2 on a usage error (a program that cannot be run).\n";

int usage_error(const std::string& message) {
  std::cerr << "transient drill: " << message << '\n';
  return exit_usage;
}

// Runs the eight scenarios in turn, each with a deadline of its own, showing progress.
std::vector<scenario_result> run_scenarios(drill_settings settings) {
  using scenario = scenario_result (*)(const drill_settings&);
  const std::vector<std::pair<std::string, scenario>> scenarios{{"backpressure", &run_backpressure},
                                                                {"exhaustion and recovery", &run_exhaustion},
                                                                {"leak", &run_leak},
                                                                {"naive contrast", &run_naive_contrast},
                                                                {"port race", &run_port_race},
                                                                {"clean stop", &run_clean_stop},
                                                                {"churn at the limit", &run_churn},
                                                                {"slow clients", &run_slow_clients}};
  progress_line progress;
  std::vector<scenario_result> results;
  for (std::size_t i = 0; i < scenarios.size(); ++i) {
    const std::string prefix =
        "drill [" + std::to_string(i + 1) + "/" + std::to_string(scenarios.size()) + "] " + scenarios[i].first;
    progress.begin(prefix + " ...", drill_scenario_bound);
    settings.deadline = std::chrono::steady_clock::now() + drill_scenario_bound / 2;
    settings.progress = [&](std::string_view text) { progress.show(prefix + ": " + std::string(text)); };
    scenario_result r;
    bool no_fixture = false;
    try {
      r = scenarios[i].second(settings);
    } catch (const fixture_missing& e) {
      r = {scenarios[i].first, false, e.what(), {}, {}, {}, {}};
      no_fixture = true;
    } catch (const std::exception& e) {
      r = {scenarios[i].first, false, std::string("the drill itself failed: ") + e.what(), {}, {}, {}, {}};
    }
    if (!r.passed) {
      r.fix = no_fixture ? "install transient-fixture with the drill: the package ships it in "
                           "/usr/libexec/transient/; a build tree builds it beside transient (target "
                           "transient_fixture)"
                         : "transient failed its own scenario: run the drill again on a quieter machine; if it "
                           "fails again, report it with the output of 'transient drill --json'";
    }
    progress.done(prefix + ": " + (r.passed ? "PASS" : "FAIL") + " (" + r.detail + ")");
    results.push_back(std::move(r));
  }
  return results;
}

}  // namespace

int drill(arguments args) {
  if (std::find(args.begin(), args.end(), "--target") != args.end()) {
    return drill_target(std::vector<std::string_view>(args.begin(), args.end()));
  }
  drill_settings settings;
  bool json = false;
  std::string svg_path;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << drill_help;
      return 0;
    }
    if (arg == "--quick") {
      settings.quick = true;
    } else if (arg == "--json") {
      json = true;
    } else if (arg == "--svg") {
      if (i + 1 >= args.size() || args[i + 1].empty()) {
        return usage_error("--svg needs a FILE (try 'transient drill --help')");
      }
      svg_path = std::string(args[++i]);
    } else if (arg == "--engine") {
      const std::string_view engine = i + 1 < args.size() ? args[i + 1] : std::string_view();
      if (engine != "epoll" && engine != "io_uring") {
        return usage_error("--engine needs epoll or io_uring (try 'transient drill --help')");
      }
      set_serve_engine(std::string(args[++i]));
    } else {
      return usage_error("unknown argument '" + std::string(arg) + "' (try 'transient drill --help')");
    }
  }

  const auto start = std::chrono::steady_clock::now();
  const std::vector<scenario_result> results = run_scenarios(settings);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (json) {
    std::cout << drill_json(results, seconds, settings.quick);
  } else {
    std::cout << drill_table(results, seconds);
  }
  if (!svg_path.empty()) {
    std::ofstream out(svg_path);
    out << drill_svg(results);
    if (!out) {
      std::cerr << "transient drill: cannot write " << svg_path << '\n';
      return 1;
    }
  }
  for (const auto& r : results) {
    if (!r.passed) {
      return 1;
    }
  }
  return 0;
}

}  // namespace transient::tool
