// transient_bench_uring: what the io_uring driver (transient::uring_server) costs and how it
// behaves when descriptors run out, measured against the same minimal raw epoll accept loop
// as transient_bench_accept, in the same run, in interleaved rounds.
//
//   uring_conns_per_s / raw_conns_per_s / uring_ratio_vs_raw   short-lived connections; the
//                                                   ratio is the median of the per-round ratios
//   uring_sqes_per_conn                             submission queue entries per accepted connection
//   uring_cpu_us_per_conn / raw_cpu_us_per_conn     the accepting thread's CPU per connection
//   allocs_per_conn                                 heap allocations per accepted connection
//   uring_recovery_median_ms / uring_recovery_max_ms  a release after >= 3 s of EMFILE until the
//                                                   waiting client has its answer (child, RLIMIT_NOFILE 64)
//   uring_exhausted_cpu_percent                     the child's CPU while exhausted, % of wall time
//   uring_log_lines_per_episode                     policy events per exhaustion episode
//
// Prints a table, then one JSON object as the last line. Bounded: about 40 s with defaults.
// Usage: transient_bench_uring [--quick]
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

#include "support/accept_bench.hpp"
#include "transient/drivers/uring.hpp"

using namespace std::chrono_literals;

int main(int argc, char** argv) {
  if (std::string why; !transient::uring_available(why)) {
    std::printf("io_uring unavailable: %s\n{\"uring_available\":false}\n", why.c_str());
    return 1;
  }
  const auto settings = transient::bench::settings_of(argc, argv);

  // Exhaustion first, while this process has no threads to fork with.
  const auto ex =
      transient::bench::measure_exhaustion<transient::uring_server>(settings.trials, settings.exhausted_for);
  const auto rounds_run = transient::bench::interleaved_rounds<transient::uring_server>(
      settings.rounds, settings.run_length, "uring", true);
  const std::vector<double>& ratios = rounds_run.ratios;
  const std::uint64_t accepted = rounds_run.accepted;
  const std::uint64_t accepted_total = rounds_run.accepted_total;
  const std::uint64_t raw_accepted = rounds_run.raw_accepted;

  const double conns = transient::bench::median(rounds_run.ours);
  const double raw_conns = transient::bench::median(rounds_run.raw);
  const double ratio = transient::bench::median(ratios);
  const double ratio_min = *std::ranges::min_element(ratios);
  const double ratio_max = *std::ranges::max_element(ratios);
  const double allocs = rounds_run.allocations_per_connection();
  const double sqes_per_conn = accepted > 0 ? static_cast<double>(rounds_run.sqes) / static_cast<double>(accepted) : -1;
  const double uring_cpu_per_conn =
      accepted_total > 0 ? rounds_run.server_cpu_us / static_cast<double>(accepted_total) : -1;
  const double raw_cpu_per_conn = raw_accepted > 0 ? rounds_run.raw_cpu_us / static_cast<double>(raw_accepted) : -1;
  const double rec_median = ex.recovery_median();
  const double rec_max = ex.recovery_max();

  std::printf("%-38s %14s %s\n", "figure", "value", "goal");
  std::printf("%-38s %14.0f\n", "uring_server conns/s (median)", conns);
  std::printf("%-38s %14.0f\n", "raw epoll conns/s (median)", raw_conns);
  std::printf("%-38s %14.3f >= 1.0 (rounds: %.3f .. %.3f)\n", "ratio vs raw (median of rounds)", ratio, ratio_min,
              ratio_max);
  std::printf("%-38s %14.4f\n", "SQEs per connection", sqes_per_conn);
  std::printf("%-38s %14.2f\n", "accepting thread CPU us/conn (uring)", uring_cpu_per_conn);
  std::printf("%-38s %14.2f\n", "accepting thread CPU us/conn (raw)", raw_cpu_per_conn);
  transient::bench::print_shared_rows(38, rounds_run, ex);
  transient::bench::print_summary(settings, ex);
  std::printf(
      "{\"uring_conns_per_s\":%.0f,\"raw_conns_per_s\":%.0f,\"uring_ratio_vs_raw\":%.4f,"
      "\"uring_ratio_min\":%.4f,\"uring_ratio_max\":%.4f,\"uring_recovery_median_ms\":%.4f,"
      "\"uring_recovery_max_ms\":%.4f,\"uring_exhausted_cpu_percent\":%.4f,\"uring_sqes_per_conn\":%.4f,"
      "\"allocs_per_conn\":%.4f,\"uring_cpu_us_per_conn\":%.3f,\"raw_cpu_us_per_conn\":%.3f,"
      "\"uring_log_lines_per_episode\":%.3f,\"recovery_trials\":%zu}\n",
      conns, raw_conns, ratio, ratio_min, ratio_max, rec_median, rec_max, ex.cpu_percent, sqes_per_conn, allocs,
      uring_cpu_per_conn, raw_cpu_per_conn, ex.log_lines_per_episode, ex.recovery_ms.size());
  return ex.ok ? 0 : 1;
}
