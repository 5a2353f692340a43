// The scenarios of `transient drill`. Each starts its own `transient serve` (or fixture)
// children on loopback with a low RLIMIT_NOFILE, is bounded in count and time, and returns its
// verdict; those paired with --target's run the steps every target shares (drill_steps.hpp).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "drill_child.hpp"
#include "drill_report.hpp"
#include "transient/sockets/endpoint.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace transient::tool {

/// How the drill runs.
struct drill_settings {
  bool quick = false;                              ///< CI mode: fewer trials, shorter windows.
  std::function<void(std::string_view)> progress;  ///< Receives progress notes (may be empty).
  /// When the scenario's own work must end (now + drill_scenario_bound / 2 at its start); its
  /// stops and waits for exits take the rest of the bound at most.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

/// Hands `text` to s.progress, if the drill shows progress.
void note(const drill_settings& s, const std::string& text);

/// The most one scenario of `transient drill` may take.
inline constexpr std::chrono::seconds drill_scenario_bound{60};

/// The RLIMIT_NOFILE soft limit of every serve child: low, so exhaustion takes milliseconds.
inline constexpr std::uint64_t child_fd_limit = 64;

/// 1. More concurrent clients than the budget: every client served, none lost.
scenario_result run_backpressure(const drill_settings& s);
/// 2. Descriptors exhausted; each pending client served after a release; latency, CPU, log lines.
scenario_result run_exhaustion(const drill_settings& s);
/// 3. A leak outside the budget: the server stops as stalled, naming the leak, in time.
scenario_result run_leak(const drill_settings& s);
/// 4. The same exhaustion against --policy naive: CPU % and log bytes side by side.
scenario_result run_naive_contrast(const drill_settings& s);
/// 5. 16 serve processes hunting one port range at once: distinct, verified ports.
scenario_result run_port_race(const drill_settings& s);
/// 6. SIGTERM while exhausted: every connection closed within 100 ms, exit
/// within 1 s (a sanitizer build checks for leaks first), no descriptor leaked.
scenario_result run_clean_stop(const drill_settings& s);
/// Slow clients: one address holds idle connections; --max-per-peer and --header-timeout
/// keep another address served (and close the idle ones), without them it waits.
scenario_result run_slow_clients(const drill_settings& s);

/// 9. Overload: 1,000 clients (--quick 300) at once against a budget of 8, a backlog of 256 and
/// a 50 ms service time, each with a 1 s deadline; run without and with --max-queue-wait.
scenario_result run_overload(const drill_settings& s);

/// 7. Churn at the descriptor limit: idle connections hold all but one descriptor, 200 short
/// clients one after another; all served, and serve logs at most 2 lines during the churn.
scenario_result run_churn(const drill_settings& s);

/// 10. Restart under load: continuous short and keep-alive requests while serve upgrades in place
/// (SIGHUP) 20 times (--quick 5), then, as the contrast, while it is stopped and started again
/// on the same port as often. Two rows: the upgrade's (no request refused, reset or unanswered,
/// no descriptor or process left behind, the load running through every restart) and the
/// contrast's, whose losses are shown, not judged.
std::vector<scenario_result> run_restart(const drill_settings& s);

namespace drill_detail {

/// Records a child's runnable % (on a CPU or waiting for one, schedstat) and a live-connection
/// count every 20 ms on a thread of its own.
class sampler {
 public:
  sampler(const serve_child& child, const std::atomic<int>& live);
  ~sampler();
  sampler(const sampler&) = delete;
  sampler& operator=(const sampler&) = delete;
  /// Stops sampling; returns the samples.
  std::vector<timeline_sample> finish();
  /// When sampling started: time 0 of the samples.
  [[nodiscard]] std::chrono::steady_clock::time_point start() const noexcept { return start_; }
  /// Seconds from the start to `t`.
  [[nodiscard]] double at(std::chrono::steady_clock::time_point t) const noexcept {
    return std::chrono::duration<double>(t - start_).count();
  }

 private:
  const serve_child& child_;
  const std::atomic<int>& live_;
  std::chrono::steady_clock::time_point start_;
  std::atomic<bool> done_{false};
  std::vector<timeline_sample> samples_;
  std::thread thread_;
};

/// A server's use of the machine over a window, as % of the wall time summed over its threads.
struct window_usage {
  double runnable = 0;  ///< On a CPU or waiting for one: a spinning loop stays near 100 % under any load.
  double on_cpu = 0;    ///< On a CPU: the share it got, which falls as the machine gets busier.
  /// Neither spinning nor busy: runnable less than half the time (a sleeping loop is runnable
  /// only after its wake-ups, which load stretches) and on a CPU less than 10 % (which load can
  /// only lower).
  [[nodiscard]] bool quiet() const noexcept { return runnable < 50.0 && on_cpu < 10.0; }
};

/// `child`'s window_usage while the drill waits `window`, doing nothing that would wake it.
window_usage usage_over(const serve_child& child, std::chrono::milliseconds window);

/// The time `child` (every thread) and the calling thread spent waiting for a CPU since the
/// meter was made: the part of a measured latency that the machine's load, not the server,
/// explains. The drill judges latencies less this, and reports both.
class cpu_wait {
 public:
  explicit cpu_wait(const serve_child& child);
  /// Milliseconds waited since construction (0 if the child exited meanwhile).
  [[nodiscard]] double ms() const;

 private:
  const serve_child& child_;
  double start_;
};

/// True if `child` does not take the client waiting in the accept queue of `at`: one is
/// queued, and the child is asleep (no runnable thread) or a process of it has `fd_limit`
/// descriptors open; seen twice, 5 ms apart. Events, not a timeout: load cannot fake them.
bool not_accepting(const serve_child& child, const endpoint& at, std::uint64_t fd_limit);

/// What became of a request the drill waits on.
enum class answer : unsigned char { served, closed, blocked, timeout };

/// Waits at most `timeout` for an HTTP response on `fd` (served), its close (closed), or until
/// the server is seen not accepting it (blocked, see not_accepting).
answer await_answer(int fd, const serve_child& child, const endpoint& at, std::uint64_t fd_limit,
                    std::chrono::milliseconds timeout);

/// Waits (at most `timeout`) until `child` has no runnable thread, seen twice 5 ms apart: it has
/// handled what the drill just sent. False on timeout.
bool wait_asleep(const serve_child& child, std::chrono::milliseconds timeout);

/// Accepting-paused intervals from the child's stderr ("accept degraded" .. "accept recovered"),
/// in seconds since `start`; an open interval ends at `end`.
std::vector<std::pair<double, double>> paused_intervals(const serve_child& child,
                                                        std::chrono::steady_clock::time_point start, double end);

}  // namespace drill_detail

}  // namespace transient::tool
