// transient_bench_accept: what the epoll server costs and how it behaves when descriptors
// run out, measured against a minimal raw epoll accept loop in the same run.
//
//   conns_per_s / raw_conns_per_s / ratio_vs_raw   short-lived connections, interleaved runs; the
//                                                   ratio is the median of the per-round ratios
//   allocs_per_conn                                 heap allocations per accepted connection
//   recovery_median_ms / recovery_max_ms            a release after >= 3 s of EMFILE until the waiting
//                                                   client has its answer (child with RLIMIT_NOFILE 64)
//   exhausted_cpu_percent                           the child's CPU while exhausted, % of wall time
//   log_lines_per_episode                           policy events per exhaustion episode
//   stop_ms_max                                     stop() until run() returns (idle, paused, backing off)
//
// Prints a table, then one JSON object as the last line. Bounded: about 40 s with defaults.
// Usage: transient_bench_accept [--quick]
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <thread>
#include <vector>

#include "support/accept_bench.hpp"
#include "transient/drivers/server.hpp"

namespace {

using namespace std::chrono_literals;
using transient::unique_fd;
using transient::bench::clock_type;

// ---- stop latency ------------------------------------------------------------------------

double measured_stop_ms(bool paused) {
  // stop() returns at once; what matters is when run() returns: time it from the stopper.
  std::vector<transient::listener> ls;
  ls.push_back(transient::listen(transient::parse_endpoint("127.0.0.1:0")));
  const auto where = ls[0].local_endpoint();
  std::deque<transient::connection> held;
  transient::server_options options;
  options.max_connections = 1;
  options.policy.sink = [](const transient::policy_event&) {};
  transient::server srv(
      std::move(ls), [&](transient::connection c) { held.push_back(std::move(c)); }, options);
  std::vector<unique_fd> clients;
  if (paused) {
    for (int i = 0; i < 2; ++i) {
      unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      sockaddr_storage address{};
      ::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), where.to_sockaddr(address));
      clients.push_back(std::move(fd));
    }
  }
  std::atomic<clock_type::time_point::rep> stop_at{0};
  std::thread stopper([&] {
    std::this_thread::sleep_for(200ms);
    stop_at = clock_type::now().time_since_epoch().count();
    srv.stop();
  });
  srv.run();
  const auto returned = clock_type::now().time_since_epoch().count();
  stopper.join();
  return static_cast<double>(returned - stop_at.load()) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  const auto settings = transient::bench::settings_of(argc, argv);

  // Exhaustion first, while this process has no threads to fork with.
  const auto ex = transient::bench::measure_exhaustion<transient::server>(settings.trials, settings.exhausted_for);
  const auto rounds_run = transient::bench::interleaved_rounds<transient::server>(
      settings.rounds, settings.run_length, "server", std::getenv("TRANSIENT_BENCH_VERBOSE") != nullptr);
  double stop_max = 0;
  for (int i = 0; i < 3; ++i) {
    stop_max = std::max({stop_max, measured_stop_ms(false), measured_stop_ms(true)});
  }

  const double conns = transient::bench::median(rounds_run.ours);
  const double raw_conns = transient::bench::median(rounds_run.raw);
  const double ratio = transient::bench::median(rounds_run.ratios);
  const double allocs = rounds_run.allocations_per_connection();
  const double rec_median = ex.recovery_median();
  const double rec_max = ex.recovery_max();

  std::printf("%-34s %14s %s\n", "figure", "value", "goal");
  std::printf("%-34s %14.0f\n", "server conns/s (median)", conns);
  std::printf("%-34s %14.0f\n", "raw epoll conns/s (median)", raw_conns);
  std::printf("%-34s %14.3f >= 0.97\n", "ratio vs raw (median of rounds)", ratio);
  transient::bench::print_shared_rows(34, rounds_run, ex);
  std::printf("%-34s %14.3f <= 10\n", "stop() to run() return, max (ms)", stop_max);
  transient::bench::print_summary(settings, ex);
  std::printf(
      "{\"conns_per_s\":%.0f,\"raw_conns_per_s\":%.0f,\"ratio_vs_raw\":%.4f,\"recovery_median_ms\":%.4f,"
      "\"recovery_max_ms\":%.4f,\"allocs_per_conn\":%.4f,\"exhausted_cpu_percent\":%.4f,"
      "\"log_lines_per_episode\":%.3f,\"stop_ms_max\":%.3f,\"recovery_trials\":%zu}\n",
      conns, raw_conns, ratio, rec_median, rec_max, allocs, ex.cpu_percent, ex.log_lines_per_episode, stop_max,
      ex.recovery_ms.size());
  return ex.ok ? 0 : 1;
}
