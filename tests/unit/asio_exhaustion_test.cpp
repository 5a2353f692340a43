// The Asio adapter under real descriptor exhaustion: a child process lowers its
// RLIMIT_NOFILE soft limit to 64 and runs the loop with a budget far above what the limit
// allows, so accept(2) fails with EMFILE while clients wait in the backlog (docs/design.md: the
// kernel fails the accept without consuming the queued client). The parent is the client.
//
// Checked: the loop does not spin (its CPU time while exhausted is at most 5 % of the wall
// time), the policy reports at most two lines per episode, a released connection lets the
// next queued client in, and with nothing released the stall watchdog ends the loop with
// condition::stalled and a diagnosis. Every wait is bounded; the child is killed if late.
#include "support/asio_warnings.hpp"  // first: before any Asio header

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "asio_support.hpp"
#include "support/child_report.hpp"
#include "support/loopback.hpp"

namespace {

using namespace std::chrono_literals;
using namespace transient::test;
namespace tasio = adapter;
using clock_type = std::chrono::steady_clock;

constexpr rlim_t child_fd_limit = 64;
constexpr int clients_count = 80;  // more than the child can hold

void write_all(int fd, const std::string& text) {
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n <= 0) {
      return;
    }
    done += static_cast<std::size_t>(n);
  }
}

// What the child measured, one "key=value" per field on one line.
struct child_report {
  std::string line;
  [[nodiscard]] long long get(const std::string& key) const {
    const auto at = line.find(key + "=");
    return at == std::string::npos ? -1 : std::stoll(line.substr(at + key.size() + 1));
  }
  [[nodiscard]] std::string text(const std::string& key) const {
    const auto at = line.find(key + "=");
    return at == std::string::npos ? std::string() : line.substr(at + key.size() + 1);
  }
};

// The child: loop with RLIMIT_NOFILE 64. Commands on `control`: 'r' releases one held
// connection, 'q' stops the loop. Writes its port, then its report, on `report`.
[[noreturn]] void run_child(int control_fd, int report_fd, bool stall) {
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = child_fd_limit;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    write_all(report_fd, "setrlimit failed\n");
    ::_exit(1);
  }
  try {
    net::io_context io;
    auto acceptor = transient::test::loopback_acceptor(io);
    write_all(report_fd, std::to_string(acceptor.local_endpoint().port()) + "\n");
    net::posix::stream_descriptor control(io, control_fd);

    std::deque<tasio::accepted_socket> held;
    std::vector<transient::policy_event_kind> events;
    std::int64_t cpu_start = -1;
    std::int64_t cpu_end = -1;
    clock_type::time_point wall_start{};
    clock_type::time_point wall_end{};

    tasio::loop_options options;
    options.max_connections = 1000;  // far above what RLIMIT_NOFILE 64 allows: accept hits EMFILE
    options.policy.stall_timeout = stall ? std::chrono::milliseconds(500) : std::chrono::milliseconds(0);
    options.policy.sink = [&](const transient::policy_event& e) {
      // A stop during an episode that has not recovered ends it: that line counts as its end.
      const bool ends_episode = e.kind == transient::policy_event_kind::stopped && e.failures != 0;
      events.push_back(ends_episode ? transient::policy_event_kind::recovered : e.kind);
      if (e.kind == transient::policy_event_kind::degraded && cpu_start < 0) {
        cpu_start = cpu_microseconds();
        wall_start = clock_type::now();
      }
    };
    transient::test::stop_signal cancel;
    transient::test::loop_outcome outcome;
    tasio::async_accept_loop(
        acceptor,
        [&](tasio::accepted_socket c) {
          transient::test::net_error_code ignored;
          net::write(c.socket, net::buffer("hi", 2), ignored);
          held.push_back(std::move(c));
        },
        options, cancel.bind(transient::test::completion_into(outcome)));

    char command = 0;
    std::function<void()> read_command = [&] {
      net::async_read(control, net::buffer(&command, 1), [&](const transient::test::net_error_code& ec, std::size_t) {
        if (!ec && command == 'r') {
          cpu_end = cpu_microseconds();
          wall_end = clock_type::now();
          held.pop_front();  // closes the socket, then releases its permit: the loop resumes
          read_command();
        } else {
          cancel.emit(acceptor);
        }
      });
    };
    read_command();
    const auto deadline = clock_type::now() + 20s;
    while (!outcome.done && clock_type::now() < deadline) {
      io.run_one_for(100ms);
    }

    // Lines of the first episode: from `degraded` to its end (`recovered`, or the stop line
    // of an episode still failing), inclusive.
    int episode_lines = 0;
    bool recovered = false;
    bool in_episode = false;
    for (const auto kind : events) {
      if (kind == transient::policy_event_kind::degraded) {
        in_episode = true;
      }
      if (in_episode && !recovered &&
          (kind == transient::policy_event_kind::degraded || kind == transient::policy_event_kind::still_degraded ||
           kind == transient::policy_event_kind::recovered)) {
        ++episode_lines;
        recovered = kind == transient::policy_event_kind::recovered;
      }
    }
    std::string diagnosis = outcome.report.diagnosis;
    for (char& c : diagnosis) {
      c = c == '\n' ? '|' : c;
    }
    const auto wall_us = std::chrono::duration_cast<std::chrono::microseconds>(wall_end - wall_start).count();
    write_all(report_fd, "done=" + std::to_string(outcome.done ? 1 : 0) +
                             " stalled=" + std::to_string(outcome.error == transient::condition::stalled ? 1 : 0) +
                             " clean=" + std::to_string(outcome.done && !outcome.error ? 1 : 0) +
                             " cpu_us=" + std::to_string(cpu_end - cpu_start) + " wall_us=" + std::to_string(wall_us) +
                             " episode_lines=" + std::to_string(episode_lines) +
                             " recovered=" + std::to_string(recovered ? 1 : 0) + " diagnosis=" + diagnosis + "\n");
  } catch (const std::exception& e) {
    write_all(report_fd, std::string("exception=") + e.what() + "\n");
  }
  ::_exit(0);
}

// The parent's side: a child and the pipes to it; kills and reaps the child on destruction.
struct child_process {
  pid_t pid = -1;
  transient::unique_fd control;
  transient::unique_fd report;
  transient::endpoint where;

  explicit child_process(bool stall) {
    int control_pipe[2];
    int report_pipe[2];
    if (::pipe2(control_pipe, O_CLOEXEC) != 0 || ::pipe2(report_pipe, O_CLOEXEC) != 0) {
      ADD_FAILURE() << "pipe2";
      return;
    }
    pid = ::fork();
    if (pid == 0) {
      ::close(control_pipe[1]);
      ::close(report_pipe[0]);
      run_child(control_pipe[0], report_pipe[1], stall);
    }
    ::close(control_pipe[0]);
    ::close(report_pipe[1]);
    control.reset(control_pipe[1]);
    report.reset(report_pipe[0]);
    const std::string port = read_line(report.get(), 5s);
    if (!port.empty() && port.find_first_not_of("0123456789") == std::string::npos) {
      where = transient::parse_endpoint("127.0.0.1:" + port);
    } else {
      ADD_FAILURE() << "the child did not start: " << port;
    }
  }
  ~child_process() {
    if (pid <= 0) {
      return;
    }
    transient::test::reap_within(pid, 5s);
  }
  void send(char command) const { ASSERT_EQ(::write(control.get(), &command, 1), 1); }
};

// Connects clients_count clients to the child at `where`: it serves some, the others wait in
// its backlog.
void connect_clients(const transient::endpoint& where, std::vector<transient::unique_fd>& clients) {
  for (int i = 0; i < clients_count; ++i) {
    clients.push_back(transient::test::connect_to(where));
    ASSERT_TRUE(clients.back()) << "client " << i;
  }
}

// The clients that have been answered ("hi") so far; `served` remembers earlier answers.
int count_served(const std::vector<transient::unique_fd>& clients, std::vector<bool>& served) {
  int count = 0;
  for (std::size_t i = 0; i < clients.size(); ++i) {
    if (!served[i]) {
      served[i] = transient::test::read_some(clients[i].get(), 0ms) == "hi";
    }
    count += served[i] ? 1 : 0;
  }
  return count;
}

TEST(AsioExhaustion, NoSpinTwoLinesPerEpisodeAndAReleaseLetsTheNextClientIn) {
  child_process child(false);
  ASSERT_GT(child.pid, 0);
  std::vector<transient::unique_fd> clients;
  ASSERT_NO_FATAL_FAILURE(connect_clients(child.where, clients));
  std::vector<bool> served(clients.size(), false);
  std::this_thread::sleep_for(300ms);
  const int before = count_served(clients, served);
  EXPECT_GT(before, 20) << "the child served almost nobody before running out of descriptors";
  EXPECT_LT(before, static_cast<int>(child_fd_limit)) << "the limit did not bind";

  std::this_thread::sleep_for(1500ms);  // exhausted: clients wait in the backlog
  EXPECT_EQ(count_served(clients, served), before) << "a client was served while descriptors were exhausted";

  child.send('r');
  int after = before;
  const auto deadline = clock_type::now() + 3s;
  while (after == before && clock_type::now() < deadline) {
    std::this_thread::sleep_for(2ms);
    after = count_served(clients, served);
  }
  EXPECT_EQ(after, before + 1) << "the pending client was not served after a release";
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(count_served(clients, served), before + 1) << "one release, one descriptor, one more client";

  child.send('q');
  const child_report r{read_line(child.report.get(), 10s)};
  ASSERT_EQ(r.get("done"), 1) << r.line;
  EXPECT_EQ(r.get("clean"), 1) << r.line;
  const long long wall = r.get("wall_us");
  const long long cpu = r.get("cpu_us");
  EXPECT_GE(wall, 1'400'000) << r.line;
  EXPECT_GE(cpu, 0) << r.line;
  EXPECT_LE(cpu * 100, wall * 5) << "the exhausted loop used more than 5 % of a core: " << r.line;
  // The release let one client in and the accept after it failed again within the quiet
  // period: one episode, ended by the stop line.
  EXPECT_EQ(r.get("recovered"), 1) << r.line;
  EXPECT_LE(r.get("episode_lines"), 2) << r.line;
  EXPECT_GE(r.get("episode_lines"), 2) << "an episode is reported when it begins and when it ends: " << r.line;
  RecordProperty("exhausted_cpu_us", std::to_string(cpu));
  RecordProperty("exhausted_wall_us", std::to_string(wall));
}

TEST(AsioExhaustion, WatchdogStopsAStalledLoopWithADiagnosis) {
  child_process child(true);
  ASSERT_GT(child.pid, 0);
  std::vector<transient::unique_fd> clients;
  ASSERT_NO_FATAL_FAILURE(connect_clients(child.where, clients));
  const child_report r{read_line(child.report.get(), 10s)};  // stall_timeout is 500 ms
  ASSERT_EQ(r.get("done"), 1) << r.line;
  EXPECT_EQ(r.get("stalled"), 1) << r.line;
  const std::string diagnosis = r.text("diagnosis");
  EXPECT_NE(diagnosis.find("RLIMIT_NOFILE soft 64"), std::string::npos) << diagnosis;
  EXPECT_NE(diagnosis.find("max_connections (1000)"), std::string::npos) << diagnosis;
}

}  // namespace
