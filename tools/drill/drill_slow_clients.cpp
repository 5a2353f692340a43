// Drill scenario 8, slow clients: one address opens as many idle connections as the budget
// allows and sends nothing (slowloris). With --max-per-peer and --header-timeout a client
// from another address is served at once and the idle ones are closed at the timeout;
// without them the other client waits (the contrast, as in the naive scenario).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <cmath>

#include "drill_client.hpp"
#include "drill_scenarios.hpp"
#include "drill_target.hpp"

namespace transient::tool {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr int budget = 8;
constexpr int per_peer = 4;
constexpr const char* greedy_address = "127.0.0.2";  // loopback is 127.0.0.0/8: two "hosts"
constexpr const char* other_address = "127.0.0.3";

// A connection from `source` (a loopback address) to `to`; empty on failure.
unique_fd connect_from(const char* source, const endpoint& to) {
  unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in local{};
  local.sin_family = AF_INET;
  sockaddr_storage remote{};
  const socklen_t length = to.to_sockaddr(remote);
  if (!fd || ::inet_pton(AF_INET, source, &local.sin_addr) != 1 ||
      ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&local), sizeof local) != 0 ||
      ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&remote), length) != 0) {
    return {};
  }
  return fd;
}

double ms_since(clock::time_point start) {
  return std::chrono::duration<double, std::milli>(clock::now() - start).count();
}

struct attack_result {
  std::string problem;
  int held = 0;                  // idle connections the server kept after 100 ms
  double other_served_ms = NAN;  // the other address's answer (NAN: none within the window)
  double other_cpu_wait_ms = 0;  // of which serve and the drill waited for a CPU
  double idle_closed_ms = NAN;   // when the last idle connection was closed (NAN: not all were)
};

// Runs serve with `args`, opens `budget` silent connections from the greedy address, then
// asks from the other address (waiting at most `window`); with `wait_for_close`, waits for
// the idle connections to be closed (at most `close_limit`).
attack_result attack(const std::vector<std::string>& args, milliseconds window, bool wait_for_close,
                     milliseconds close_limit) {
  attack_result a;
  serve_child child(args, child_fd_limit);
  const auto at = child.wait_listening(std::chrono::seconds(5));
  if (!at) {
    a.problem = "serve did not start: " + child.stderr_text();
    return a;
  }
  const auto start = clock::now();
  std::vector<unique_fd> idle;
  for (int i = 0; i < budget; ++i) {
    idle.push_back(connect_from(greedy_address, *at));
    if (!idle.back()) {
      a.problem = std::string("cannot connect from ") + greedy_address;
      return a;
    }
  }
  // Each accepted, or shed by the per-peer cap: the accept queue is empty and serve asleep again.
  const auto settle = clock::now() + std::chrono::seconds(5);
  while (listen_queue_length(at->port()) != 0 && clock::now() < settle) {
    std::this_thread::sleep_for(milliseconds(2));
  }
  drill_detail::wait_asleep(child, std::chrono::seconds(2));
  for (const auto& fd : idle) {
    a.held += wait_closed(fd.get(), milliseconds(0)) ? 0 : 1;
  }
  const drill_detail::cpu_wait waited(child);
  const auto asked = clock::now();
  const unique_fd other = connect_from(other_address, *at);
  if (other && send_request(other.get()) && read_response(other.get(), window).rfind("HTTP/1.1 200 OK", 0) == 0) {
    a.other_served_ms = ms_since(asked);
    a.other_cpu_wait_ms = waited.ms();
  }
  if (wait_for_close) {
    bool all = true;
    for (const auto& fd : idle) {
      const auto left = close_limit - std::chrono::duration_cast<milliseconds>(clock::now() - start);
      all = all && wait_closed(fd.get(), std::max(left, milliseconds(1)));
    }
    if (all) {
      a.idle_closed_ms = ms_since(start);
    }
  }
  child.send(SIGTERM);
  child.wait_exit(std::chrono::seconds(3));
  return a;
}

}  // namespace

scenario_result run_slow_clients(const drill_settings& s) {
  scenario_result r{"slow clients", false, "", {}, {}, {}, {}};
  const milliseconds header(s.quick ? 500 : 1000);
  const milliseconds window(s.quick ? 500 : 1000);  // how long the unprotected server is watched
  const std::vector<std::string> common{"--listen", "127.0.0.1:0", "--max-connections", std::to_string(budget)};

  if (s.progress) {
    s.progress(std::to_string(budget) + " silent connections from " + greedy_address + "; --max-per-peer " +
               std::to_string(per_peer) + ", --header-timeout " + std::to_string(header.count()) + "ms");
  }
  std::vector<std::string> guarded = common;
  guarded.insert(guarded.end(), {"--max-per-peer", std::to_string(per_peer), "--header-timeout",
                                 std::to_string(header.count()) + "ms"});
  const attack_result with = attack(guarded, milliseconds(1000), true, header + milliseconds(1500));

  if (s.progress) {
    s.progress("the same without them (the contrast)");
  }
  std::vector<std::string> open = common;
  open.insert(open.end(), {"--header-timeout", "60s"});  // the idle timeout's length: no head limit to speak of
  const attack_result without = attack(open, window, false, {});

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
