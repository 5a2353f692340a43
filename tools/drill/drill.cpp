// `transient drill [--quick] [--json] [--svg FILE]`: runs `transient serve` children through
// failure scenarios on loopback and shows what transient does in each; exit 0 only if all pass.
// With `--target COMMAND`, puts any server through seven of them instead (drill_target.cpp).
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include "command.hpp"
#include "drill_fleet.hpp"
#include "drill_report.hpp"
#include "drill_scenarios.hpp"
#include "drill_target.hpp"
#include "options.hpp"
#include "serve/serve_options.hpp"

namespace transient::tool {
namespace {

constexpr std::string_view drill_text =
    "usage: transient drill [--quick] [--json] [--svg FILE] [--engine epoll|io_uring] [--scenarios LIST]\n"
    "       transient drill --target 'COMMAND ... {port}' [--protocol http|tcp] [--ready-timeout D]\n"
    "                       [--log FILE]... [--fd-limit N] [--restart 'CMD'] [--scenarios LIST]\n"
    "                       [--no-reference]"
    "                       [--quick] [--json] [--svg FILE]\n"
    "\n"
    "Runs `transient serve` children (loopback only, RLIMIT_NOFILE 64) through the scenarios\n"
    "and prints a table; exit 0 only if every scenario passed. A run takes about 40 s, --quick\n"
    "about 30 s (two busy cores; scenario 11 about 19 s of each); each scenario shows progress\n"
    "on stderr at least every 5 s and ends within 60 s at most. --scenarios 1,9 runs only those.\n"
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
    "  6 clean stop               SIGTERM while exhausted: idle connections, each sending its\n"
    "                             next request, closed within 100 ms, a slow response in\n"
    "                             flight completes (the drain), exit within 1 s, no\n"
    "                             descriptor leaked\n"
    "  7 churn at the limit       idle connections hold all but one descriptor while 200 short\n"
    "                             clients come and go: all served, at most 2 log lines\n"
    "  8 slow clients             one address holds idle connections: with --max-per-peer and\n"
    "                             --header-timeout another address is served within 100 ms\n"
    "                             and the idle ones closed at the timeout; without, it waits\n"
    "  9 overload                 1,000 clients (--quick 300) at once, each giving up after 1 s,\n"
    "                             against a budget of 8, a backlog of 256 and a 50 ms response,\n"
    "                             without and with --max-queue-wait 500ms: answered in time\n"
    "                             (goodput), after the client had gone (waste), connect dropped\n"
    "                             (ListenOverflows, machine-wide); with the bound no waste, every\n"
    "                             connected client answered (200 or 503) in time, /readyz 503\n"
    "                             within 100 ms of the queue passing half its limit\n"
    " 10 restart                  short and keep-alive requests without pause while serve\n"
    "                             upgrades in place (SIGHUP) 20 times (--quick 5): none refused,\n"
    "                             reset or unanswered, no descriptor or old process left, the\n"
    "                             handover's median and max; then stopped and started again on\n"
    "                             the same port as often, its losses shown beside it\n"
    " 11 fleet                    three serve instances behind a real HAProxy (/usr/sbin/haproxy),\n"
    "                             client requests through it without pause while one leaks until\n"
    "                             it stalls (and starts again), one is held at its budget, one\n"
    "                             upgrades in place: with the documented agent check no client\n"
    "                             error, the leaking and the full one out of rotation within 2\n"
    "                             check intervals; /readyz checks' and a plain TCP check's errors\n"
    "                             and slow requests beside\n"
    "\n"
    "Runnable time is a process's time on a CPU or waiting for one (/proc/PID/task/*/schedstat):\n"
    "a loop that spins stays near 100 % however busy the machine, while its CPU share falls; a\n"
    "loop that sleeps stays well under half, its wake-ups' waits for a CPU included.\n"
    "Latencies (100 ms, 1 s) are judged less the time the server and the drill waited for a CPU.\n"
    "Scenarios 3, 4, 6, 9 and 11 also run the test fixture transient-fixture (serve with a leak\n"
    "or a slow response, and the naive loop), which the package installs in /usr/libexec/transient/.\n"
    "Scenario 11 runs HAProxy (/usr/sbin/haproxy) as a plain child with its own configuration and\n"
    "files in a temporary folder, never the system service, and fails saying so without it.\n"
    "Scenario 9 (and --target's 6) raises the drill's own RLIMIT_NOFILE soft limit to its hard\n"
    "limit for its clients (the serve children keep 64), and fails saying so if that is too low.\n"
    "\n"
    "With --target, puts any server's accept loop through the drill instead. COMMAND is split\n"
    "like a shell's words (no shell: quotes and backslashes, no expansion); {port} becomes a free\n"
    "loopback port the drill picked, so the server must take its port from the command:\n"
    "'python3 -m http.server {port} --bind 127.0.0.1'. The drill starts the server itself, in a\n"
    "process group of its own, with RLIMIT_NOFILE set low (soft and hard), for each scenario,\n"
    "and kills the whole group (and what left it) at the end. The server must answer HTTP/1.1\n"
    "GET / on 127.0.0.1:{port} (any status), or with --protocol tcp accept. A run with the\n"
    "reference takes about 21 s, --quick about 7 s; each scenario shows progress at least every\n"
    "5 s and works 40 s at most (--quick 20 s), then a few seconds to stop the server.\n"
    "\n"
    "  1 exhaustion and recovery      descriptors filled with held connections, a client waits; one\n"
    "                                 released after a short and a long wait (3 s; --quick 1 s)\n"
    "  2 CPU and log while exhausted  runnable time of the process group (schedstat), its CPU\n"
    "                                 time, and log lines a second\n"
    "  3 backpressure                 4x (--quick 2x) the descriptor limit in clients: none lost\n"
    "  4 clean stop                   SIGTERM with connections open (over HTTP each sends its\n"
    "                                 next request): closed, exited by itself, its port no\n"
    "                                 longer listening, nothing left\n"
    "  5 slow clients                 a quarter of the limit in half-sent requests from\n"
    "                                 127.0.0.2: a client from 127.0.0.3 still served\n"
    "  6 overload                     1,000 clients (--quick 300) GET / at once, each giving up\n"
    "                                 after 1 s: none answered after its client had gone\n"
    "                                 (waste), none left unanswered; goodput and connects the\n"
    "                                 kernel dropped shown (HTTP only)\n"
    "  7 restart                      with --restart 'CMD': short and keep-alive requests without\n"
    "                                 pause while CMD runs 20 times (--quick 5), {pid} the server's\n"
    "                                 pid and {port} its port: none refused, reset or unanswered, no\n"
    "                                 descriptor left by the listening processes (HTTP only; the\n"
    "                                 reference runs 'kill -HUP {pid}'); without it, skipped\n"
    "\n"
    "A server that closes each connection after answering (http.server) cannot have its table\n"
    "filled over HTTP (CANNOT FILL): drill it with --protocol tcp, which holds connections that\n"
    "send no request.\n";

constexpr std::string_view drill_footer =
    "Verdicts name their thresholds in the report, and each failed one says what to change;\n"
    "exit 0 only if every scenario (or the target) passed, 2 on a usage error (a program that\n"
    "cannot be run).";

// What drill's command line asks, in either mode.
struct drill_request {
  drill_settings settings;     // the built-in scenarios
  target_options target;       // --target; its quick, json and svg_path are the options below
  std::string engine;          // --engine ("": serve's default)
  std::string scenarios_text;  // --scenarios as given ("": all)
};

// The scenarios of each mode: the built-in drill's, and --target's.
constexpr int builtin_scenarios = 11;
constexpr int target_scenarios = 7;

// One number of a scenario list: 1 to `last`, decimal digits without a leading zero; 0 on
// anything else.
int scenario_number(std::string_view word, int last) {
  if (word.empty() || word.size() > 2 || word.front() == '0' ||
      !std::all_of(word.begin(), word.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return 0;
  }
  const int n = std::stoi(std::string(word));
  return n <= last ? n : 0;
}

// "1,4,10": numbers 1 to `last`, each once, separated by single commas; empty on anything else.
std::vector<int> parse_scenario_list(std::string_view text, int last) {
  std::vector<int> out;
  std::size_t from = 0;
  while (true) {
    const std::size_t comma = text.find(',', from);
    const int n = scenario_number(text.substr(from, comma - from), last);
    if (n == 0 || std::find(out.begin(), out.end(), n) != out.end()) {
      return {};
    }
    out.push_back(n);
    if (comma == std::string_view::npos) {
      return out;
    }
    from = comma + 1;
  }
}

// The options of both modes: --quick, --json and --svg.
void add_common_options(CLI::App& table, drill_request& r) {
  add_flag(table, "--quick", r.settings.quick, "fewer trials and shorter windows (for CI)");
  add_flag(table, "--json", r.target.json,
           "one JSON object on stdout: passed, seconds, scenarios[{name, passed, detail,\nfix (when failed), "
           "figures...}]");
  add_value(table, "--svg", "FILE",
            "write a chart of scenarios 2 and 4 on one time axis (live connections, limit,\npaused intervals, "
            "runnable %, each release and when its client was served)",
            [&r](const std::string& v) {
              if (v.empty()) {
                refuse("--svg needs a FILE (try 'transient drill --help')");
              }
              r.target.svg_path = v;
            });
}

// The options of --target, each of which needs it; --engine is the built-in scenarios'.
void add_target_options(CLI::App& table, drill_request& r) {
  target_settings& t = r.target.settings;
  CLI::Option* target = add_value(table, "--target", "COMMAND", "the server to drill, with {port} where its port goes",
                                  [&r](const std::string& v) { r.target.command_text = v; });
  add_value(table, "--engine", "E",
            "the serve children accept with E: epoll (default) or io_uring (serve\n--engine; the naive loop of the "
            "contrast runs on epoll)",
            [&r](const std::string& v) {
              if (v != "epoll" && v != "io_uring") {
                refuse("--engine needs epoll or io_uring (try 'transient drill --help')");
              }
              r.engine = v;
            })
      ->excludes(target);
  add_value(table, "--protocol", "http|tcp", "with tcp, the server need only accept (default http)",
            [&t](const std::string& v) {
              if (v != "http" && v != "tcp") {
                refuse("--protocol is http or tcp, not " + in_quotes(v));
              }
              t.protocol = v == "tcp" ? target_protocol::tcp : target_protocol::http;
            })
      ->needs(target);
  add_value(table, "--ready-timeout", "D", "how long the server may take to answer after its start (default 5s)",
            [&t](const std::string& v) {
              const auto d = parse_duration(v);
              if (!d || d->count() <= 0) {
                refuse("--ready-timeout needs a duration such as 5s or 500ms, not " + in_quotes(v));
              }
              t.ready_timeout = *d;
            })
      ->needs(target);
  table
      .add_option_function<std::vector<std::string>>(
          "--log", [&t](const std::vector<std::string>& v) { t.log_files = v; },
          "a log file the server writes, counted with its stdout and stderr\n(repeatable)")
      ->type_name("FILE")
      ->allow_extra_args(false)
      ->needs(target);
  add_value(table, "--fd-limit", "N", "its RLIMIT_NOFILE, 16 to 4096 (default 64)", [&t](const std::string& v) {
    const long n = std::strtol(v.c_str(), nullptr, 10);
    if (n < 16 || n > 4096) {
      refuse("--fd-limit is a number from 16 to 4096, not " + in_quotes(v));
    }
    t.fd_limit = static_cast<std::uint64_t>(n);
  })->needs(target);
  add_value(table, "--restart", "CMD",
            "scenario 7: the command that restarts the server, run 20 times (--quick 5)\nunder load, {pid} and "
            "{port} replaced (split like COMMAND, no shell)",
            [&r](const std::string& v) { r.target.restart_text = v; })
      ->needs(target);
  table
      .add_flag_callback(
          "--no-reference", [&r] { r.target.reference = false; },
          "skip the same scenarios against `transient serve` (the reference)")
      ->needs(target);
}

// --scenarios, in either mode; checked against the mode's scenarios once the mode is known.
void add_scenarios_option(CLI::App& table, drill_request& r) {
  add_value(table, "--scenarios", "LIST",
            "only these, each once, such as 1,4 (default: all; 1 to 11, with --target 1 to 7)",
            [&r](const std::string& v) { r.scenarios_text = v; });
}

int usage_error(const std::string& message) {
  std::cerr << "transient drill: " << message << '\n';
  return exit_usage;
}

// drill's option table: both modes' options, the ones of --target in a group of their own.
std::unique_ptr<CLI::App> drill_table(drill_request& r) {
  auto table = make_table("transient drill", std::string(drill_text), std::string(drill_footer));
  add_common_options(*table, r);
  add_target_options(*table, r);
  add_scenarios_option(*table, r);
  for (const char* name :
       {"--target", "--protocol", "--ready-timeout", "--log", "--fd-limit", "--restart", "--no-reference"}) {
    table->get_option(name)->group("With --target");
  }
  return table;
}

// A built-in scenario: its rows of the table (most have one; restart has two).
using builtin_scenario = std::vector<scenario_result> (*)(const drill_settings&);

// A scenario of one row as a builtin_scenario.
template <scenario_result (*run)(const drill_settings&)>
std::vector<scenario_result> one_row(const drill_settings& s) {
  return {run(s)};
}

// The built-in scenarios, in their numbers' order.
const std::array<std::pair<const char*, builtin_scenario>, builtin_scenarios> all_builtin{{
    {"backpressure", &one_row<&run_backpressure>},
    {"exhaustion and recovery", &one_row<&run_exhaustion>},
    {"leak", &one_row<&run_leak>},
    {"naive contrast", &one_row<&run_naive_contrast>},
    {"port race", &one_row<&run_port_race>},
    {"clean stop", &one_row<&run_clean_stop>},
    {"churn at the limit", &one_row<&run_churn>},
    {"slow clients", &one_row<&run_slow_clients>},
    {"overload", &one_row<&run_overload>},
    {"restart", &run_restart},
    {"fleet", &run_fleet},
}};

// Runs `scenario`; a failure of the drill itself (or a missing fixture) is its one failed row.
std::vector<scenario_result> run_rows(const std::pair<std::string, builtin_scenario>& scenario,
                                      const drill_settings& settings) {
  std::vector<scenario_result> rows;
  bool no_fixture = false;
  try {
    rows = scenario.second(settings);
  } catch (const fixture_missing& e) {
    rows = {{scenario.first, false, e.what(), {}, {}, {}, {}}};
    no_fixture = true;
  } catch (const std::exception& e) {
    rows = {{scenario.first, false, std::string("the drill itself failed: ") + e.what(), {}, {}, {}, {}}};
  }
  for (auto& r : rows) {
    if (!r.passed && r.fix.empty()) {
      r.fix = no_fixture ? "install transient-fixture with the drill: the package ships it in "
                           "/usr/libexec/transient/; a build tree builds it beside transient (target "
                           "transient_fixture)"
                         : "transient failed its own scenario: run the drill again on a quieter machine; if it "
                           "fails again, report it with the output of 'transient drill --json'";
    }
  }
  return rows;
}

// "PASS (detail)" for one row, "PASS; FAIL (detail; detail)" for several.
std::string rows_text(const std::vector<scenario_result>& rows) {
  std::string words;
  std::string details;
  for (const auto& r : rows) {
    words += (words.empty() ? "" : "; ") + (r.passed ? std::string("PASS") : std::string("FAIL"));
    details += (details.empty() ? "" : "; ") + r.detail;
  }
  return words + " (" + details + ")";
}

// Runs the built-in scenarios numbered `chosen` against `transient serve` children.
int drill_builtin(drill_settings settings, const target_options& output, const std::vector<int>& chosen) {
  std::vector<std::pair<std::string, builtin_scenario>> scenarios;
  for (const int n : chosen) {
    scenarios.emplace_back(all_builtin.at(static_cast<std::size_t>(n - 1)));
  }
  progress_line progress;
  std::vector<scenario_result> results;
  std::vector<int> numbers;  // each row's scenario number
  const auto start = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < scenarios.size(); ++i) {
    const std::string prefix =
        "drill [" + std::to_string(i + 1) + "/" + std::to_string(scenarios.size()) + "] " + scenarios[i].first;
    progress.begin(prefix + " ...", drill_scenario_bound);
    settings.deadline = std::chrono::steady_clock::now() + drill_scenario_bound / 2;
    settings.progress = [&](std::string_view text) { progress.show(prefix + ": " + std::string(text)); };
    std::vector<scenario_result> rows = run_rows(scenarios[i], settings);
    progress.done(prefix + ": " + rows_text(rows));
    for (auto& r : rows) {
      numbers.push_back(chosen[i]);
      results.push_back(std::move(r));
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (output.json) {
    std::cout << drill_json(results, seconds, settings.quick);
  } else {
    std::cout << drill_table(results, seconds, numbers);
  }
  if (!output.svg_path.empty()) {
    std::ofstream out(output.svg_path);
    out << drill_svg(results);
    if (!out) {
      std::cerr << "transient drill: cannot write " << output.svg_path << '\n';
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

}  // namespace

int drill(arguments args) {
  drill_request r;
  const auto table = drill_table(r);
  const table_outcome parsed = parse_table(*table, args);
  if (parsed.help) {
    return 0;
  }
  if (!parsed.problem.empty() || !parsed.extras.empty()) {
    return usage_error(parsed.problem.empty() ? "unexpected argument " + in_quotes(parsed.extras.front()) +
                                                    " (try 'transient drill --help')"
                                              : parsed.problem);
  }
  const bool target = table->count("--target") > 0;
  const int last = target ? target_scenarios : builtin_scenarios;
  std::vector<int> chosen(static_cast<std::size_t>(last));
  std::iota(chosen.begin(), chosen.end(), 1);
  if (!r.scenarios_text.empty() || table->count("--scenarios") > 0) {
    chosen = parse_scenario_list(r.scenarios_text, last);
  }
  if (chosen.empty()) {
    return usage_error("--scenarios is a list of numbers 1 to " + std::to_string(last) +
                       ", each once, separated by commas, such as 1,4; not " + in_quotes(r.scenarios_text) +
                       " (try 'transient drill --help')");
  }
  if (target) {
    r.target.settings.quick = r.settings.quick;
    r.target.scenarios = chosen;
    return drill_target(std::move(r.target));
  }
  set_serve_engine(r.engine);
  return drill_builtin(r.settings, r.target, chosen);
}

}  // namespace transient::tool
