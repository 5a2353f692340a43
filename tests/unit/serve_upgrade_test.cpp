// ctest-labels: threads
// `transient serve`'s upgrade in place with real processes: SIGHUP under continuous load (both
// engines), the successor serving with no client refused, reset or left without an answer and
// no descriptor left behind; and each way a successor can fail, the old process serving on.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/agent_check.hpp"
#include "support/loopback.hpp"
#include "support/process_threads.hpp"
#include "support/sanitizers.hpp"
#include "support/serve_process.hpp"
#include "transient/errors/errors.hpp"
#include "transient/sockets/listener.hpp"

namespace {

using namespace std::chrono_literals;
using testing::HasSubstr;
using transient::endpoint;
using transient::unique_fd;
using transient::test::serve_process;
using transient::test::spawned_process;
using clock_type = std::chrono::steady_clock;

// How each request of the load ended.
struct tally {
  std::atomic<int> answered{0};
  std::atomic<int> refused{0};     // ECONNREFUSED at connect
  std::atomic<int> reset{0};       // ECONNRESET or EPIPE anywhere
  std::atomic<int> unanswered{0};  // end of stream or 2 s before a complete response
  std::atomic<int> other{0};       // any other failure (said in the test's output)
};

enum class ending { answered, answered_closing, refused, reset, unanswered, other };

ending failure_of(int error) { return error == ECONNRESET || error == EPIPE ? ending::reset : ending::other; }

// The rest of one response on `fd` (its start already in `in`), within 2 s.
ending read_whole_response(int fd, std::string& in) {
  const auto deadline = clock_type::now() + 2s;
  char buffer[4096];
  while (clock_type::now() < deadline) {
    const std::size_t head = in.find("\r\n\r\n");
    if (head != std::string::npos) {
      const std::size_t at = in.find("Content-Length: ");
      const std::size_t body = at == std::string::npos ? 0 : std::stoul(in.substr(at + 16));
      if (in.size() >= head + 4 + body) {
        return in.find("Connection: close") != std::string::npos ? ending::answered_closing : ending::answered;
      }
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) {
      continue;
    }
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n == 0) {
      return ending::unanswered;
    }
    if (n < 0) {
      return errno == EINTR ? read_whole_response(fd, in) : failure_of(errno);
    }
    in.append(buffer, static_cast<std::size_t>(n));
  }
  return ending::unanswered;
}

// One GET / on `fd` and its whole response.
ending exchange(int fd) {
  constexpr std::string_view get = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  if (::send(fd, get.data(), get.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(get.size())) {
    return failure_of(errno);
  }
  std::string in;
  return read_whole_response(fd, in);
}

// A blocking connection to `at`, or the ending that says why not.
unique_fd connect_or(const endpoint& at, ending& failed) {
  unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_storage address{};
  const socklen_t length = at.to_sockaddr(address);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), length) != 0) {
    failed = errno == ECONNREFUSED ? ending::refused : failure_of(errno);
    fd.reset();
  }
  return fd;
}

void count(tally& t, ending e) {
  switch (e) {
    case ending::answered:
    case ending::answered_closing: ++t.answered; break;
    case ending::refused: ++t.refused; break;
    case ending::reset: ++t.reset; break;
    case ending::unanswered: ++t.unanswered; break;
    case ending::other: ++t.other; break;
  }
}

// Short clients (connect, GET, response, close) and keep-alive clients (requests back to back;
// a new connection after Connection: close), each on a thread, until destroyed.
class load {
 public:
  load(const endpoint& at, int short_clients, int keep_alive_clients) {
    for (int i = 0; i < short_clients; ++i) {
      threads_.emplace_back([this, at] { run_short(at); });
    }
    for (int i = 0; i < keep_alive_clients; ++i) {
      threads_.emplace_back([this, at] { run_keep_alive(at); });
    }
  }
  ~load() { stop(); }
  load(const load&) = delete;
  load& operator=(const load&) = delete;

  tally counts;

  // Ends every client (each after its request under way); the counts are final then.
  void stop() {
    stop_ = true;
    for (std::thread& t : threads_) {
      if (t.joinable()) {
        t.join();
      }
    }
  }

  // Waits until `more` further requests are answered (false if not within `timeout`).
  bool answers(int more, std::chrono::milliseconds timeout) const {
    const int target = counts.answered.load() + more;
    const auto deadline = clock_type::now() + timeout;
    while (counts.answered.load() < target && clock_type::now() < deadline) {
      std::this_thread::sleep_for(5ms);
    }
    return counts.answered.load() >= target;
  }

 private:
  void run_short(const endpoint& at) {
    while (!stop_) {
      ending e = ending::answered;
      const unique_fd c = connect_or(at, e);
      count(counts, c ? exchange(c.get()) : e);
    }
  }
  void run_keep_alive(const endpoint& at) {
    while (!stop_) {
      ending e = ending::answered;
      const unique_fd c = connect_or(at, e);
      if (!c) {
        count(counts, e);
        continue;
      }
      do {
        e = exchange(c.get());
        count(counts, e);
      } while (e == ending::answered && !stop_);
    }
  }

  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

// The descriptors `pid` holds (-1 if it is gone).
int descriptor_count(pid_t pid) {
  std::error_code ec;
  const std::filesystem::directory_iterator fds("/proc/" + std::to_string(pid) + "/fd", ec);
  return ec ? -1 : static_cast<int>(std::distance(fds, std::filesystem::directory_iterator()));
}

// What `pid`'s descriptors are, one "FD -> TARGET" a line (for a failure's message).
std::string descriptors_of(pid_t pid) {
  std::string out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    out += e.path().filename().string() + " -> " + std::filesystem::read_symlink(e.path(), ec).string() + "\n";
  }
  return out;
}

// Polls `count(pid)` until it is `expected` or `timeout` passed; the last count.
int settles_at(int (*count)(pid_t), pid_t pid, int expected, std::chrono::milliseconds timeout) {
  const auto deadline = clock_type::now() + timeout;
  int n = count(pid);
  while (n != expected && clock_type::now() < deadline) {
    std::this_thread::sleep_for(10ms);
    n = count(pid);
  }
  return n;
}

int descriptors_settle_at(pid_t pid, int expected, std::chrono::milliseconds timeout) {
  return settles_at(&descriptor_count, pid, expected, timeout);
}

// The first line of `which` containing `text` within `timeout` ("" if none); the lines read
// before it are appended to `seen`.
std::string line_with(spawned_process& p, spawned_process::stream which, const std::string& text,
                      std::chrono::milliseconds timeout, std::string& seen) {
  const auto deadline = clock_type::now() + timeout;
  while (clock_type::now() < deadline) {
    const std::string line =
        p.read_line(which, std::chrono::ceil<std::chrono::milliseconds>(deadline - clock_type::now()));
    if (line.find(text) != std::string::npos) {
      return line;
    }
    seen += line.empty() ? "" : line + "\n";
  }
  return {};
}

// The number after `prefix` in `line` (0 if none).
int number_after(const std::string& line, const std::string& prefix) {
  const std::size_t at = line.find(prefix);
  return at == std::string::npos ? 0 : std::atoi(line.c_str() + at + prefix.size());
}

// A loopback address whose port was free a moment ago (the kernel's choice for port 0).
endpoint free_loopback_port() {
  const transient::listener l = transient::listen(endpoint::loopback_v4(0));
  return l.local_endpoint();
}

// The successors are not this process's children: as a subreaper it reaps (and ends) them.
class ServeUpgrade : public testing::TestWithParam<const char*> {
 protected:
  static void SetUpTestSuite() { ::prctl(PR_SET_CHILD_SUBREAPER, 1); }

  // Stops the successor `pid` with SIGTERM and reaps it: its exit status (nullopt: none in 5 s).
  static std::optional<int> stop_successor(pid_t pid) {
    ::kill(pid, SIGTERM);
    const auto deadline = clock_type::now() + 5s;
    int status = 0;
    while (clock_type::now() < deadline) {
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(5ms);
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return std::nullopt;
  }
};

// Under continuous load SIGHUP hands the listeners (serve's and the metrics port's) to a
// successor: the old process drains and exits 0, the successor serves, and no client saw a
// refusal, a reset or a request without its answer. systemd hears the new main PID.
TEST_P(ServeUpgrade, UnderLoadTheSuccessorTakesOverAndNoClientNoticesIt) {
  const std::string engine = GetParam();
  transient::test::fake_notify_socket notify("upgrade-" + engine);
  ASSERT_TRUE(notify.ok());
  serve_process serve({"--engine", engine, "--threads", "2", "--metrics", "127.0.0.1:0"});
  if (!serve.at && engine == "io_uring") {
    GTEST_SKIP() << "serve --engine io_uring does not start here: " << serve.stderr_text();
  }
  ASSERT_TRUE(serve.at && serve.metrics) << serve.stderr_text();
  ASSERT_FALSE(notify.wait_for("READY=1", 5000ms).empty());
  // The first STATUS= comes from the notifier's own socket, opened after READY=1: from then on
  // a fresh serve holds all it will hold.
  ASSERT_FALSE(notify.wait_for("STATUS=", 5000ms).empty());
  const int fresh = descriptor_count(serve.pid());
  ASSERT_GT(fresh, 0);
  const std::string fresh_list = descriptors_of(serve.pid());
  load clients(*serve.at, 2, 2);
  ASSERT_TRUE(clients.answers(100, 10s)) << "the load does not run";

  serve.signal(SIGHUP);
  std::string seen;
  const std::string took = line_with(serve, spawned_process::stream::err, "took over the listeners", 10s, seen);
  ASSERT_THAT(took, testing::MatchesRegex("transient serve: upgrade: PID [0-9]+ took over the listeners in "
                                          "[0-9.]+ ms; draining"))
      << seen << serve.stderr_text();
  const pid_t successor = number_after(took, "PID ");
  ASSERT_GT(successor, 0);
  EXPECT_EQ(serve.wait(10s), 0) << "the old process did not drain and exit";
  EXPECT_NE(notify.wait_for("MAINPID=" + std::to_string(successor), 2000ms), "");
  // The successor's line may come before the old process's.
  const std::size_t early = seen.find("transient serve: upgrade: first accept");
  const std::string first = early != std::string::npos
                                ? seen.substr(early, seen.find('\n', early) - early)
                                : line_with(serve, spawned_process::stream::err, "upgrade: first accept", 5s, seen);
  EXPECT_THAT(first, testing::MatchesRegex("transient serve: upgrade: first accept [0-9.]+ ms after the signal to "
                                           "PID " +
                                           std::to_string(serve.pid())))
      << seen;
  EXPECT_TRUE(clients.answers(100, 10s)) << "the successor does not serve";
  {
    const unique_fd probe = transient::test::connect_to(*serve.metrics);
    EXPECT_EQ(transient::test::query(probe.get(), "/healthz").first, 200) << "the metrics port was not handed over";
  }
  clients.stop();
  EXPECT_EQ(clients.counts.refused.load(), 0);
  EXPECT_EQ(clients.counts.reset.load(), 0);
  EXPECT_EQ(clients.counts.unanswered.load(), 0) << seen;
  EXPECT_EQ(clients.counts.other.load(), 0);
  EXPECT_EQ(descriptors_settle_at(successor, fresh, 5s), fresh)
      << "the successor holds descriptors a fresh serve does not:\n"
      << descriptors_of(successor) << "a fresh serve:\n"
      << fresh_list;
  EXPECT_EQ(stop_successor(successor), 0);
}

INSTANTIATE_TEST_SUITE_P(Engines, ServeUpgrade, testing::Values("epoll", "io_uring"));

// The agent and metrics ports through an upgrade: the old process drains while it shares their
// listeners with the successor, and a "drain" or a 503 from it there would take a healthy
// instance out of rotation. Checks on new connections (as a balancer makes them), from before
// the signal until the old process has exited: every one "up ready", every /readyz 200.
TEST_F(ServeUpgrade, TheAgentAndReadyzAnswerReadyThroughTheUpgrade) {
  serve_process serve({"--agent", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--drain-timeout", "2s"});
  ASSERT_TRUE(serve.at && serve.agent && serve.metrics) << serve.stderr_text();
  const unique_fd idle = transient::test::connect_to(*serve.at);  // keeps the old process draining 2 s
  ASSERT_TRUE(idle);
  ASSERT_EQ(transient::test::query(idle.get(), "/"), (std::pair<int, std::string>(200, "ok")));
  std::atomic<bool> done{false};
  std::vector<std::string> lines;
  std::vector<int> readyz;
  std::thread checker([&] {
    while (!done.load()) {
      lines.push_back(transient::test::agent_check(*serve.agent).text);
      const unique_fd probe = transient::test::connect_to(*serve.metrics);
      readyz.push_back(probe ? transient::test::query(probe.get(), "/readyz").first : 0);
      std::this_thread::sleep_for(5ms);
    }
  });
  std::this_thread::sleep_for(100ms);
  serve.signal(SIGHUP);
  std::string seen;
  const std::string took = line_with(serve, spawned_process::stream::err, "took over the listeners", 10s, seen);
  const pid_t successor = number_after(took, "PID ");
  EXPECT_GT(successor, 0) << seen << serve.stderr_text();
  const auto drain_start = clock_type::now();
  EXPECT_EQ(serve.wait(10s), 0);
  EXPECT_GT(clock_type::now() - drain_start, 1s) << "the old process did not drain while checked";
  std::this_thread::sleep_for(100ms);
  done = true;
  checker.join();
  EXPECT_GT(lines.size(), 50U);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    EXPECT_THAT(lines[i], testing::MatchesRegex("up ready [0-9]+%\n")) << "check " << i << " of " << lines.size();
    EXPECT_EQ(readyz[i], 200) << "check " << i << " of " << lines.size();
  }
  if (successor > 0) {
    EXPECT_EQ(stop_successor(successor), 0);
  }
}

// A copy of the transient binary in a directory of its own, which a test replaces on disk as
// a deploy does (a new file renamed over the path), and removes at the end.
class binary_copy {
 public:
  binary_copy() {
    char name[] = "/tmp/transient-upgrade-XXXXXX";
    dir_ = ::mkdtemp(name) != nullptr ? name : "";
    std::filesystem::copy_file(TRANSIENT_CLI_PATH, path());
  }
  ~binary_copy() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  binary_copy(const binary_copy&) = delete;
  binary_copy& operator=(const binary_copy&) = delete;

  [[nodiscard]] std::string path() const { return dir_ + "/transient"; }

  // Replaces the binary with a shell script of `body`.
  void replace_with_script(const std::string& body) const {
    const std::string next = dir_ + "/next";
    std::ofstream(next) << "#!/bin/sh\n" << body << "\n";
    std::filesystem::permissions(next, std::filesystem::perms::owner_all);
    std::filesystem::rename(next, path());
  }
  // Puts the real binary back.
  void restore() const {
    const std::string next = dir_ + "/next";
    std::filesystem::copy_file(TRANSIENT_CLI_PATH, next, std::filesystem::copy_options::overwrite_existing);
    std::filesystem::rename(next, path());
  }

 private:
  std::string dir_;
};

// One GET / on a new connection: true if answered "ok".
bool served(const endpoint& at) {
  const unique_fd c = transient::test::connect_to(at);
  return c && transient::test::query(c.get(), "/") == std::pair<int, std::string>(200, "ok");
}

// The successor named in a failure line ("the successor, PID N, ..."): gone (reaped by serve).
void expect_reaped(const std::string& line) {
  const int pid = number_after(line, "the successor, PID ");
  ASSERT_GT(pid, 0) << line;
  EXPECT_FALSE(std::filesystem::exists("/proc/" + std::to_string(pid))) << "the successor " << pid << " is left";
}

// `signal` with the binary on disk replaced by `script`: one line "upgrade failed: <why>;
// still serving" that names `why`, and serve serves on, with no descriptor more.
void expect_failed_upgrade(const std::string& script, int signal, const std::string& why) {
  SCOPED_TRACE(script);
  binary_copy binary;
  serve_process serve({"--upgrade-timeout", "300ms"}, binary.path());
  ASSERT_TRUE(serve.at) << serve.stderr_text();
  const int fresh = descriptor_count(serve.pid());
  binary.replace_with_script(script);
  serve.signal(signal);
  const std::string line = serve.read_line(spawned_process::stream::err, 10s);
  EXPECT_THAT(line, testing::StartsWith("transient serve: upgrade failed: " + why));
  EXPECT_THAT(line, testing::EndsWith("; still serving"));
  expect_reaped(line);
  EXPECT_TRUE(served(*serve.at)) << "the old process does not serve on";
  EXPECT_EQ(descriptors_settle_at(serve.pid(), fresh, 2s), fresh);
  // A later signal tries again, with the binary fixed.
  binary.restore();
  serve.signal(SIGHUP);
  const std::string next = serve.read_line(spawned_process::stream::err, 10s);
  EXPECT_THAT(next, HasSubstr("took over the listeners")) << "no second attempt";
  EXPECT_EQ(serve.wait(10s), 0);
  const pid_t successor = number_after(next, "PID ");
  if (successor > 0) {
    ::kill(successor, SIGTERM);
    ::waitpid(successor, nullptr, 0);
  }
  // Nothing else was said but the successor's lines and the old process's stop.
  std::string rest = serve.stderr_text();
  EXPECT_THAT(rest, testing::Not(HasSubstr("upgrade failed"))) << rest;
}

TEST_F(ServeUpgrade, ASuccessorThatExitsAtOnceLeavesTheOldProcessServing) {
  expect_failed_upgrade(
      "exit 1", SIGHUP,
      transient::make_error_code(transient::error::handover_incomplete).message() + " (the successor, PID");
}

TEST_F(ServeUpgrade, ASuccessorThatNeverGetsReadyIsKilledAtTheUpgradeTimeout) {
  expect_failed_upgrade(
      "exec sleep 60", SIGUSR2,
      transient::make_error_code(transient::error::handover_timeout).message() + " (the successor, PID");
}

TEST_F(ServeUpgrade, ASuccessorThatReadsNothingAndExitsIsAnIncompleteHandover) {
  expect_failed_upgrade(
      "exit 0", SIGHUP,
      transient::make_error_code(transient::error::handover_incomplete).message() + " (the successor, PID");
}

// A second upgrade signal while one is under way is ignored, with a line.
TEST_F(ServeUpgrade, ASecondSignalDuringAnUpgradeIsIgnored) {
  binary_copy binary;
  serve_process serve({"--upgrade-timeout", "3s"}, binary.path());
  ASSERT_TRUE(serve.at) << serve.stderr_text();
  binary.replace_with_script("exec sleep 60");
  serve.signal(SIGHUP);
  serve.signal(SIGUSR2);
  // Whichever of the two the process takes first starts the upgrade.
  EXPECT_THAT(serve.read_line(spawned_process::stream::err, 10s),
              testing::MatchesRegex("transient serve: SIG(HUP|USR2) ignored: an upgrade is already under way"));
  EXPECT_THAT(serve.read_line(spawned_process::stream::err, 10s), HasSubstr("upgrade failed: "));
  EXPECT_TRUE(served(*serve.at));
  serve.signal(SIGTERM);
  EXPECT_EQ(serve.wait(5s), 0);
}

// Until a signal asks for an upgrade, serve with one loop runs on one thread: the upgrade's
// thread starts with the upgrade and ends with it. (In a process with more than one thread the
// kernel counts a reference on every descriptor lookup, in each of the system calls serve makes
// per connection.)
TEST_F(ServeUpgrade, NoThreadWaitsForAnUpgradeNobodyAskedFor) {
  ::unsetenv("NOTIFY_SOCKET");  // systemd's notifier would run a thread of its own
  binary_copy binary;
  serve_process serve({"--upgrade-timeout", "300ms"}, binary.path());
  ASSERT_TRUE(serve.at) << serve.stderr_text();
  ASSERT_TRUE(served(*serve.at));
  EXPECT_EQ(transient::test::thread_count(serve.pid()), 1);
  binary.replace_with_script("exit 1");
  serve.signal(SIGHUP);
  EXPECT_THAT(serve.read_line(spawned_process::stream::err, 10s), HasSubstr("upgrade failed: "));
  // ThreadSanitizer's runtime has started its own thread with the upgrade's.
  const int after = 1 + (transient::test::thread_sanitizer ? 1 : 0);
  EXPECT_EQ(settles_at(&transient::test::thread_count, serve.pid(), after, 2s), after)
      << "the upgrade's thread is left";
  EXPECT_TRUE(served(*serve.at));
  serve.signal(SIGTERM);
  EXPECT_EQ(serve.wait(5s), 0);
}

// Under systemd socket activation the listener came from systemd (LISTEN_FDS): it is handed
// over the same way, and the successor, which gets no LISTEN_FDS, serves it.
TEST_F(ServeUpgrade, ASocketSystemdPassedIsHandedOverToo) {
  constexpr const char* socket_activate = "/usr/bin/systemd-socket-activate";
  if (::access(socket_activate, X_OK) != 0) {
    GTEST_SKIP() << socket_activate << " is missing (Debian package systemd; scripts/install-deps.sh installs it)";
  }
  const endpoint at = free_loopback_port();
  ASSERT_NE(at.port(), 0);
  spawned_process activator(socket_activate, {"-l", at.to_string(), TRANSIENT_CLI_PATH, "serve"});
  ASSERT_THAT(activator.read_line(spawned_process::stream::err, 5s), HasSubstr("Listening on"));
  ASSERT_TRUE(served(at)) << "the first client starts serve";
  ASSERT_EQ(activator.read_line(spawned_process::stream::out, 2s), "listening on " + at.to_string() + " (verified)");
  activator.signal(SIGHUP);
  std::string seen;
  const std::string took = line_with(activator, spawned_process::stream::err, "took over the listeners", 10s, seen);
  ASSERT_FALSE(took.empty()) << seen << activator.stderr_text();
  const pid_t successor = number_after(took, "PID ");
  EXPECT_EQ(activator.wait(10s), 0);
  EXPECT_TRUE(served(at)) << "the successor does not serve the socket systemd passed";
  EXPECT_EQ(stop_successor(successor), 0);
}

}  // namespace
