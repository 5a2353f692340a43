// The body of transient_bench_asio and transient_bench_boost_asio: what an Asio adapter costs
// and how it behaves when descriptors run out, measured against the plain loop (async_accept
// re-armed on every completion, as in Asio's HTTP server example and Beast's listener) in the
// same run. Standalone Asio and Boost.Asio cannot share one source file, so each program
// includes this header once, after defining:
//   net             the Asio namespace (asio or boost::asio)
//   net_error_code  the error code type Asio's operations complete with
//   adapter         the adapter's namespace (transient::asio or transient::boost_asio)
// Both flavours stop a loop by closing its acceptor, which Boost 1.74 needs (it has no
// per-operation cancellation) and standalone Asio supports as well.
//
//   <prefix>_conns_per_s / <prefix>_plain_conns_per_s
//       short-lived connections per second, interleaved runs, medians
//   <prefix>_ratio_vs_plain               the median of the rounds' ratios (one round: one run
//                                         of each loop, their order alternating)
//   <prefix>_exhausted_cpu_percent        the adapter's CPU while accept fails with EMFILE, % of
//                                         wall time (child with RLIMIT_NOFILE 64, a budget of 1000)
//   <prefix>_plain_exhausted_cpu_percent  the same for the plain loop (for contrast: it spins)
//
// Prints a table, then one JSON object as the last line. Bounded: about 35 s with defaults.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "support/child_report.hpp"

/// How one flavour's figures are labelled.
struct asio_bench_names {
  const char* plain_label;  ///< The table's row for the plain loop's rate.
  const char* json_prefix;  ///< The JSON keys' prefix ("asio", "boost_asio").
};

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using tcp = net::ip::tcp;
using transient::unique_fd;

double median(std::vector<double> v) {
  std::ranges::sort(v);
  return v.empty() ? 0.0 : v[v.size() / 2];
}

tcp::acceptor loopback_acceptor(net::io_context& io) {
  return tcp::acceptor(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
}

// Connects and closes with a reset (SO_LINGER 0) as fast as it can until `stop`: no TIME_WAIT
// piles up in the ephemeral range, whatever the rate.
void client_loop(unsigned short port, const std::atomic<bool>& stop) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const linger reset{1, 0};
  while (!stop.load(std::memory_order_relaxed)) {
    const unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    ::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address);
  }
}

// The plain loop: re-arm async_accept on every completion, whatever the error.
struct plain_loop {
  tcp::acceptor& acceptor;
  std::uint64_t accepted = 0;
  void arm() {
    acceptor.async_accept([this](const net_error_code& ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted) {
        return;  // the acceptor was closed
      }
      if (!ec) {
        ++accepted;
        net_error_code ignored;
        socket.close(ignored);
      }
      arm();
    });
  }
};

// The adapter's loop, started on `acceptor`; counts connections in `accepted`.
// Closing the acceptor stops it (Boost 1.74 has no per-operation cancellation).
void start_adapter(tcp::acceptor& acceptor, std::uint64_t& accepted, std::uint64_t max_connections,
                   std::chrono::milliseconds stall_timeout) {
  adapter::loop_options options;
  options.max_connections = max_connections;
  options.policy.stall_timeout = stall_timeout;
  options.policy.sink = [](const transient::policy_event&) {};
  adapter::async_accept_loop(
      acceptor, [&accepted](adapter::accepted_socket) { ++accepted; }, options,
      [](std::error_code, const adapter::loop_report&) {});
}

// Connections per second over `duration`, after a 100 ms warm-up.
double measure(bool adapter, std::chrono::milliseconds duration) {
  net::io_context io(1);
  auto acceptor = loopback_acceptor(io);
  std::uint64_t accepted = 0;
  plain_loop plain{acceptor};
  if (adapter) {
    start_adapter(acceptor, accepted, 0, 30s);
  } else {
    plain.arm();
  }
  std::uint64_t& count = adapter ? accepted : plain.accepted;
  std::atomic<bool> stop{false};
  std::thread client([&] { client_loop(acceptor.local_endpoint().port(), stop); });
  io.run_for(100ms);
  const std::uint64_t before = count;
  const auto start = clock_type::now();
  io.restart();
  io.run_for(duration);
  const double seconds = std::chrono::duration<double>(clock_type::now() - start).count();
  const std::uint64_t during = count - before;
  stop = true;
  client.join();
  acceptor.close();
  io.restart();
  io.run_for(1s);
  return static_cast<double>(during) / seconds;
}

// ---- exhaustion, in a child with a low RLIMIT_NOFILE -------------------------------------

std::uint64_t wall_us() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now().time_since_epoch()).count());
}

// The server side: holds every connection; on 'c' reports its CPU and wall clock, on 'q' stops.
[[noreturn]] void exhausted_child(bool adapter, int commands, int reports) {
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = 64;
  ::setrlimit(RLIMIT_NOFILE, &limit);
  net::io_context io(1);
  auto acceptor = loopback_acceptor(io);
  transient::test::write_line(reports, std::to_string(acceptor.local_endpoint().port()));
  std::deque<tcp::socket> held_plain;
  std::deque<adapter::accepted_socket> held;
  std::function<void()> arm_plain = [&] {
    acceptor.async_accept([&](const net_error_code& ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted) {
        return;
      }
      if (!ec) {
        held_plain.push_back(std::move(socket));
      }
      arm_plain();
    });
  };
  if (adapter) {
    adapter::loop_options options;
    options.max_connections = 1000;  // above the limit: the kernel says EMFILE first
    options.policy.stall_timeout = 0ms;
    options.policy.sink = [](const transient::policy_event&) {};
    adapter::async_accept_loop(
        acceptor, [&](adapter::accepted_socket c) { held.push_back(std::move(c)); }, options,
        [](std::error_code, const adapter::loop_report&) {});
  } else {
    arm_plain();
  }
  std::thread control([&] {
    char command = 0;
    while (::read(commands, &command, 1) == 1 && command != 'q') {
      if (command == 'c') {
        transient::test::write_line(
            reports, std::to_string(transient::test::cpu_microseconds()) + " " + std::to_string(wall_us()));
      }
    }
    net::post(io, [&] {
      net_error_code ignored;
      acceptor.close(ignored);
    });
  });
  io.run_for(60s);
  control.join();
  ::_exit(0);
}

// The child's CPU while exhausted, % of wall time over `window`; negative on failure.
double exhausted_cpu_percent(bool adapter, std::chrono::milliseconds window) {
  int commands[2];
  int reports[2];
  if (::pipe2(commands, O_CLOEXEC) != 0 || ::pipe2(reports, O_CLOEXEC) != 0) {
    return -1;
  }
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(commands[1]);
    ::close(reports[0]);
    exhausted_child(adapter, commands[0], reports[1]);
  }
  ::close(commands[0]);
  ::close(reports[1]);
  const unique_fd to_child(commands[1]);
  const unique_fd from_child(reports[0]);
  double percent = -1;
  const std::string port = transient::test::read_line(from_child.get(), 5s);
  if (!port.empty()) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<unsigned short>(std::stoul(port)));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::vector<unique_fd> clients;
    for (int i = 0; i < 80; ++i) {  // more than 64 descriptors can hold
      unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      ::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address);
      clients.push_back(std::move(fd));
    }
    std::this_thread::sleep_for(300ms);  // the child fills its table and starts failing
    const char c = 'c';
    [[maybe_unused]] ssize_t n = ::write(to_child.get(), &c, 1);
    const std::string first = transient::test::read_line(from_child.get(), 5s);
    std::this_thread::sleep_for(window);
    n = ::write(to_child.get(), &c, 1);
    const std::string second = transient::test::read_line(from_child.get(), 5s);
    unsigned long long cpu0 = 0;
    unsigned long long wall0 = 0;
    unsigned long long cpu1 = 0;
    unsigned long long wall1 = 0;
    if (std::sscanf(first.c_str(), "%llu %llu", &cpu0, &wall0) == 2 &&
        std::sscanf(second.c_str(), "%llu %llu", &cpu1, &wall1) == 2 && wall1 > wall0) {
      percent = 100.0 * static_cast<double>(cpu1 - cpu0) / static_cast<double>(wall1 - wall0);
    }
  }
  const char q = 'q';
  [[maybe_unused]] const ssize_t n = ::write(to_child.get(), &q, 1);
  transient::test::reap_within(pid, 5s);
  return percent;
}

}  // namespace

// Runs the benchmark and prints its table and JSON line; `names` says which flavour it is.
inline int run_asio_bench(int argc, char** argv, const asio_bench_names& names) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int rounds = quick ? 3 : 11;
  const auto duration = quick ? 300ms : 1000ms;
  const auto window = quick ? 1000ms : 3000ms;
  std::vector<double> adapter_rates;
  std::vector<double> plain_rates;
  std::vector<double> ratios;
  // Interleaved, so drift hits both alike; each round gives one ratio, and the order within a
  // round alternates, so neither loop always runs on the machine the other has just warmed.
  for (int round = 0; round < rounds; ++round) {
    const bool adapter_first = round % 2 == 1;
    const double first = measure(adapter_first, duration);
    const double second = measure(!adapter_first, duration);
    adapter_rates.push_back(adapter_first ? first : second);
    plain_rates.push_back(adapter_first ? second : first);
    ratios.push_back(plain_rates.back() > 0 ? adapter_rates.back() / plain_rates.back() : 0.0);
  }
  const double conns = median(adapter_rates);
  const double plain_conns = median(plain_rates);
  const double ratio = median(ratios);
  const double cpu = exhausted_cpu_percent(true, window);
  const double plain_cpu = exhausted_cpu_percent(false, window);

  std::printf("%-42s %14s %s\n", "figure", "value", "goal");
  std::printf("%-42s %14.0f\n", "adapter conns/s (median)", conns);
  std::printf("%-42s %14.0f\n", names.plain_label, plain_conns);
  std::printf("%-42s %14.3f >= 0.97 (rounds %.3f-%.3f)\n", "ratio vs plain (median of rounds)", ratio,
              *std::ranges::min_element(ratios), *std::ranges::max_element(ratios));
  std::printf("%-42s %14.3f <= 1 (test: <= 5)\n", "adapter CPU while exhausted (%)", cpu);
  std::printf("%-42s %14.3f (contrast)\n", "plain loop CPU while exhausted (%)", plain_cpu);
  std::printf("(%d interleaved rounds of %lld ms; exhaustion window %lld ms, RLIMIT_NOFILE 64)\n", rounds,
              static_cast<long long>(duration.count()), static_cast<long long>(window.count()));
  const char* p = names.json_prefix;
  std::printf(
      "{\"%s_conns_per_s\":%.0f,\"%s_plain_conns_per_s\":%.0f,\"%s_ratio_vs_plain\":%.4f,"
      "\"%s_exhausted_cpu_percent\":%.4f,\"%s_plain_exhausted_cpu_percent\":%.2f}\n",
      p, conns, p, plain_conns, p, ratio, p, cpu, p, plain_cpu);
  return 0;
}
