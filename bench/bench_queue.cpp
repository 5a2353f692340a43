// transient_bench_queue: what reading the accept queue costs (listen_queue.hpp). Goal (issue 24):
// queue_of() at most 2 microseconds per read and no heap allocation, cheap enough for every
// policy pause. Also queue_wait_of() on an accepted connection and read_listen_drops(), which
// reads /proc/net/netstat.
//
// After Google Benchmark's table it prints one line per call (wall and CPU time and heap
// allocations per read; medians with --benchmark_repetitions), then one JSON object as the last
// line. On a busy machine the wall time includes waiting for a core; the CPU time does not.
// Usage: transient_bench_queue [Google Benchmark flags]
#include <benchmark/benchmark.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "support/allocation_counter.hpp"
#include "support/loopback.hpp"
#include "transient/sockets/listen_queue.hpp"
#include "transient/sockets/listener.hpp"

namespace {

using transient::endpoint;
using transient::unique_fd;

// A listener with three clients waiting in its queue, and one connection accepted from it: what
// a server reads on a policy pause and right after accept.
struct queue_fixture {
  transient::listener server = transient::listen(endpoint::loopback_v4(0), backlog(64));
  std::vector<unique_fd> clients = connect_clients(4);
  unique_fd accepted{::accept4(server.native_handle(), nullptr, nullptr, SOCK_CLOEXEC)};

  static transient::listen_options backlog(int limit) {
    transient::listen_options options;
    options.backlog = limit;
    return options;
  }
  [[nodiscard]] std::vector<unique_fd> connect_clients(int count) const {
    std::vector<unique_fd> out;
    for (int i = 0; i < count; ++i) {
      out.push_back(transient::test::connect_to(server.local_endpoint()));
    }
    return out;
  }
};

queue_fixture& fixture() {
  static queue_fixture instance;
  return instance;
}

// Runs `read` as the benchmark's loop, failing the run on the first error, and reports the
// heap allocations per read.
template <typename Read>
void measure(benchmark::State& state, Read read) {
  std::error_code ec;
  const std::size_t before = transient::bench::allocation_count.load();
  for (auto _ : state) {
    auto value = read(ec);
    benchmark::DoNotOptimize(value);
    if (ec) {
      state.SkipWithError(ec.message().c_str());
      break;
    }
  }
  const std::size_t allocations = transient::bench::allocation_count.load() - before;
  state.counters["allocs_per_read"] = static_cast<double>(allocations) /
                                      static_cast<double>(std::max<benchmark::IterationCount>(state.iterations(), 1));
}

void BM_queue_of(benchmark::State& state) {
  const int fd = fixture().server.native_handle();
  if (transient::queue_of(fd).length != 3) {
    state.SkipWithError("the listener does not hold the three waiting clients");
    return;
  }
  measure(state, [fd](std::error_code& ec) { return transient::queue_of(fd, ec); });
}
BENCHMARK(BM_queue_of);

void BM_queue_wait_of(benchmark::State& state) {
  const int fd = fixture().accepted.get();
  measure(state, [fd](std::error_code& ec) { return transient::queue_wait_of(fd, ec); });
}
BENCHMARK(BM_queue_wait_of);

void BM_read_listen_drops(benchmark::State& state) {
  measure(state, [](std::error_code& ec) { return transient::read_listen_drops(ec); });
}
BENCHMARK(BM_read_listen_drops)->Unit(benchmark::kMicrosecond);

// The console table, with each benchmark's time (ns) and allocations kept for the summary.
class summary_reporter : public benchmark::ConsoleReporter {
 public:
  // Colours only on a terminal (a custom display reporter does not see --benchmark_color).
  summary_reporter() : ConsoleReporter(::isatty(STDOUT_FILENO) != 0 ? OO_ColorTabular : OO_Tabular) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    // One figure per benchmark: the median when repetitions are asked for, else the single run.
    for (const auto& run : runs) {
      const std::string name = run.run_name.function_name;
      if (run.error_occurred || (run.run_type == Run::RT_Aggregate && run.aggregate_name != "median") ||
          (run.run_type == Run::RT_Iteration && medians_.count(name) != 0)) {
        continue;
      }
      if (run.run_type == Run::RT_Aggregate) {
        medians_.insert(name);
      }
      const auto allocations = run.counters.find("allocs_per_read");
      const double unit = nanoseconds_per(run.time_unit);
      figures_[name] = {run.GetAdjustedRealTime() * unit, run.GetAdjustedCPUTime() * unit,
                        allocations == run.counters.end() ? -1.0 : allocations->second.value};
    }
    ConsoleReporter::ReportRuns(runs);
  }

  // The lines the issue asks for, then the JSON object.
  void print_summary() const {
    const auto print = [&](const char* name, const char* call, const char* goal) {
      const auto found = figures_.find(name);
      if (found != figures_.end()) {
        std::printf("%-20s %9.1f ns per read (%.1f ns of CPU), %.2f allocations per read%s\n", call, found->second.ns,
                    found->second.cpu_ns, found->second.allocations, goal);
      }
    };
    print("BM_queue_of", "queue_of()", " (goal: <= 2000 ns, 0)");
    print("BM_queue_wait_of", "queue_wait_of()", "");
    print("BM_read_listen_drops", "read_listen_drops()", "");
    std::printf("{");
    const char* separator = "";
    for (const auto& [name, figure] : figures_) {
      const std::string key = name.substr(3);  // without "BM_"
      std::printf("%s\"%s_ns_per_read\":%.1f,\"%s_cpu_ns_per_read\":%.1f,\"%s_allocs_per_read\":%.2f", separator,
                  key.c_str(), figure.ns, key.c_str(), figure.cpu_ns, key.c_str(), figure.allocations);
      separator = ",";
    }
    std::printf("}\n");
  }

 private:
  struct figure {
    double ns = 0;      // wall time per read
    double cpu_ns = 0;  // this thread's CPU time per read
    double allocations = 0;
  };

  static double nanoseconds_per(benchmark::TimeUnit unit) {
    switch (unit) {
      case benchmark::kSecond: return 1e9;
      case benchmark::kMillisecond: return 1e6;
      case benchmark::kMicrosecond: return 1e3;
      case benchmark::kNanosecond: break;
    }
    return 1;
  }

  std::map<std::string, figure> figures_;
  std::set<std::string> medians_;
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  summary_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.print_summary();
  benchmark::Shutdown();
  return 0;
}
