// The five scenarios of `transient drill --target` (see drill_target.hpp). Each starts its own
// target, is bounded in count and time, and names its verdict after the thresholds.
#include <dirent.h>
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
#include "drill_scenarios.hpp"
#include "drill_target.hpp"
#include "transient/listener.hpp"

namespace transient::tool {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// No answer this long, and no sign either way (not_accepting): the target no longer accepts.
constexpr milliseconds answer_bound{2000};
constexpr milliseconds connect_bound{1000};

double ms_since(clock::time_point t) { return std::chrono::duration<double, std::milli>(clock::now() - t).count(); }

void note(const target_settings& s, const std::string& text) {
  if (s.progress) {
    s.progress(text);
  }
}

scenario_result verdict_of(scenario_result r, std::string verdict, std::string detail, std::string fix = {}) {
  r.passed = verdict.empty();
  r.fix = r.passed ? "" : fix.empty() ? target_fix(verdict) : std::move(fix);
  r.verdict = verdict.empty() ? "PASS" : std::move(verdict);
  r.detail = std::move(detail);
  return r;
}

std::string status_text(int status) {
  return status > 128 ? "killed by signal " + std::to_string(status - 128) : "exit status " + std::to_string(status);
}

double median(std::vector<double> v) {
  if (v.empty()) {
    return NAN;
  }
  std::sort(v.begin(), v.end());
  return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

int open_descriptors(pid_t pid) {
  DIR* dir = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (dir == nullptr) {
    return -1;
  }
  int count = 0;
  while (const dirent* entry = ::readdir(dir)) {
    count += entry->d_name[0] != '.' ? 1 : 0;
  }
  ::closedir(dir);
  return count;
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

// A started target whose descriptors the drill filled: answered connections held, the next
// client (the probe) not taken (not_accepting, or no answer within answer_bound), or reset or
// closed at once.
struct exhausted_target {
  std::unique_ptr<target_server> server;
  std::vector<unique_fd> held;
  std::atomic<int> live{0};
  unique_fd probe;
  probe_outcome probe_state = probe_outcome::waiting;
  int peak_descriptors = -1;  // the most any process of the target had open while filling
  std::string verdict;        // set with problem
  std::string problem;
  std::string fix;  // with problem, when the verdict's usual fix does not fit
};

// What the target does with the client on `fd`: the outcome, or waiting as soon as the target
// is seen not accepting it, or after answer_bound.
probe_outcome fill_outcome(const target_settings& s, const exhausted_target& x, int fd) {
  const auto& at = x.server->at();
  const auto deadline = std::min(clock::now() + answer_bound, s.deadline);
  while (clock::now() < deadline) {
    const probe_outcome o = await_outcome(fd, at, s.protocol, milliseconds(5));
    if (o != probe_outcome::waiting) {
      return o;
    }
    if (drill_detail::not_accepting(*x.server->process(), at.port(), s.fd_limit)) {
      return probe_outcome::waiting;
    }
  }
  return probe_outcome::waiting;
}

// The held connections that the target has closed since it answered them.
std::size_t closed_by_target(const std::vector<unique_fd>& held) {
  return static_cast<std::size_t>(std::count_if(
      held.begin(), held.end(), [](const unique_fd& fd) { return wait_closed(fd.get(), milliseconds(0)); }));
}

// Why the table could not be filled: the target closed what it answered, or the limit did not bind.
void not_filled(const target_settings& s, exhausted_target& x, std::size_t answered) {
  const std::size_t closed = closed_by_target(x.held);
  const std::string peak = x.peak_descriptors < 0 ? "?" : std::to_string(x.peak_descriptors);
  if (closed * 2 >= x.held.size() && !x.held.empty()) {
    x.verdict = "CANNOT FILL";
    x.problem = "the server closed " + std::to_string(closed) + " of the " + std::to_string(x.held.size()) +
                " connections it answered (it does not keep connections: at most " + peak +
                " descriptors open at once), so the drill could not fill its descriptor table (RLIMIT_NOFILE " +
                std::to_string(s.fd_limit) + ")";
    x.fix = s.protocol == target_protocol::http
                ? "to drill a server that closes each connection after answering, run the drill with --protocol tcp: "
                  "it then holds connections that send no request, which the server keeps open while it waits"
                : "the server closes connections that send nothing: the drill cannot hold its descriptors";
    return;
  }
  x.verdict = clock::now() >= s.deadline ? "CANNOT FILL" : "NO LIMIT";
  x.problem = clock::now() >= s.deadline
                  ? "the scenario's time ran out after " + std::to_string(answered) +
                        " answered connections, before the server's descriptors ran out (at most " + peak + " open)"
                  : "still serving after " + std::to_string(answered) + " held connections (at most " + peak +
                        " descriptors open in one process): RLIMIT_NOFILE " + std::to_string(s.fd_limit) +
                        " did not bind";
}

// Opens clients one at a time until one is not served: it becomes the probe.
void fill(const target_settings& s, exhausted_target& x) {
  const auto& at = x.server->at();
  const std::size_t cap = s.fd_limit + 64;
  int slow_answers = 0;  // accepted, unanswered clients in a row
  std::size_t answered = 0;
  for (std::size_t i = 0; i < cap && clock::now() < s.deadline; ++i) {
    unique_fd fd = connect_bounded(at, connect_bound, std::nullopt, s.protocol == target_protocol::http);
    const probe_outcome o = fd ? fill_outcome(s, x, fd.get()) : probe_outcome::reset;
    x.peak_descriptors = std::max(x.peak_descriptors, x.server->process()->max_open_descriptors());
    if (const auto status = x.server->exited()) {
      x.verdict = "DEAD";
      x.problem = "exited (" + status_text(*status) + ") as its descriptors ran out, at " +
                  std::to_string(x.held.size()) + " connections";
      return;
    }
    // Accepted but not answered yet (a loop that sleeps after accepting, as the next accept
    // failed on the full table even with no client queued): the target has it; go on.
    if (o == probe_outcome::waiting && slow_answers < 4 && listen_queue_length(at.port()) == 0) {
      ++slow_answers;
      x.held.push_back(std::move(fd));
      x.live.fetch_add(1);
      continue;
    }
    if (o != probe_outcome::served) {
      x.probe = std::move(fd);
      x.probe_state = o;
      return;
    }
    slow_answers = 0;
    ++answered;
    x.held.push_back(std::move(fd));
    x.live.fetch_add(1);
  }
  not_filled(s, x, answered);
}

void start_exhausted(const target_settings& s, exhausted_target& x) {
  x.server = std::make_unique<target_server>(s);
  if (!x.server->problem().empty()) {
    x.verdict = "NO START";
    x.problem = x.server->problem();
    return;
  }
  fill(s, x);
}

// One trial's result: what became of the probe, and the recovery after the release.
struct trial {
  probe_outcome probe = probe_outcome::waiting;
  std::optional<double> recovery_ms;  // a client (the probe, or a new one) served after the release
  double cpu_wait_ms = 0;             // of which the target and the drill waited for a CPU
  release_mark mark;                  // for the chart
};

trial run_trial(const target_settings& s, exhausted_target& x, milliseconds wait, const drill_detail::sampler& clock0) {
  trial t;
  const auto& at = x.server->at();
  if (x.probe_state == probe_outcome::waiting) {
    x.probe_state = await_outcome(x.probe.get(), at, s.protocol, wait);
  } else {
    std::this_thread::sleep_for(wait);
  }
  t.probe = x.probe_state;
  if (t.probe == probe_outcome::served) {  // served with no release: the target freed something itself
    t.recovery_ms = 0;
    x.held.push_back(std::move(x.probe));
    return t;
  }
  const drill_detail::cpu_wait waited(*x.server->process());
  const auto released = clock::now();
  x.held.erase(x.held.begin());  // the target's descriptor for it frees once it sees the close
  x.live.fetch_sub(1);
  t.mark.released = clock0.at(released);
  unique_fd client = std::move(x.probe);
  if (t.probe != probe_outcome::waiting) {  // the probe was dropped: does a new client get in?
    client = connect_bounded(at, connect_bound, std::nullopt, s.protocol == target_protocol::http);
  }
  const probe_outcome o = client ? await_outcome(client.get(), at, s.protocol, target_threshold::stuck_after_release)
                                 : probe_outcome::reset;
  if (t.probe == probe_outcome::waiting) {
    t.probe = o;
  }
  if (o == probe_outcome::served) {
    const auto served = clock::now();
    t.recovery_ms = std::chrono::duration<double, std::milli>(served - released).count();
    t.cpu_wait_ms = std::min(waited.ms(), *t.recovery_ms);
    t.mark.served = clock0.at(served);
    t.mark.latency_ms = *t.recovery_ms;
    x.held.push_back(std::move(client));
    x.live.fetch_add(1);
  }
  return t;
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
  std::vector<trial> trials;
  std::vector<double> recoveries;
  std::vector<double> own;  // recoveries less the time the target and the drill waited for a CPU
  std::string verdict;
  std::string detail;
  std::string fix;
  for (std::size_t i = 0; i < waits.size() && verdict.empty(); ++i) {
    note(s, "trial " + std::to_string(i + 1) + "/" + std::to_string(waits.size()) + ": release one after " +
                std::to_string(waits[i].count()) + " ms exhausted");
    if (clock::now() >= s.deadline) {
      verdict = "CANNOT FILL";
      detail = "the scenario's time ran out before trial " + std::to_string(i + 1);
      break;
    }
    if (i > 0 && !x.probe) {
      fill(s, x);  // the next probe: exhausted again
    }
    if (!x.problem.empty()) {
      verdict = x.verdict;
      detail = "trial " + std::to_string(i + 1) + ": " + x.problem;
      fix = x.fix;
      break;
    }
    trials.push_back(run_trial(s, x, waits[i], samples));
    if (const auto status = x.server->exited()) {
      verdict = "DEAD";
      detail = "exited (" + status_text(*status) + ") while its descriptors were exhausted";
    } else if (!trials.back().recovery_ms) {
      verdict = "STUCK";
      detail = "trial " + std::to_string(i + 1) + ": no client served within " +
               std::to_string(target_threshold::stuck_after_release.count()) + " ms of a release (the waiting client " +
               std::string(outcome_name(trials.back().probe)) + ")";
    } else {
      recoveries.push_back(*trials.back().recovery_ms);
      own.push_back(*trials.back().recovery_ms - trials.back().cpu_wait_ms);
    }
  }
  const double worst = recoveries.empty() ? NAN : *std::max_element(recoveries.begin(), recoveries.end());
  const double worst_own = own.empty() ? NAN : *std::max_element(own.begin(), own.end());
  std::vector<release_mark> marks;
  for (const auto& t : trials) {
    if (t.mark.released > 0) {
      marks.push_back(t.mark);
    }
  }
  const auto count = [&](probe_outcome o) {
    return static_cast<double>(
        std::count_if(trials.begin(), trials.end(), [&](const trial& t) { return t.probe == o; }));
  };
  r.figures = {{"connections_at_exhaustion", exhausted_at},
               {"trials", static_cast<double>(trials.size())},
               {"long_wait_ms", static_cast<double>(long_wait.count())},
               {"recovery_median_ms", median(recoveries)},
               {"recovery_max_ms", worst},
               {"recovery_max_own_ms", worst_own},
               {"probes_served", count(probe_outcome::served)},
               {"probes_reset", count(probe_outcome::reset)},
               {"probes_closed", count(probe_outcome::closed)},
               {"probes_waiting", count(probe_outcome::waiting)}};
  r.charts.push_back({"exhaustion and recovery: " + s.label + ", RLIMIT_NOFILE " + std::to_string(s.fd_limit),
                      exhausted_at,
                      "exhausted (" + std::to_string(static_cast<int>(exhausted_at)) + " connections)",
                      samples.finish(),
                      {},
                      std::move(marks)});
  // Judged less CPU waits: on a loaded machine a prompt server waits for a CPU like any other.
  if (verdict.empty() && worst_own > static_cast<double>(target_threshold::late_recovery.count())) {
    verdict = "LATE";
  }
  return verdict_of(r, verdict, detail.empty() ? recovery_detail(trials, worst, worst_own) : detail, fix);
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
  constexpr milliseconds hold{20};  // each client keeps its connection this long after its answer
  const target_server server(s);
  if (!server.problem().empty()) {
    return verdict_of(r, "NO START", server.problem());
  }
  note(s, std::to_string(clients) + " clients at once, RLIMIT_NOFILE " + std::to_string(s.fd_limit));
  const auto start = clock::now();
  struct client {
    unique_fd fd;
    clock::time_point since;
    std::optional<clock::time_point> served;
    bool done = false;
  };
  std::vector<client> all(clients);
  for (auto& c : all) {  // all at once: the kernel queues what the target does not accept yet
    if (clock::now() < s.deadline - std::chrono::seconds(5)) {  // a full backlog makes each connect wait its bound
      c.fd = connect_bounded(server.at(), connect_bound, std::nullopt, s.protocol == target_protocol::http);
    }
    c.since = clock::now();
  }
  std::size_t served = 0;
  std::size_t finished = 0;
  // The answers are read from when every client has connected (a small backlog makes the
  // connects slow): none is counted lost for want of a look.
  const auto deadline = std::min(clock::now() + std::chrono::seconds(s.quick ? 10 : 20), s.deadline);
  while (finished < clients && clock::now() < deadline) {
    std::vector<pollfd> fds;
    std::vector<client*> which;
    for (auto& c : all) {
      if (c.done) {
        continue;
      }
      // TCP: a client not reset or closed for `hold` counts as served (the queue must drain too).
      if (c.fd && !c.served && s.protocol == target_protocol::tcp && clock::now() - c.since >= hold) {
        c.served = clock::now();
        ++served;
      }
      if (!c.fd || (c.served && clock::now() - *c.served >= hold)) {
        c.fd.reset();  // releases the target's place (or the client was lost)
        c.done = true;
        ++finished;
        continue;
      }
      if (!c.served) {
        fds.push_back({c.fd.get(), POLLIN, 0});
        which.push_back(&c);
      }
    }
    if (::poll(fds.data(), fds.size(), 5) <= 0) {
      continue;
    }
    for (std::size_t k = 0; k < fds.size(); ++k) {
      if ((fds[k].revents & (POLLIN | POLLHUP | POLLERR)) == 0) {
        continue;
      }
      char byte = 0;
      if (::recv(which[k]->fd.get(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0 && s.protocol == target_protocol::http) {
        which[k]->served = clock::now();
        ++served;
      } else {
        which[k]->fd.reset();  // reset or closed without an answer: lost
      }
    }
  }
  bool drained = true;
  if (s.protocol == target_protocol::tcp) {
    const auto bound = clock::now() + std::chrono::seconds(2);
    while (listen_queue_length(server.at().port()) > 0 && clock::now() < bound) {
      std::this_thread::sleep_for(milliseconds(10));
    }
    drained = listen_queue_length(server.at().port()) <= 0;
  }
  const double seconds = std::chrono::duration<double>(clock::now() - start).count();
  r.figures = {{"clients", static_cast<double>(clients)},
               {"fd_limit", static_cast<double>(s.fd_limit)},
               {"served", static_cast<double>(served)},
               {"lost", static_cast<double>(clients - served)},
               {"seconds", seconds}};
  if (const auto status = server.exited()) {
    return verdict_of(r, "DEAD", "exited (" + status_text(*status) + ") under " + std::to_string(clients) + " clients");
  }
  if (served != clients || !drained) {
    return verdict_of(r, "LOST",
                      std::to_string(clients - served) + " of " + std::to_string(clients) +
                          " clients reset, closed or not served in time");
  }
  return verdict_of(r, "", "all " + std::to_string(clients) + " clients served; none lost");
}

scenario_result run_target_clean_stop(const target_settings& s) {
  scenario_result r{"clean stop", false, "", {}, {}, {}, {}};
  constexpr std::size_t open = 8;
  const target_server server(s);
  if (!server.problem().empty()) {
    return verdict_of(r, "NO START", server.problem());
  }
  serve_child& child = *server.process();
  const std::uint16_t port = server.at().port();
  std::vector<unique_fd> held;
  for (std::size_t i = 0; i < open; ++i) {
    unique_fd fd = connect_bounded(server.at(), connect_bound, std::nullopt, s.protocol == target_protocol::http);
    if (fd && await_outcome(fd.get(), server.at(), s.protocol, milliseconds(1000)) == probe_outcome::served) {
      held.push_back(std::move(fd));
    }
  }
  note(s, std::to_string(held.size()) + " connections open; sending SIGTERM");
  const double descriptors_before = open_descriptors(child.pid());
  const auto sent = clock::now();
  const auto deadline = sent + target_threshold::stop_within;
  const auto left = [&] { return std::max(std::chrono::ceil<milliseconds>(deadline - clock::now()), milliseconds(0)); };
  child.send(SIGTERM);
  std::size_t closed = 0;
  for (const auto& fd : held) {
    closed += wait_closed(fd.get(), left()) ? 1 : 0;
  }
  const double stop_ms = closed == held.size() ? ms_since(sent) : NAN;
  const auto status = child.wait_exit(left());
  const double exit_ms = status ? std::chrono::duration<double, std::milli>(child.exited_at() - sent).count() : NAN;
  const double descriptors_left = status ? 0 : open_descriptors(child.pid());
  // The port must stop listening too: the process the drill started may have exited while the
  // server itself, moved out of its group (setsid), ignores SIGTERM and listens on.
  while (listen_queue_length(port) >= 0 && clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  const bool still_listening = listen_queue_length(port) >= 0;
  const double unlisten_ms = still_listening ? NAN : ms_since(sent);
  const std::vector<pid_t> holders = still_listening ? listening_descendants(port, child.pid()) : std::vector<pid_t>{};
  const std::string holder_text = still_listening ? describe_holders(port) : "";
  if (status) {
    std::this_thread::sleep_for(milliseconds(50));  // what the target forked outlives it or not
  }
  const auto left_behind = static_cast<double>(child.group_members().size());
  // The drill's clean-up, after the verdict's facts are in: the group, and the escaped holders.
  auto after_kill = child.stop_group(milliseconds(0));
  for (const pid_t pid : holders) {
    ::kill(pid, SIGKILL);
  }
  r.figures = {{"connections", static_cast<double>(held.size())},
               {"connections_closed", static_cast<double>(closed)},
               {"stop_ms", stop_ms},
               {"exit_ms", exit_ms},
               {"unlisten_ms", unlisten_ms},
               {"exit_status", status ? *status : NAN},
               {"descriptors_before", descriptors_before},
               {"descriptors_left", descriptors_left},
               {"processes_left", left_behind},
               {"escaped_listeners", static_cast<double>(holders.size())},
               {"processes_after_kill", static_cast<double>(after_kill.size())}};
  const std::string within = std::to_string(target_threshold::stop_within.count()) + " ms";
  if (!status) {
    return verdict_of(
        r, "IGNORES SIGTERM",
        "still running " + within + " after SIGTERM (" + number_text(descriptors_left) + " descriptors open); killed");
  }
  if (still_listening) {
    return verdict_of(r, "IGNORES SIGTERM",
                      "the process the drill started ended (" + status_text(*status) +
                          "), but 127.0.0.1:" + std::to_string(port) + " still listened " + within + " after SIGTERM" +
                          holder_text + "; killed",
                      "exit on SIGTERM yourself; a wrapper that starts the server in a session of its own (setsid) "
                      "must exec it or pass SIGTERM on to it, and the server must not ignore SIGTERM");
  }
  if (*status != 0 && *status != 128 + SIGTERM) {
    return verdict_of(r, "UNCLEAN STOP", "exited with " + status_text(*status) + " after SIGTERM");
  }
  if (left_behind > 0) {
    return verdict_of(r, "LEFT PROCESSES",
                      number_text(left_behind) + " process(es) of its group still ran after it exited; killed");
  }
  if (closed != held.size()) {
    return verdict_of(r, "UNCLEAN STOP",
                      std::to_string(held.size() - closed) + " connections still open " + within + " after SIGTERM");
  }
  return verdict_of(r, "",
                    "exited (" + status_text(*status) + ") " + number_text(exit_ms) +
                        " ms after SIGTERM, port closed; " + std::to_string(held.size()) + " connections closed");
}

scenario_result run_target_slow_clients(const target_settings& s) {
  scenario_result r{"slow clients", false, "", {}, {}, {}, {}};
  const std::size_t slow = s.fd_limit / 4;  // fewer than any server keeps room for: this is not a limit test
  const target_server server(s);
  if (!server.problem().empty()) {
    return verdict_of(r, "NO START", server.problem());
  }
  note(s, std::to_string(slow) + " idle, half-sent requests from 127.0.0.2");
  const endpoint slow_from = endpoint::v4({127, 0, 0, 2}, 0);
  std::vector<unique_fd> idle;
  for (std::size_t i = 0; i < slow; ++i) {
    unique_fd fd = connect_bounded(server.at(), connect_bound, slow_from, false);
    if (!fd) {
      break;
    }
    if (s.protocol == target_protocol::http) {
      constexpr std::string_view partial = "GET / HTTP/1.1\r\nHost: slow\r\n";  // never finished
      (void)::send(fd.get(), partial.data(), partial.size(), MSG_NOSIGNAL);
    }
    idle.push_back(std::move(fd));
  }
  // The target takes them in: its accept queue empties and it sleeps again (bounded: a
  // spinning target never sleeps).
  const auto settle = clock::now() + milliseconds(2000);
  while (listen_queue_length(server.at().port()) > 0 && clock::now() < settle) {
    std::this_thread::sleep_for(milliseconds(2));
  }
  drill_detail::wait_asleep(*server.process(), milliseconds(500));
  const auto start = clock::now();
  const unique_fd other =
      connect_bounded(server.at(), connect_bound, endpoint::v4({127, 0, 0, 3}, 0), s.protocol == target_protocol::http);
  const probe_outcome o =
      other ? await_outcome(other.get(), server.at(), s.protocol, target_threshold::other_address_within)
            : probe_outcome::reset;
  const double served_ms = o == probe_outcome::served ? ms_since(start) : NAN;
  double closed = 0;
  for (const auto& fd : idle) {
    closed += wait_closed(fd.get(), milliseconds(0)) ? 1 : 0;
  }
  r.figures = {{"slow_clients", static_cast<double>(idle.size())},
               {"other_served_ms", served_ms},
               {"slow_closed_by_server", closed}};
  if (const auto status = server.exited()) {
    return verdict_of(r, "DEAD", "exited (" + status_text(*status) + ") with slow clients open");
  }
  if (o != probe_outcome::served) {
    return verdict_of(r, "STARVED",
                      "a client from 127.0.0.3 was not served within " +
                          std::to_string(target_threshold::other_address_within.count()) + " ms (" +
                          std::string(outcome_name(o)) + ") while " + std::to_string(idle.size()) +
                          " slow clients from 127.0.0.2 were open");
  }
  return verdict_of(r, "",
                    "a client from 127.0.0.3 served in " + number_text(served_ms) + " ms while " +
                        std::to_string(idle.size()) + " slow clients from 127.0.0.2 were open");
}

}  // namespace transient::tool
