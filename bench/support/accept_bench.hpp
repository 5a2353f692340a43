// What transient_bench_accept (transient::server) and transient_bench_uring
// (transient::uring_server) measure the same way: the load generator, the reference (the
// smallest correct raw epoll accept loop), interleaved rounds of a server against it, and the
// exhaustion figures of a child with RLIMIT_NOFILE 64 (tests/support/holding_server.hpp). Each
// program prints its own table and JSON line. Include it once per program: it includes
// allocation_counter.hpp, which replaces the global allocation functions.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support/allocation_counter.hpp"
#include "support/holding_server.hpp"
#include "transient/drivers/server.hpp"

namespace transient::bench {

/// The clock of every figure.
using clock_type = std::chrono::steady_clock;

/// How long and how often both programs measure.
struct accept_bench_settings {
  std::chrono::milliseconds run_length{700};      ///< one run of a server or of the reference
  int rounds = 11;                                ///< interleaved rounds
  int trials = 5;                                 ///< recoveries from exhaustion
  std::chrono::milliseconds exhausted_for{3000};  ///< exhausted before each recovery
};

/// The settings of the command line: the defaults, or shorter runs for `--quick`.
inline accept_bench_settings settings_of(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--quick") == 0) {
    return {std::chrono::milliseconds(300), 2, 2, std::chrono::milliseconds(500)};
  }
  return {};
}

/// The median (the upper one of an even count); 0 for none.
inline double median(std::vector<double> v) {
  std::ranges::sort(v);
  return v.empty() ? 0.0 : v[v.size() / 2];
}

/// Milliseconds since `start`.
inline double since_ms(clock_type::time_point start) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - start).count();
}

/// This thread's CPU time (user + system) in microseconds.
inline double thread_cpu_us() {
  rusage usage{};
  ::getrusage(RUSAGE_THREAD, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e6 +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

// ---- short-lived connections ------------------------------------------------------------

/// Connects and closes with a reset (SO_LINGER 0) as fast as it can until `stop`: no TIME_WAIT
/// piles up in the ephemeral range, whatever the rate.
inline void client_loop(const endpoint& to, const std::atomic<bool>& stop) {
  sockaddr_storage address{};
  const socklen_t length = to.to_sockaddr(address);
  const linger reset{1, 0};
  while (!stop.load(std::memory_order_relaxed)) {
    const unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    ::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), length);
  }
}

/// One run of the reference loop.
struct raw_result {
  std::uint64_t accepted = 0;
  double cpu_us = 0;  ///< the accepting thread's
};

/// The reference: the smallest correct non-blocking epoll accept loop, for `duration`.
inline raw_result raw_run(std::chrono::milliseconds duration) {
  auto l = listen(parse_endpoint("127.0.0.1:0"));
  const unique_fd epoll(::epoll_create1(EPOLL_CLOEXEC));
  epoll_event event{};
  event.events = EPOLLIN;
  ::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, l.native_handle(), &event);
  std::atomic<bool> stop{false};
  std::thread client([&] { client_loop(l.local_endpoint(), stop); });
  const double cpu_start = thread_cpu_us();
  std::uint64_t accepted = 0;
  const auto end = clock_type::now() + duration;
  epoll_event ready[8];
  while (clock_type::now() < end) {
    if (::epoll_wait(epoll.get(), ready, 8, 10) <= 0) {
      continue;
    }
    for (int i = 0; i < 64; ++i) {
      const int fd = ::accept4(l.native_handle(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        break;
      }
      ::close(fd);
      ++accepted;
    }
  }
  const double cpu = thread_cpu_us() - cpu_start;
  stop = true;
  client.join();
  return {accepted, cpu};
}

/// One run of a server.
struct server_run {
  std::uint64_t accepted = 0;        ///< in the steady state
  std::size_t allocations = 0;       ///< in the steady state
  std::uint64_t sqes = 0;            ///< in the steady state (servers that count submissions)
  double cpu_us = 0;                 ///< the accepting thread's, over the whole run (start and stop included)
  std::uint64_t accepted_total = 0;  ///< over the whole run
};

/// A `Server` (transient::server or a driver with its contract) under client_loop for
/// `duration`. Allocations are counted in the steady state only (after a warm-up, before the
/// stop), so that start-up and shutdown do not hide in the per-connection figure.
template <typename Server>
server_run measure_server(std::chrono::milliseconds duration) {
  using namespace std::chrono_literals;
  std::vector<listener> ls;
  ls.push_back(listen(parse_endpoint("127.0.0.1:0")));
  const auto where = ls[0].local_endpoint();
  server_options options;
  options.policy.sink = [](const policy_event&) {};
  Server srv(
      std::move(ls), [](connection) {}, options);
  std::atomic<bool> stop{false};
  std::thread client([&] { client_loop(where, stop); });
  server_run r;
  std::thread stopper([&] {
    std::this_thread::sleep_for(100ms);
    const auto allocations_before = allocation_count.load();
    const auto accepted_before = srv.metrics().accepted;
    std::uint64_t sqes_before = 0;
    if constexpr (requires { srv.submissions(); }) {
      sqes_before = srv.submissions();
    }
    std::this_thread::sleep_for(duration);
    r.allocations = allocation_count.load() - allocations_before;
    r.accepted = srv.metrics().accepted - accepted_before;
    if constexpr (requires { srv.submissions(); }) {
      r.sqes = srv.submissions() - sqes_before;
    }
    stop = true;
    srv.stop();
  });
  const double cpu_start = thread_cpu_us();
  srv.run();
  r.cpu_us = thread_cpu_us() - cpu_start;
  r.accepted_total = srv.metrics().accepted;
  stopper.join();
  client.join();
  return r;
}

/// The rounds of measure_server against raw_run, and their sums.
struct rounds_result {
  std::vector<double> raw;     ///< the reference's connections per second, per round
  std::vector<double> ours;    ///< the server's, per round
  std::vector<double> ratios;  ///< per round: the server run against the raw run beside it
  std::uint64_t accepted = 0;  ///< the server's, steady state
  std::size_t allocations = 0;
  std::uint64_t sqes = 0;
  std::uint64_t accepted_total = 0;
  double server_cpu_us = 0;
  std::uint64_t raw_accepted = 0;
  double raw_cpu_us = 0;

  /// Heap allocations per connection accepted in the steady state (-1: none accepted).
  [[nodiscard]] double allocations_per_connection() const {
    return accepted > 0 ? static_cast<double>(allocations) / static_cast<double>(accepted) : -1;
  }
};

/// `rounds` runs of `Server` and of the reference, `run_length` each, interleaved and in
/// alternating order, so that drift on a shared machine hits both alike. With `verbose`, one
/// line per round on stderr naming the server `name`.
template <typename Server>
rounds_result interleaved_rounds(int rounds, std::chrono::milliseconds run_length, const char* name, bool verbose) {
  const auto per_second = [&](std::uint64_t n) {
    return static_cast<double>(n) * 1000.0 / static_cast<double>(run_length.count());
  };
  rounds_result out;
  raw_run(std::chrono::milliseconds(200));  // warm-up
  for (int i = 0; i < rounds; ++i) {
    raw_result r;
    server_run s;
    if (i % 2 == 0) {
      r = raw_run(run_length);
      s = measure_server<Server>(run_length);
    } else {
      s = measure_server<Server>(run_length);
      r = raw_run(run_length);
    }
    out.raw.push_back(per_second(r.accepted));
    out.ours.push_back(per_second(s.accepted));
    out.ratios.push_back(r.accepted > 0 ? static_cast<double>(s.accepted) / static_cast<double>(r.accepted) : 0);
    if (verbose) {
      std::fprintf(stderr, "round %d: raw %.0f %s %.0f ratio %.3f\n", i, out.raw.back(), name, out.ours.back(),
                   out.ratios.back());
    }
    out.accepted += s.accepted;
    out.allocations += s.allocations;
    out.sqes += s.sqes;
    out.accepted_total += s.accepted_total;
    out.server_cpu_us += s.cpu_us;
    out.raw_accepted += r.accepted;
    out.raw_cpu_us += r.cpu_us;
  }
  return out;
}

// ---- exhaustion, in a child with a low RLIMIT_NOFILE -------------------------------------

/// What measure_exhaustion found.
struct exhaustion_figures {
  std::vector<double> recovery_ms;   ///< per trial: a release until the waiting client's answer
  double cpu_percent = 0;            ///< the child's CPU while exhausted, % of wall time
  double log_lines_per_episode = 0;  ///< policy events per exhaustion episode
  bool ok = false;                   ///< every trial had its answer

  /// The median recovery (0: none).
  [[nodiscard]] double recovery_median() const { return median(recovery_ms); }
  /// The longest recovery (-1: none).
  [[nodiscard]] double recovery_max() const {
    return recovery_ms.empty() ? -1 : *std::ranges::max_element(recovery_ms);
  }
};

/// The rows both tables have, names padded to `width`: allocations per connection (of
/// `rounds_run`) and the exhaustion figures `ex`.
inline void print_shared_rows(int width, const rounds_result& rounds_run, const exhaustion_figures& ex) {
  std::printf("%-*s %14.4f 0\n", width, "allocations per connection", rounds_run.allocations_per_connection());
  std::printf("%-*s %14.3f <= 0.5\n", width, "recovery median (ms)", ex.recovery_median());
  std::printf("%-*s %14.3f <= 2\n", width, "recovery max (ms)", ex.recovery_max());
  std::printf("%-*s %14.3f <= 1 (test: <= 5)\n", width, "CPU while exhausted (%)", ex.cpu_percent);
  std::printf("%-*s %14.2f <= 2\n", width, "log lines per episode", ex.log_lines_per_episode);
}

/// The line after the table: what was measured, and whether a trial failed.
inline void print_summary(const accept_bench_settings& settings, const exhaustion_figures& ex) {
  std::printf("(%d interleaved rounds of %lld ms; %zu recovery trials after %lld ms exhausted%s)\n", settings.rounds,
              static_cast<long long>(settings.run_length.count()), ex.recovery_ms.size(),
              static_cast<long long>(settings.exhausted_for.count()), ex.ok ? "" : "; SOME TRIALS FAILED");
}

/// The next line from `fd` (through `buffer`), or "" after 5 s without one.
inline std::string read_line(int fd, std::string& buffer) {
  for (int i = 0; i < 1000; ++i) {
    if (const auto end = buffer.find('\n'); end != std::string::npos) {
      std::string line = buffer.substr(0, end);
      buffer.erase(0, end + 1);
      return line;
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) {
      return {};
    }
    char chunk[256];
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n <= 0) {
      return {};
    }
    buffer.append(chunk, static_cast<std::size_t>(n));
  }
  return {};
}

/// True if a byte comes on `fd` within `limit` (the holding server's answer).
inline bool answered(int fd, std::chrono::milliseconds limit) {
  pollfd p{fd, POLLIN, 0};
  char byte = 0;
  return ::poll(&p, 1, static_cast<int>(limit.count())) == 1 && ::recv(fd, &byte, 1, 0) == 1;
}

/// A forked holding server over `Server` is filled until a client waits, then `trials` times
/// left exhausted for `exhausted_for` (its CPU measured) and given one release (the waiting
/// client's answer timed). Fork it before the process has threads.
template <typename Server>
exhaustion_figures measure_exhaustion(int trials, std::chrono::milliseconds exhausted_for) {
  using namespace std::chrono_literals;
  int down[2];
  int up[2];
  if (::pipe2(down, O_CLOEXEC) != 0 || ::pipe2(up, O_CLOEXEC) != 0) {
    return {};
  }
  const pid_t pid = ::fork();
  if (pid == 0) {
    test::run_holding_server<Server>(down[0], up[1], 64);
  }
  ::close(down[0]);
  ::close(up[1]);
  const unique_fd commands(down[1]);
  const unique_fd reports(up[0]);
  std::string buffer;
  exhaustion_figures f;
  const std::string port = read_line(reports.get(), buffer);
  const auto where = parse_endpoint("127.0.0.1:" + port.substr(5));
  const auto connect_one = [&] {
    unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_storage address{};
    const socklen_t length = where.to_sockaddr(address);
    ::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), length);
    return fd;
  };
  std::vector<unique_fd> served;
  unique_fd pending;
  for (int i = 0; i < 100 && !pending; ++i) {
    unique_fd c = connect_one();
    if (answered(c.get(), 300ms)) {
      served.push_back(std::move(c));
    } else {
      pending = std::move(c);
    }
  }
  const auto cpu_of = [&] {
    [[maybe_unused]] const ssize_t n = ::write(commands.get(), "c", 1);
    unsigned long long cpu = 0;
    int events = 0;
    std::sscanf(read_line(reports.get(), buffer).c_str(), "cpu %llu events %d", &cpu, &events);
    return std::pair{static_cast<double>(cpu), events};
  };
  double cpu_total = 0;
  double wall_total = 0;
  const int events_start = cpu_of().second;
  for (int t = 0; t < trials && pending; ++t) {
    const auto [cpu_before, events_before] = cpu_of();
    const auto wall_start = clock_type::now();
    std::this_thread::sleep_for(exhausted_for);
    const auto [cpu_after, events_after] = cpu_of();
    cpu_total += cpu_after - cpu_before;
    wall_total += since_ms(wall_start) * 1000.0;
    const auto released = clock_type::now();
    [[maybe_unused]] const ssize_t n = ::write(commands.get(), "r", 1);
    if (!answered(pending.get(), 2s)) {
      break;
    }
    f.recovery_ms.push_back(since_ms(released));
    served.push_back(std::move(pending));
    pending = connect_one();
  }
  const int events_end = cpu_of().second;
  [[maybe_unused]] const ssize_t n = ::write(commands.get(), "q", 1);
  int status = 0;
  ::waitpid(pid, &status, 0);
  f.ok = static_cast<int>(f.recovery_ms.size()) == trials;
  f.cpu_percent = wall_total > 0 ? 100.0 * cpu_total / wall_total : 0;
  // Episodes: the first exhaustion plus one per trial (each release ends one, the next
  // accept starts another).
  f.log_lines_per_episode = static_cast<double>(events_end - events_start + 1) / static_cast<double>(trials + 1);
  return f;
}

}  // namespace transient::bench
