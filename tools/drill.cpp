// `transient drill [--quick] [--json] [--svg FILE]`: runs `transient serve` children through
// failure scenarios on loopback and shows what transient does in each; exit 0 only if all pass.
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "command.hpp"
#include "drill_report.hpp"
#include "drill_scenarios.hpp"

namespace transient::tool {
namespace {

constexpr std::string_view drill_help =
    "usage: transient drill [--quick] [--json] [--svg FILE]\n"
    "\n"
    "Runs `transient serve` children (loopback only, RLIMIT_NOFILE 64) through the scenarios\n"
    "and prints a table; exit 0 only if every scenario passed. About 10 s; --quick about 5 s.\n"
    "\n"
    "  1 backpressure             more concurrent clients than the budget: all served, none lost\n"
    "  2 exhaustion and recovery  descriptors run out; a waiting client is served after one\n"
    "                             release (latency over several trials), no CPU spent meanwhile\n"
    "  3 leak                     descriptors leak outside the budget: serve stops as stalled\n"
    "                             within the stall timeout + 1 s, its diagnosis naming the leak\n"
    "  4 naive contrast           the same exhaustion against --policy naive: CPU and log volume\n"
    "  5 port race                16 serve processes hunt one port range: all distinct, verified\n"
    "  6 clean stop               SIGTERM while exhausted: idle connections closed within\n"
    "                             100 ms, a slow response in flight completes (the drain),\n"
    "                             exit within 1 s, no descriptor leaked\n"
    "  7 churn at the limit       idle connections hold all but one descriptor while 200 short\n"
    "                             clients come and go: all served, the log stays a few lines\n"
    "  8 slow clients             one address holds idle connections: with --max-per-peer and\n"
    "                             --header-timeout another address is served within 100 ms\n"
    "                             and the idle ones closed at the timeout; without, it waits\n"
    "\n"
    "  --quick     fewer trials and shorter windows (for CI)\n"
    "  --json      one JSON object on stdout: passed, seconds, scenarios[{name, passed, detail,\n"
    "              figures...}]\n"
    "  --svg FILE  write a chart of scenarios 2 and 4 (live connections, limit, paused\n"
    "              intervals, server CPU) to FILE\n";

int usage_error(const std::string& message) {
  std::cerr << "transient drill: " << message << '\n';
  return exit_usage;
}

// Progress on stderr: one rewritten line on a terminal, plain lines otherwise.
class progress_line {
 public:
  progress_line() : tty_(::isatty(2) == 1) {}
  void show(const std::string& text) {
    if (tty_) {
      std::string line = text.substr(0, 100);
      std::cerr << "\r\033[K" << line << std::flush;
    } else {
      std::cerr << text << '\n';
    }
  }
  void done(const std::string& text) {
    if (tty_) {
      std::cerr << "\r\033[K";
    }
    std::cerr << text << '\n';
  }

 private:
  bool tty_;
};

}  // namespace

int drill(arguments args) {
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
    } else {
      return usage_error("unknown argument '" + std::string(arg) + "' (try 'transient drill --help')");
    }
  }

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
  const auto start = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < scenarios.size(); ++i) {
    const std::string prefix =
        "drill [" + std::to_string(i + 1) + "/" + std::to_string(scenarios.size()) + "] " + scenarios[i].first;
    progress.show(prefix + " ...");
    settings.progress = [&](std::string_view text) { progress.show(prefix + ": " + std::string(text)); };
    scenario_result r;
    try {
      r = scenarios[i].second(settings);
    } catch (const std::exception& e) {
      r = {scenarios[i].first, false, std::string("the drill itself failed: ") + e.what(), {}, {}};
    }
    progress.done(prefix + ": " + (r.passed ? "PASS" : "FAIL") + " (" + r.detail + ")");
    results.push_back(std::move(r));
  }
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
