// The steps of the drill's scenarios, one family for every server. A server is a target
// (target_server: start, port, pid, signal, stop) started from a command with `{port}`: the
// command `--target` names, or for the built-in drill `transient serve` or the test fixture
// (reference_target). The paired scenarios of both modes (exhaustion, backpressure, clean stop,
// slow clients) run these steps; each mode then judges what they measured with its verdicts.
#pragma once

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "drill_scenarios.hpp"
#include "drill_target.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace transient::tool {

/// The settings that start `program` (serve_program) as a target listening on 127.0.0.1:{port}
/// with `args` after its --listen, with RLIMIT_NOFILE child_fd_limit, under the built-in
/// drill's settings `s` (quick, progress, deadline).
[[nodiscard]] target_settings reference_target(const drill_settings& s, serve_program program,
                                               const std::vector<std::string>& args);

/// Passes `text` to the scenario's progress notes, if it has any.
void note(const target_settings& s, const std::string& text);

/// The median of `v`; NAN if empty.
[[nodiscard]] double median(std::vector<double> v);

/// Milliseconds from `t` to now.
[[nodiscard]] double ms_since(std::chrono::steady_clock::time_point t);

/// "exit status N", or "killed by signal N" for a status above 128.
[[nodiscard]] std::string status_text(int status);

/// A started target whose descriptors the drill filled: answered connections held, the next
/// client (the probe) not taken (not_accepting, or no answer within 2 s), or reset or closed
/// at once.
struct exhausted_target {
  std::unique_ptr<target_server> server;               ///< The target.
  std::vector<unique_fd> held;                         ///< Answered connections, oldest first.
  std::atomic<int> live{0};                            ///< held.size(), for a sampler.
  unique_fd probe;                                     ///< The client the target did not take.
  probe_outcome probe_state = probe_outcome::waiting;  ///< What became of it so far.
  int peak_descriptors = -1;                           ///< The most one process of the target had open while filling.
  std::string verdict;                                 ///< With problem: "NO START", "DEAD", "CANNOT FILL", "NO LIMIT".
  std::string problem;                                 ///< Why it is not exhausted; empty when it is.
  std::string fix;                                     ///< With problem, when the verdict's usual fix does not fit.
};

/// Starts the target of `s` and fills it (fill_target).
void start_exhausted(const target_settings& s, exhausted_target& x);

/// Opens clients one at a time, each held once answered, until one is not served: the probe.
void fill_target(const target_settings& s, exhausted_target& x);

/// One release of a held connection while the target is exhausted.
struct trial {
  probe_outcome probe = probe_outcome::waiting;  ///< What became of the probe.
  std::optional<double> recovery_ms;             ///< A client served after the release (0: before it).
  double cpu_wait_ms = 0;                        ///< Of which the target and the drill waited for a CPU.
  release_mark mark;                             ///< For the chart.
};

/// Waits `wait` with the probe pending, releases the oldest held connection and waits (at
/// most `stuck`) for the probe, or a new client if the probe was dropped, to be served.
trial run_trial(const target_settings& s, exhausted_target& x, std::chrono::milliseconds wait,
                std::chrono::milliseconds stuck, const drill_detail::sampler& clock0);

/// The trials of an exhaustion scenario, and why they stopped early if they did.
struct trials_result {
  std::vector<trial> trials;       ///< Those that ran.
  std::vector<double> recoveries;  ///< Each recovered trial's recovery, in ms.
  std::vector<double> own;         ///< The same less the time the target and the drill waited for a CPU.
  std::string verdict;             ///< "STUCK", "DEAD", "CANNOT FILL", a refill's verdict; empty: all ran.
  std::string detail;              ///< With verdict: what happened.
  std::string fix;                 ///< With verdict, when its usual fix does not fit.
  /// The releases, for the chart.
  [[nodiscard]] std::vector<release_mark> marks() const;
  /// The slowest recovery (NAN if none), as measured or (`own`) less CPU waits.
  [[nodiscard]] double worst(bool own_time) const;
  /// The trials whose probe ended as `o`.
  [[nodiscard]] double count(probe_outcome o) const;
};

/// One trial (run_trial) per wait in `waits`, refilling the target before each after the
/// first, until one finds no client served within `stuck` of its release or the target dead.
trials_result run_trials(const target_settings& s, exhausted_target& x,
                         const std::vector<std::chrono::milliseconds>& waits, std::chrono::milliseconds stuck,
                         const drill_detail::sampler& clock0);

/// What a burst of clients found.
struct burst_result {
  std::size_t served = 0;  ///< Clients answered (TCP: not reset or closed).
  bool drained = true;     ///< TCP: the accept queue emptied afterwards.
  double seconds = 0;      ///< How long the burst took.
};

/// `clients` clients at once; each closes 20 ms after its answer; the answers are awaited for
/// `bound` at most from when every client has connected.
burst_result client_burst(const target_settings& s, const target_server& server, std::size_t clients,
                          std::chrono::seconds bound);

/// What SIGTERM did to the target's connections.
struct sigterm_result {
  std::chrono::steady_clock::time_point sent;  ///< When it was sent.
  std::size_t closed = 0;                      ///< Held connections the target closed by `deadline`.
  double stop_ms = 0;                          ///< From `sent` until the last was closed or the wait ended.
};

/// Sends SIGTERM to the target and waits until `deadline` at most for each of `held` to close.
/// With `next_request` (HTTP keep-alive connections), each then sends its next request, again
/// after each answer, as a client that keeps using its connection: a draining server answers it
/// (with Connection: close) and closes, where one that drains by waiting for idle connections to
/// close themselves would hold them until its drain timeout.
sigterm_result sigterm_and_wait_closed(const target_server& server, const std::vector<unique_fd>& held,
                                       std::chrono::steady_clock::time_point deadline, bool next_request);

/// What became of a client from another address while one address held idle connections.
struct slow_attack_result {
  std::vector<unique_fd> idle;                  ///< The idle connections from 127.0.0.2.
  std::size_t held = 0;                         ///< Of which the target kept open once settled.
  probe_outcome other = probe_outcome::reset;   ///< The client from 127.0.0.3.
  double other_ms = NAN;                        ///< When it was served (NAN: not within the window).
  double other_cpu_wait_ms = 0;                 ///< Of which the target and the drill waited for a CPU.
  std::chrono::steady_clock::time_point start;  ///< When the first idle connection was opened.
};

/// Opens `count` idle connections from 127.0.0.2 (with `half_sent`, each sends part of a
/// request head over HTTP), waits until the target has taken them in and sleeps, then waits
/// `window` at most for a client from 127.0.0.3 to be served.
slow_attack_result slow_attack(const target_settings& s, const target_server& server, std::size_t count, bool half_sent,
                               std::chrono::milliseconds window);

}  // namespace transient::tool
