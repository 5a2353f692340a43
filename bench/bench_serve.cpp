// transient_bench_serve: what `transient serve` (the real binary) costs per connection, against
// a minimal raw single-threaded epoll HTTP responder written here, under the same load.
//
//   serve_conns_per_s / raw_conns_per_s         completed connections per second (medians)
//   serve_ratio_vs_raw                          median of the per-round ratios serve / raw
//   serve_cpu_us_per_conn / raw_cpu_us_per_conn server CPU (utime + stime of the whole process,
//                                               all threads, from /proc/PID/stat) per connection
//   serve_cpu_ratio_vs_raw                      median of the per-round ratios serve / raw
//
// Each connection of the load generator (8 client threads by default) connects, sends one
// `GET /`, reads the whole response, checks it byte for byte and closes with a reset
// (SO_LINGER 0): no TIME_WAIT piles up in the ephemeral range at any rate. Both servers run in
// their own processes for the whole run (the raw responder in a child forked before any thread
// exists), so each one's CPU is read the same way. Within a round the load moves from one
// server to the other every 100 ms until each had `--seconds` of it, and the round gives one
// ratio: load from elsewhere on the machine, which changes over seconds, falls on both sides
// of a ratio alike. CPU comes in clock ticks (usually 10 ms), read at a round's start and end:
// over a 2 s round that is under 1 % of the figure.
//
// Prints one line per round, then one JSON object as the last line. Bounded: about 30 s with
// the defaults (7 rounds of 2 s per server); --rounds x --seconds is capped at 300 s per server.
// Usage: transient_bench_serve [--serve PATH] [--threads N] [--rounds N] [--seconds S] [--clients N]
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "support/child_report.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using transient::unique_fd;

// What both servers answer to `GET /` on a keep-alive connection (serve's ok_response).
constexpr std::string_view request = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
constexpr std::string_view response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";

struct settings {
  std::string serve_path;
  unsigned threads = 1;
  unsigned rounds = 7;
  double seconds = 2.0;
  unsigned clients = 8;
};

double median(std::vector<double> v) {
  std::ranges::sort(v);
  if (v.empty()) {
    return 0.0;
  }
  const std::size_t mid = v.size() / 2;
  return v.size() % 2 == 1 ? v[mid] : (v[mid - 1] + v[mid]) / 2.0;
}

// utime + stime of process `pid`, all its threads (live and exited), in microseconds.
std::int64_t process_cpu_us(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto paren = text.rfind(')');  // the command name may contain spaces and parentheses
  if (paren == std::string::npos) {
    return -1;
  }
  std::istringstream fields(text.substr(paren + 2));
  std::string field;
  std::int64_t utime = 0;
  std::int64_t stime = 0;
  // After the name: state is field 3; utime and stime are fields 14 and 15.
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) {
      utime = std::stoll(field);
    } else if (i == 15) {
      stime = std::stoll(field);
    }
  }
  static const long ticks_per_second = ::sysconf(_SC_CLK_TCK);
  return (utime + stime) * 1000000 / ticks_per_second;
}

// ---- the raw responder -----------------------------------------------------------------

// The reference: the smallest correct single-threaded level-triggered epoll HTTP responder for
// this load. Answers each request head ("\r\n\r\n"; `GET /` has no body) with `response`,
// keeps the connection open, and closes it on end of file or error. A partial head waits in a
// per-descriptor buffer. A response the socket does not take whole (never, for 66 bytes on a
// fresh loopback connection) closes the connection: no output buffering.
[[noreturn]] void raw_responder(int port_out, int control) {
  const unique_fd l(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  const int one = 1;
  ::setsockopt(l.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (::bind(l.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(l.get(), SOMAXCONN) != 0 ||  // the kernel caps it at somaxconn, as serve's backlog 0 does
      ::getsockname(l.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    transient::test::write_line(port_out, "0");
    ::_exit(1);
  }
  transient::test::write_line(port_out, std::to_string(ntohs(address.sin_port)));
  const unique_fd epoll(::epoll_create1(EPOLL_CLOEXEC));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = l.get();
  ::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, l.get(), &ev);
  ev.data.fd = control;  // end of file: the benchmark is done (or gone)
  ::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, control, &ev);
  std::vector<std::string> partial(1024);
  std::array<epoll_event, 64> ready{};
  std::array<char, 4096> buffer{};
  for (;;) {
    const int n = ::epoll_wait(epoll.get(), ready.data(), static_cast<int>(ready.size()), -1);
    for (int i = 0; i < n; ++i) {
      const int fd = ready[static_cast<std::size_t>(i)].data.fd;
      if (fd == control) {
        ::_exit(0);
      }
      if (fd == l.get()) {
        for (int k = 0; k < 64; ++k) {
          const int c = ::accept4(l.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0) {
            break;
          }
          if (static_cast<std::size_t>(c) >= partial.size()) {
            partial.resize(static_cast<std::size_t>(c) * 2);
          }
          ev.data.fd = c;
          if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, c, &ev) != 0) {
            ::close(c);
          }
        }
        continue;
      }
      const ssize_t got = ::recv(fd, buffer.data(), buffer.size(), 0);
      if (got < 0 && (errno == EAGAIN || errno == EINTR)) {
        continue;
      }
      std::string& in = partial[static_cast<std::size_t>(fd)];
      bool keep = got > 0;
      if (keep) {
        std::string_view data(buffer.data(), static_cast<std::size_t>(got));
        if (!in.empty()) {
          in.append(data);
          data = in;
        }
        std::size_t answered = 0;
        for (auto end = data.find("\r\n\r\n"); keep && end != std::string_view::npos;
             end = data.find("\r\n\r\n", answered)) {
          answered = end + 4;
          keep = ::send(fd, response.data(), response.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(response.size());
        }
        in = std::string(data.substr(answered));  // usually empty: no allocation
        keep = keep && in.size() <= 8192;
      }
      if (!keep) {
        in.clear();
        ::close(fd);  // also leaves the epoll set
      }
    }
  }
}

struct raw_child {
  pid_t pid = -1;
  unique_fd control;  // closing it stops the child
  std::uint16_t port = 0;
};

// Forks the raw responder. Must run before the process starts any thread.
raw_child start_raw() {
  int port_pipe[2];
  int control_pipe[2];
  if (::pipe2(port_pipe, O_CLOEXEC) != 0 || ::pipe2(control_pipe, O_CLOEXEC) != 0) {
    return {};
  }
  raw_child r;
  r.pid = ::fork();
  if (r.pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::close(port_pipe[0]);
    ::close(control_pipe[1]);
    raw_responder(port_pipe[1], control_pipe[0]);
  }
  ::close(port_pipe[1]);
  ::close(control_pipe[0]);
  r.control.reset(control_pipe[1]);
  const unique_fd port_in(port_pipe[0]);
  const std::string line = transient::test::read_line(port_in.get(), 5s);
  unsigned port = 0;
  std::from_chars(line.data(), line.data() + line.size(), port);
  r.port = static_cast<std::uint16_t>(port);
  return r;
}

// ---- transient serve -------------------------------------------------------------------

struct serve_child {
  pid_t pid = -1;
  std::uint16_t port = 0;
  std::string stderr_path;  // what serve said on stderr, shown at the end
};

// Starts `transient serve --listen 127.0.0.1:0 --threads N` and reads its port from the
// "listening on 127.0.0.1:PORT (verified)" line.
serve_child start_serve(const settings& s) {
  serve_child c;
  char path[] = "/tmp/transient_bench_serve_XXXXXX";
  const unique_fd err(::mkstemp(path));
  c.stderr_path = path;
  int out[2];
  if (!err || ::pipe2(out, O_CLOEXEC) != 0) {
    return c;
  }
  std::vector<std::string> args = {s.serve_path,  "serve",     "--listen",
                                   "127.0.0.1:0", "--threads", std::to_string(s.threads)};
  std::vector<char*> argv;
  for (auto& a : args) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  c.pid = ::fork();
  if (c.pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    ::dup2(out[1], 1);
    ::dup2(err.get(), 2);
    ::execv(s.serve_path.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  const unique_fd out_in(out[0]);
  const std::string line = transient::test::read_line(out_in.get(), 10s);
  const auto colon = line.rfind(':');
  unsigned port = 0;
  if (line.starts_with("listening on ") && colon != std::string::npos) {
    std::from_chars(line.data() + colon + 1, line.data() + line.size(), port);
  }
  c.port = static_cast<std::uint16_t>(port);
  return c;
}

// ---- the load generator ----------------------------------------------------------------

// One connection: connect, send `request`, read until `response` has come whole, close with a
// reset. Every blocking call is bounded by the socket timeouts.
bool one_connection(const sockaddr_in& to) {
  const unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const linger reset{1, 0};
  const timeval limit{2, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0 ||
      ::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
    return false;
  }
  std::array<char, 256> got{};
  std::size_t have = 0;
  while (have < response.size()) {
    const ssize_t n = ::recv(fd.get(), got.data() + have, got.size() - have, 0);
    if (n <= 0) {
      return false;
    }
    have += static_cast<std::size_t>(n);
  }
  return std::string_view(got.data(), have) == response;
}

struct round_result {
  double conns_per_s = 0;
  double cpu_us_per_conn = 0;
  std::uint64_t failed = 0;
};

// Which server the load generator's clients connect to: its index in `targets`.
constexpr std::size_t raw_target = 0;
constexpr std::size_t serve_target = 1;
constexpr auto slice = 100ms;  // how long the load stays on one server before it moves to the other

// One round: the clients' load moves between the two servers every `slice` (raw first), until
// each had `seconds` of it, so a change of load elsewhere on the machine falls on both alike.
// A server without load sleeps in epoll_wait: its CPU over the whole round is the CPU its
// connections cost. Connections are counted for the server they went to.
std::array<round_result, 2> measure(const std::array<sockaddr_in, 2>& targets, const std::array<pid_t, 2>& servers,
                                    const settings& s) {
  struct alignas(64) counters {
    std::array<std::atomic<std::uint64_t>, 2> done{};    // connections that got the whole, right response
    std::array<std::atomic<std::uint64_t>, 2> failed{};  // connect/send/receive failed or the response differed
  };
  std::vector<counters> per_client(s.clients);
  std::atomic<std::size_t> target{raw_target};
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  for (unsigned i = 0; i < s.clients; ++i) {
    clients.emplace_back([&, i] {
      while (!stop.load(std::memory_order_relaxed)) {
        const std::size_t t = target.load(std::memory_order_relaxed);
        auto& counter = one_connection(targets[t]) ? per_client[i].done[t] : per_client[i].failed[t];
        counter.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  const auto total = [&per_client](bool done, std::size_t t) {
    std::uint64_t sum = 0;
    for (const auto& c : per_client) {
      sum += (done ? c.done[t] : c.failed[t]).load(std::memory_order_relaxed);
    }
    return sum;
  };
  std::array<std::uint64_t, 2> done_before{total(true, 0), total(true, 1)};
  std::array<std::uint64_t, 2> failed_before{total(false, 0), total(false, 1)};
  std::array<std::int64_t, 2> cpu_before{process_cpu_us(servers[0]), process_cpu_us(servers[1])};
  std::array<clock_type::duration, 2> loaded{};
  const auto slices = static_cast<int>(std::ceil(std::chrono::duration<double>(s.seconds) / slice));
  for (int k = 0; k < 2 * slices; ++k) {
    const std::size_t t = k % 2 == 0 ? raw_target : serve_target;
    target.store(t, std::memory_order_relaxed);
    const auto start = clock_type::now();
    std::this_thread::sleep_for(slice);
    loaded[t] += clock_type::now() - start;
  }
  stop = true;
  for (auto& c : clients) {
    c.join();
  }
  std::this_thread::sleep_for(100ms);  // let the servers close what the last resets left
  std::array<round_result, 2> r;
  for (std::size_t t = 0; t < 2; ++t) {
    const std::uint64_t done = total(true, t) - done_before[t];
    const std::int64_t cpu = process_cpu_us(servers[t]) - cpu_before[t];
    r[t].failed = total(false, t) - failed_before[t];
    r[t].conns_per_s = static_cast<double>(done) / std::chrono::duration<double>(loaded[t]).count();
    r[t].cpu_us_per_conn = done == 0 ? 0.0 : static_cast<double>(cpu) / static_cast<double>(done);
  }
  return r;
}

// ---- command line and report ------------------------------------------------------------

std::string own_directory() {
  std::array<char, 4096> path{};
  const ssize_t n = ::readlink("/proc/self/exe", path.data(), path.size() - 1);
  std::string p(path.data(), n > 0 ? static_cast<std::size_t>(n) : 0);
  return p.substr(0, p.rfind('/'));
}

bool parse(int argc, char** argv, settings& s) {
  s.serve_path = own_directory() + "/../tools/transient";
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
    if (value == nullptr) {
      return false;
    }
    ++i;
    char* end = nullptr;
    if (flag == "--serve") {
      s.serve_path = value;
    } else if (flag == "--threads") {
      s.threads = static_cast<unsigned>(std::strtoul(value, &end, 10));
    } else if (flag == "--rounds") {
      s.rounds = static_cast<unsigned>(std::strtoul(value, &end, 10));
    } else if (flag == "--seconds") {
      s.seconds = std::strtod(value, &end);
    } else if (flag == "--clients") {
      s.clients = static_cast<unsigned>(std::strtoul(value, &end, 10));
    } else {
      return false;
    }
    if (end != nullptr && *end != '\0') {
      return false;
    }
  }
  return s.threads >= 1 && s.rounds >= 1 && s.seconds > 0 && s.seconds <= 60 && s.clients >= 1 && s.clients <= 256 &&
         s.rounds * s.seconds <= 300;
}

std::string json_list(const std::vector<double>& v, int precision) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) {
    char number[32];
    std::snprintf(number, sizeof number, "%.*f", precision, v[i]);
    out += i == 0 ? "" : ",";  // appended, not prepended to a temporary: g++ 12's false -Wrestrict (GCC bug 105329)
    out += number;
  }
  return out + "]";
}

void show_stderr(const serve_child& c) {
  std::ifstream in(c.stderr_path);
  for (std::string line; std::getline(in, line);) {
    std::fprintf(stderr, "serve stderr: %s\n", line.c_str());
  }
  ::unlink(c.stderr_path.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  settings s;
  if (!parse(argc, argv, s)) {
    std::fprintf(stderr,
                 "usage: transient_bench_serve [--serve PATH] [--threads N] [--rounds N] [--seconds S] "
                 "[--clients N]\n");
    return 2;
  }
  (void)::signal(SIGPIPE, SIG_IGN);
  raw_child raw = start_raw();  // first: it forks without exec, before any thread exists
  serve_child serve = start_serve(s);
  if (raw.port == 0 || serve.port == 0) {
    std::fprintf(stderr, "could not start the servers (raw port %u, serve port %u from %s)\n", raw.port, serve.port,
                 s.serve_path.c_str());
    show_stderr(serve);
    return 1;
  }
  std::printf(
      "transient serve --threads %u (pid %d, port %u) vs raw epoll responder (pid %d, port %u); "
      "%u clients, %u rounds of %.1f s\n",
      s.threads, static_cast<int>(serve.pid), serve.port, static_cast<int>(raw.pid), raw.port, s.clients, s.rounds,
      s.seconds);
  std::vector<double> raw_rate;
  std::vector<double> raw_cpu;
  std::vector<double> serve_rate;
  std::vector<double> serve_cpu;
  std::vector<double> rate_ratio;
  std::vector<double> cpu_ratio;
  std::uint64_t failed = 0;
  const auto loopback = [](std::uint16_t port) {
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return to;
  };
  const std::array<sockaddr_in, 2> targets{loopback(raw.port), loopback(serve.port)};
  settings warm_up = s;
  warm_up.seconds = 0.2;
  (void)measure(targets, {raw.pid, serve.pid}, warm_up);  // both servers' caches, buffers and slots
  for (unsigned round = 1; round <= s.rounds; ++round) {
    const auto [r, v] = measure(targets, {raw.pid, serve.pid}, s);
    failed += r.failed + v.failed;
    raw_rate.push_back(r.conns_per_s);
    raw_cpu.push_back(r.cpu_us_per_conn);
    serve_rate.push_back(v.conns_per_s);
    serve_cpu.push_back(v.cpu_us_per_conn);
    rate_ratio.push_back(r.conns_per_s > 0 ? v.conns_per_s / r.conns_per_s : 0.0);
    cpu_ratio.push_back(r.cpu_us_per_conn > 0 ? v.cpu_us_per_conn / r.cpu_us_per_conn : 0.0);
    std::printf(
        "round %u  raw %8.0f conn/s %6.2f us/conn | serve %8.0f conn/s %6.2f us/conn | ratio %.3f  "
        "cpu ratio %.3f%s\n",
        round, r.conns_per_s, r.cpu_us_per_conn, v.conns_per_s, v.cpu_us_per_conn, rate_ratio.back(), cpu_ratio.back(),
        r.failed + v.failed > 0 ? "  (failed connections!)" : "");
    std::fflush(stdout);
  }
  raw.control.reset();
  const int raw_status = transient::test::reap_within(raw.pid, 5s);
  ::kill(serve.pid, SIGTERM);
  const int serve_status = transient::test::reap_within(serve.pid, 10s);
  show_stderr(serve);
  std::printf("median: raw %.0f conn/s %.2f us/conn | serve %.0f conn/s %.2f us/conn | ratio %.3f  cpu ratio %.3f\n",
              median(raw_rate), median(raw_cpu), median(serve_rate), median(serve_cpu), median(rate_ratio),
              median(cpu_ratio));
  std::printf(
      "{\"serve_threads\":%u,\"clients\":%u,\"rounds\":%u,\"seconds\":%.1f,"
      "\"serve_conns_per_s\":%.0f,\"raw_conns_per_s\":%.0f,\"serve_ratio_vs_raw\":%.3f,"
      "\"serve_cpu_us_per_conn\":%.2f,\"raw_cpu_us_per_conn\":%.2f,\"serve_cpu_ratio_vs_raw\":%.3f,"
      "\"serve_conns_per_s_rounds\":%s,\"raw_conns_per_s_rounds\":%s,\"serve_ratio_rounds\":%s,"
      "\"serve_cpu_us_per_conn_rounds\":%s,\"raw_cpu_us_per_conn_rounds\":%s,\"serve_cpu_ratio_rounds\":%s,"
      "\"failed_connections\":%llu,\"serve_exit\":%d,\"raw_exit\":%d}\n",
      s.threads, s.clients, s.rounds, s.seconds, median(serve_rate), median(raw_rate), median(rate_ratio),
      median(serve_cpu), median(raw_cpu), median(cpu_ratio), json_list(serve_rate, 0).c_str(),
      json_list(raw_rate, 0).c_str(), json_list(rate_ratio, 3).c_str(), json_list(serve_cpu, 2).c_str(),
      json_list(raw_cpu, 2).c_str(), json_list(cpu_ratio, 3).c_str(), static_cast<unsigned long long>(failed),
      serve_status, raw_status);
  return failed == 0 && serve_status == 0 && raw_status == 0 ? 0 : 1;
}
