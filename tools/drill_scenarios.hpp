// The scenarios of `transient drill`. Each starts its own `transient serve` children on
// loopback with a low RLIMIT_NOFILE, is bounded in count and time, and returns its verdict.
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
#include "transient/endpoint.hpp"
#include "transient/unique_fd.hpp"

namespace transient::tool {

/// How the drill runs.
struct drill_settings {
  bool quick = false;                              ///< CI mode: fewer trials, shorter windows.
  std::function<void(std::string_view)> progress;  ///< Receives progress notes (may be empty).
};

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

/// 7. Churn at the descriptor limit: idle connections hold all but one descriptor, 200 short
/// clients one after another; all served, and the whole run logs at most 4 lines.
scenario_result run_churn(const drill_settings& s);

namespace drill_detail {

/// Records a child's CPU % and a live-connection count every 20 ms on a thread of its own.
class sampler {
 public:
  sampler(const serve_child& child, const std::atomic<int>& live);
  ~sampler();
  sampler(const sampler&) = delete;
  sampler& operator=(const sampler&) = delete;
  /// Stops sampling; returns the samples.
  std::vector<timeline_sample> finish();

 private:
  const serve_child& child_;
  const std::atomic<int>& live_;
  std::chrono::steady_clock::time_point start_;
  std::atomic<bool> done_{false};
  std::vector<timeline_sample> samples_;
  std::thread thread_;
};

/// Opens keep-alive connections one at a time (each answered before the next) until one gets
/// no answer within `quiet`: the server can no longer accept. Answered ones go to `held`
/// (and `live`); returns the unanswered one (empty if `cap` connections were all answered).
unique_fd fill_until_exhausted(const endpoint& at, std::vector<unique_fd>& held, std::atomic<int>& live,
                               std::size_t cap, std::chrono::milliseconds quiet);

/// Accepting-paused intervals from the child's stderr ("accept degraded" .. "accept recovered"),
/// in seconds since `start`; an open interval ends at `end`.
std::vector<std::pair<double, double>> paused_intervals(const serve_child& child,
                                                        std::chrono::steady_clock::time_point start, double end);

}  // namespace drill_detail

}  // namespace transient::tool
