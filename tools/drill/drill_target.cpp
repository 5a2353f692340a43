// `transient drill --target COMMAND`: the command line, the run of the seven scenarios against
// the target and against `transient serve` (the reference), and the report card.
#include "drill_target.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iostream>

#include "command.hpp"

namespace transient::tool {
namespace {

using clock = std::chrono::steady_clock;

// Splits o.restart_text (if given) into o.settings.restart; the problem ("" if none) says why
// it cannot be run.
std::string resolve_restart(target_options& o) {
  if (o.restart_text.empty()) {
    return {};
  }
  std::string problem;
  const auto words = split_words(o.restart_text, problem);
  if (!words) {
    return "--restart: " + problem;
  }
  if (resolve_program(words->front()).empty()) {
    return "--restart: cannot run '" + words->front() + "': not found or not executable";
  }
  o.settings.restart = *words;
  return {};
}

// Splits o.command_text into o.settings.command; the problem ("" if none) says why it
// cannot be run.
std::string resolve_command(target_options& o) {
  std::string problem;
  const auto words = split_words(o.command_text, problem);
  if (!words) {
    return problem;
  }
  o.settings.command = *words;
  o.settings.label = o.settings.command.front().substr(o.settings.command.front().rfind('/') + 1);
  if (resolve_program(words->front()).empty()) {
    return "cannot run '" + words->front() +
           "': " + (words->front().find('/') == std::string::npos ? "not found in PATH" : "no such executable file");
  }
  return resolve_restart(o);
}

// The hint for a command without {port}: the drill cannot tell the server where to listen.
constexpr std::string_view port_hint =
    "transient drill: note: the command has no {port}. The drill picks a free loopback port for each scenario "
    "and writes it where {port} stands; the server must listen on 127.0.0.1 at that port, e.g. "
    "--target 'python3 -m http.server {port} --bind 127.0.0.1'\n";

bool has_port(const std::vector<std::string>& words) {
  return std::any_of(words.begin(), words.end(),
                     [](const std::string& w) { return w.find("{port}") != std::string::npos; });
}

using scenario = scenario_result (*)(const target_settings&);
constexpr std::array<std::pair<const char*, scenario>, 7> all_scenarios{{
    {"exhaustion and recovery", &run_target_exhaustion},
    {"CPU and log while exhausted", &run_target_exhausted_cost},
    {"backpressure", &run_target_backpressure},
    {"clean stop", &run_target_clean_stop},
    {"slow clients", &run_target_slow_clients},
    {"overload", &run_target_overload},
    {"restart", &run_target_restart},
}};

// Runs the chosen scenarios against `s`, with progress lines prefixed by `who`.
std::vector<scenario_result> run_all(target_settings s, const std::vector<int>& chosen, const std::string& who,
                                     progress_line& progress) {
  std::vector<scenario_result> results;
  const std::chrono::seconds bound = target_scenario_bound(s.quick);
  for (std::size_t k = 0; k < chosen.size(); ++k) {
    const auto& [name, run] = all_scenarios.at(static_cast<std::size_t>(chosen[k] - 1));
    const std::string prefix = "drill " + who + " [" + std::to_string(k + 1) + "/" + std::to_string(chosen.size()) +
                               "] scenario " + std::to_string(chosen[k]) + ", " + name;
    progress.begin(prefix + " ...", bound);
    s.deadline = clock::now() + bound;
    s.progress = [&](std::string_view text) { progress.show(prefix + ": " + std::string(text)); };
    scenario_result r;
    try {
      r = run(s);
    } catch (const std::exception& e) {
      r = {name, false, std::string("the drill itself failed: ") + e.what(), {}, {}, "FAIL", {}};
    }
    progress.done(prefix + ": " + (r.verdict.empty() ? (r.passed ? "PASS" : "FAIL") : r.verdict) + " (" + r.detail +
                  ")");
    results.push_back(std::move(r));
  }
  return results;
}

// The drill is a subreaper: what a target forks and orphans becomes the drill's child, so it
// can be reaped, and at the end anything still running that the drill started is killed.
void kill_strays() {
  const pid_t self = ::getpid();
  for (int round = 0; round < 3; ++round) {
    bool found = false;
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    std::ifstream list("/proc/self/task/" + std::to_string(self) + "/children");
    pid_t pid = 0;
    while (list >> pid) {
      ::kill(pid, SIGKILL);
      found = true;
    }
    if (!found) {
      return;
    }
    for (int i = 0; i < 200 && ::waitpid(-1, nullptr, WNOHANG) >= 0; ++i) {
      ::usleep(10000);
    }
  }
}

}  // namespace

int drill_target(target_options o) {
  if (const std::string problem = resolve_command(o); !problem.empty()) {
    std::cerr << "transient drill: " << problem << " (try 'transient drill --help')\n";
    return exit_usage;
  }
  if (!has_port(o.settings.command)) {
    std::cerr << port_hint;
  }
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  progress_line progress;
  const auto start = clock::now();
  drill_card card;
  card.command = o.settings.command;
  card.quick = o.settings.quick;
  card.setup = "RLIMIT_NOFILE " + std::to_string(o.settings.fd_limit) + " (soft and hard), " +
               (o.settings.protocol == target_protocol::http ? "HTTP/1.1 GET /" : "TCP accept") +
               " on 127.0.0.1:{port}, " + (o.settings.quick ? "--quick" : "full") + " run";
  card.thresholds = target_threshold_lines();
  card.numbers = o.scenarios;
  card.target = run_all(o.settings, o.scenarios, "target", progress);
  if (o.reference) {
    target_settings reference = o.settings;
    reference.command = {self_path(), "serve", "--listen", "127.0.0.1:{port}"};
    reference.label = "transient serve";
    reference.log_files.clear();
    if (!reference.restart.empty()) {
      reference.restart = {"kill", "-HUP", "{pid}"};  // serve's in-place upgrade
    }
    card.reference = run_all(reference, o.scenarios, "reference", progress);
  }
  kill_strays();
  card.seconds = std::chrono::duration<double>(clock::now() - start).count();
  std::cout << (o.json ? card_json(card) : card_table(card));
  if (!o.svg_path.empty()) {
    std::vector<scenario_result> charted = card.target;
    charted.insert(charted.end(), card.reference.begin(), card.reference.end());
    std::ofstream out(o.svg_path);
    out << drill_svg(charted);
    if (!out) {
      std::cerr << "transient drill: cannot write " << o.svg_path << '\n';
      return 1;
    }
  }
  return std::all_of(card.target.begin(), card.target.end(), [](const auto& r) { return r.passed; }) ? 0 : 1;
}

}  // namespace transient::tool
