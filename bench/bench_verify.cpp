// transient_bench_verify: what verify() costs with the LISTEN table read through netlink
// sock_diag versus the /proc/net/tcp* fallback, in one process, with 0, 500 and 2,000 extra
// established loopback connections open. Printing /proc/net/tcp walks every TCP socket, so
// its cost grows with the connections; an inet_diag dump asks for LISTEN sockets only.
//
// After Google Benchmark's table it prints one line per connection count with the ratio
// (/proc time over sock_diag time; medians with --benchmark_repetitions). RLIMIT_NOFILE's
// soft limit is raised to the hard limit; counts that would not fit are skipped with a message.
// Usage: transient_bench_verify [Google Benchmark flags]
#include <benchmark/benchmark.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "detail/proc_file.hpp"
#include "sockets/listen_table.hpp"
#include "sockets/verify_socket.hpp"
#include "support/loopback.hpp"
#include "transient/sockets/listener.hpp"

namespace {

using transient::endpoint;
using transient::unique_fd;
using transient::detail::listen_source;

// Established loopback connections, both ends held by this process (2 descriptors each).
class connection_pool {
 public:
  // Opens or closes connections until `count` are open; false (with `why`) if it cannot.
  bool resize(std::size_t count, std::string& why) {
    while (clients_.size() > count) {
      close_with_reset(clients_.back());
      clients_.pop_back();
      accepted_.pop_back();
    }
    // Bounded: one connection per round, and it gives up at the first failure.
    while (clients_.size() < count) {
      unique_fd client = transient::test::connect_to(server_.local_endpoint());
      pollfd p{server_.native_handle(), POLLIN, 0};
      if (!client || ::poll(&p, 1, 5000) != 1) {
        why = "connection " + std::to_string(clients_.size() + 1) + " failed (descriptor limit?)";
        return false;
      }
      unique_fd accepted(::accept4(server_.native_handle(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!accepted) {
        why = "accept failed";
        return false;
      }
      clients_.push_back(std::move(client));
      accepted_.push_back(std::move(accepted));
    }
    return true;
  }
  ~connection_pool() {
    for (auto& client : clients_) {
      close_with_reset(client);
    }
  }

 private:
  // RST instead of FIN: no TIME_WAIT entries are left behind to inflate /proc/net/tcp.
  static void close_with_reset(unique_fd& fd) {
    const linger abort{1, 0};
    (void)::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
    fd.reset();
  }

  transient::listener server_ = transient::listen(endpoint::loopback_v4(0));
  std::vector<unique_fd> clients_;
  std::vector<unique_fd> accepted_;
};

connection_pool& pool() {
  static connection_pool instance;
  return instance;
}

const transient::listener& target() {
  static const transient::listener instance = transient::listen(endpoint::loopback_v4(0));
  return instance;
}

void run_verify(benchmark::State& state, listen_source source) {
  std::string why;
  if (!pool().resize(static_cast<std::size_t>(state.range(0)), why)) {
    state.SkipWithError(why.c_str());
    return;
  }
  // Every TCP socket of the namespace (TIME_WAIT ones of other programs included): what
  // printing /proc/net/tcp walks.
  std::error_code ec;
  state.counters["tcp_sockets"] = static_cast<double>(transient::detail::read_kernel_tcp_rows(ec).size());
  const auto& l = target();
  for (auto _ : state) {
    auto report = transient::detail::verify_socket(l.native_handle(), l.local_endpoint(), false, source);
    if (!report) {
      state.SkipWithError(report.message.c_str());
      break;
    }
    benchmark::DoNotOptimize(report);
  }
}

void BM_verify_sock_diag(benchmark::State& state) { run_verify(state, listen_source::sock_diag); }
void BM_verify_proc(benchmark::State& state) { run_verify(state, listen_source::proc_net_tcp); }

BENCHMARK(BM_verify_sock_diag)->ArgName("connections")->Arg(0)->Arg(500)->Arg(2000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_verify_proc)->ArgName("connections")->Arg(0)->Arg(500)->Arg(2000)->Unit(benchmark::kMicrosecond);

// The console table, and each run's time kept to print the ratios afterwards.
class ratio_reporter : public benchmark::ConsoleReporter {
 public:
  // Colours only on a terminal (a custom display reporter does not see --benchmark_color).
  ratio_reporter() : ConsoleReporter(::isatty(STDOUT_FILENO) != 0 ? OO_ColorTabular : OO_Tabular) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    // One time per benchmark: the median when repetitions are asked for, else the single run.
    for (const auto& run : runs) {
      if (run.error_occurred) {
        continue;
      }
      if (run.run_type == Run::RT_Iteration && medians_.count(run.run_name.str()) == 0) {
        times_[run.run_name.str()] = run.GetAdjustedRealTime();
      } else if (run.run_type == Run::RT_Aggregate && run.aggregate_name == "median") {
        times_[run.run_name.str()] = run.GetAdjustedRealTime();
        medians_.insert(run.run_name.str());
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }

  void print_ratios() const {
    for (const char* count : {"0", "500", "2000"}) {
      const std::string suffix = std::string("/connections:") + count;
      const auto diag = times_.find("BM_verify_sock_diag" + suffix);
      const auto proc = times_.find("BM_verify_proc" + suffix);
      if (diag == times_.end() || proc == times_.end() || diag->second <= 0) {
        continue;
      }
      std::printf("verify() with %5s extra connections: sock_diag %8.1f us, /proc/net/tcp %8.1f us, ratio %.1fx\n",
                  count, diag->second, proc->second, proc->second / diag->second);
    }
  }

 private:
  std::map<std::string, double> times_;
  std::set<std::string> medians_;
};

// 2,000 connections take 4,000 descriptors: lift the soft limit to the hard one.
void raise_descriptor_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &limit);
  }
}

}  // namespace

int main(int argc, char** argv) {
  raise_descriptor_limit();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  ratio_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.print_ratios();
  benchmark::Shutdown();
  return 0;
}
