// Drill scenarios 1, 3 and 5: backpressure, a descriptor leak, and a port race.
#include "drill_scenarios.hpp"

#include <poll.h>
#include <signal.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "drill_client.hpp"
#include "drill_steps.hpp"
#include "transient/sockets/listener.hpp"

namespace transient::tool {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

double seconds_since(clock::time_point start) { return std::chrono::duration<double>(clock::now() - start).count(); }

// The value of a Prometheus sample `name` (without labels) in `text`; NAN if absent.
double metric(const std::string& text, const std::string& name) {
  const std::size_t at = text.find("\n" + name + " ");
  return at == std::string::npos ? NAN : std::strtod(text.c_str() + at + name.size() + 2, nullptr);
}

// Short connections to a leaking `child`, one after another, until one is not accepted (the
// leak filled the table): that one, or empty if none was blocked. Counts the served ones.
unique_fd fill_by_leaking(const serve_child& child, const endpoint& at, clock::time_point deadline, int& connections) {
  for (int i = 0; i < 100 && clock::now() < deadline; ++i) {
    unique_fd fd = connect_and_request(at);
    if (!fd) {
      return {};
    }
    const auto a = drill_detail::await_answer(fd.get(), child, at, child_fd_limit, std::chrono::seconds(5));
    if (a == drill_detail::answer::blocked) {
      return fd;
    }
    if (a != drill_detail::answer::served) {
      return {};
    }
    ++connections;
  }
  return {};
}

// When serve reported its first failed accept ("accept degraded"), from which the stall
// timeout runs; now if it did not within 5 s.
clock::time_point degraded_at(serve_child& child) {
  child.wait_stderr("accept degraded", std::chrono::seconds(5));
  for (const auto& line : child.stderr_timeline()) {
    if (line.text.find("accept degraded") != std::string::npos) {
      return line.at;
    }
  }
  return clock::now();
}

bool leak_stalled(const std::string& err) { return err.find("stopped: stalled") != std::string::npos; }
bool leak_named(const std::string& err) { return err.find("likely descriptor leak") != std::string::npos; }
bool leak_kind_named(const std::string& err) {
  return err.find("character device") != std::string::npos && err.find("/dev/null") != std::string::npos;
}

// serve stopped as stalled, its diagnosis naming the leak and the leaked kind.
bool leak_diagnosed(const std::string& err) { return leak_stalled(err) && leak_named(err) && leak_kind_named(err); }

// The leak scenario's detail once serve exited with status 1, from serve's stderr `err`.
std::string leak_diagnosis_detail(const std::string& err, bool in_time) {
  return !leak_stalled(err)      ? "serve did not stop as stalled"
         : !leak_named(err)      ? "the diagnosis did not call it a leak"
         : !leak_kind_named(err) ? "the diagnosis did not name the leaked kind (character device, /dev/null)"
         : !in_time              ? "stopped later than stall timeout + 1 s"
                    : "stopped as stalled; diagnosis: likely descriptor leak, /dev/null (character device)";
}

}  // namespace

void note(const drill_settings& s, const std::string& text) {
  if (s.progress) {
    s.progress(text);
  }
}

scenario_result run_backpressure(const drill_settings& s) {
  scenario_result r{"backpressure", false, "", {}, {}, {}, {}};
  const std::size_t clients = s.quick ? 24 : 64;
  constexpr int budget = 8;
  const target_settings t = reference_target(s, serve_program::serve,
                                             {"--max-connections", std::to_string(budget), "--metrics", "127.0.0.1:0"});
  const target_server server(t);
  const auto metrics_at =
      server.problem().empty() ? server.process()->wait_metrics(std::chrono::seconds(1)) : std::nullopt;
  if (!metrics_at) {
    r.detail =
        "serve did not start: " + (server.problem().empty() ? server.process()->stderr_text() : server.problem());
    return r;
  }
  note(t, std::to_string(clients) + " clients at once against a budget of " + std::to_string(budget));
  const burst_result burst = client_burst(t, server, clients, std::chrono::seconds(20));
  std::this_thread::sleep_for(milliseconds(150));  // server::metrics() is refreshed every 100 ms
  const std::string text = get_body(*metrics_at, "/metrics", milliseconds(2000));
  const double peak = metric(text, "transient_peak_connections");
  const double pauses = metric(text, "transient_pauses_total{reason=\"capacity\"}");
  const std::size_t served = burst.served;
  r.figures = {{"clients", static_cast<double>(clients)},
               {"budget", budget},
               {"served", static_cast<double>(served)},
               {"lost", static_cast<double>(clients - served)},
               {"peak_connections", peak},
               {"capacity_pauses", pauses},
               {"seconds", burst.seconds}};
  r.passed = served == clients && peak <= budget;
  r.detail = served != clients   ? std::to_string(clients - served) + " clients were not served"
             : !(peak <= budget) ? "the server held more connections than its budget (or metrics were unreadable)"
                                 : "every client served; the rest waited in the backlog, none lost";
  server.signal(SIGTERM);
  server.process()->wait_exit(std::chrono::seconds(2));
  return r;
}

scenario_result run_leak(const drill_settings& s) {
  scenario_result r{"leak", false, "", {}, {}, {}, {}};
  const milliseconds stall(s.quick ? 1000 : 2000);
  constexpr int leak_per_connection = 4;
  serve_child child({"--listen", "127.0.0.1:0", "--stall-timeout", std::to_string(stall.count()) + "ms",
                     "--leak-per-connection", std::to_string(leak_per_connection)},
                    child_fd_limit, serve_program::fixture_serve);
  const auto at = child.wait_listening(std::chrono::seconds(5));
  if (!at) {
    r.detail = "serve did not start: " + child.stderr_text();
    return r;
  }
  note(s, "each connection leaks " + std::to_string(leak_per_connection) + " descriptors; stall timeout " +
              std::to_string(stall.count()) + " ms");
  int connections = 0;
  const unique_fd pending = fill_by_leaking(child, *at, s.deadline, connections);
  if (!pending) {
    r.detail = "the leak never exhausted the server's descriptors";
    return r;
  }
  const clock::time_point stuck = degraded_at(child);
  const auto status = child.wait_exit(stall + std::chrono::seconds(10));
  const double stopped_after = status ? std::chrono::duration<double>(child.exited_at() - stuck).count() : NAN;
  const std::string err = child.stderr_text();
  r.figures = {{"stall_timeout_s", static_cast<double>(stall.count()) / 1000.0},
               {"stopped_after_s", stopped_after},
               {"connections_before_stall", static_cast<double>(connections)},
               {"leak_per_connection", leak_per_connection},
               {"exit_status", status ? *status : NAN}};
  const double bound = static_cast<double>(stall.count()) / 1000.0 + 1.0;
  // serve exits 1 when the server stops on an error; anything else (a crash, a sanitizer's
  // report) is a failure of its own.
  r.passed = status && *status == 1 && leak_diagnosed(err) && stopped_after <= bound;
  r.detail = !status        ? "serve did not stop within stall timeout + 10 s"
             : *status != 1 ? "serve exited with status " + std::to_string(*status) + ", not 1 (stopped on an error)"
                            : leak_diagnosis_detail(err, stopped_after <= bound);
  return r;
}

scenario_result run_port_race(const drill_settings& s) {
  scenario_result r{"port race", false, "", {}, {}, {}, {}};
  constexpr int processes = 16;
  const std::string range = "9000-9099";
  note(s, std::to_string(processes) + " serve processes hunting " + range + " at once");
  const auto start = clock::now();
  std::vector<std::unique_ptr<serve_child>> children;
  for (int i = 0; i < processes; ++i) {
    children.push_back(std::make_unique<serve_child>(
        std::vector<std::string>{"--listen", "127.0.0.1:0", "--port-range", range}, child_fd_limit));
  }
  std::set<std::uint16_t> ports;
  int started = 0;
  int verified = 0;
  const auto started_by = clock::now() + std::chrono::seconds(10);  // one bound for all 16
  for (auto& child : children) {
    const auto at =
        child->wait_listening(std::max(std::chrono::ceil<milliseconds>(started_by - clock::now()), milliseconds(0)));
    if (!at) {
      continue;
    }
    ++started;
    ports.insert(at->port());
    // Verified from outside too: the kernel's only LISTEN socket on that port is this child's,
    // and it answers.
    const auto entries = who_listens(at->port());
    const bool owned = entries.size() == 1 && std::any_of(entries[0].owners.begin(), entries[0].owners.end(),
                                                          [&](const auto& o) { return o.pid == child->pid(); });
    verified += owned && get_ok(*at, milliseconds(2000)) ? 1 : 0;
  }
  const double seconds = seconds_since(start);
  int clean = 0;
  for (auto& child : children) {
    child->send(SIGTERM);
  }
  for (auto& child : children) {
    const auto status = child->wait_exit(std::chrono::seconds(2));
    clean += status && *status == 0 ? 1 : 0;
  }
  r.figures = {{"processes", processes},
               {"started", static_cast<double>(started)},
               {"distinct_ports", static_cast<double>(ports.size())},
               {"verified", static_cast<double>(verified)},
               {"clean_exits", static_cast<double>(clean)},
               {"seconds", seconds}};
  r.passed = started == processes && static_cast<int>(ports.size()) == processes && verified == processes &&
             clean == processes;
  r.detail = r.passed ? "every process got its own verified port" : "a port was shared, missing or unverified";
  return r;
}

}  // namespace transient::tool
