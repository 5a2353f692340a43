// The parent's side of holding_server.hpp, for the exhaustion tests of every driver: a forked
// child runs the holding server under a low RLIMIT_NOFILE, the test process is the client, sends
// the commands and reads the reports. Also the scenario every driver must pass under real
// EMFILE (expect_each_release_serves_the_pending_client).
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/child_report.hpp"
#include "support/loopback.hpp"
#include "transient/sockets/endpoint.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace transient::test {

/// A forked child and its two pipes.
struct child_process {
  pid_t pid = -1;
  unique_fd commands;  ///< parent -> child
  unique_fd reports;   ///< child -> parent
  std::string buffer;  ///< what was read and not yet taken as a line

  /// Sends one command byte.
  void send(char command) const { ASSERT_EQ(::write(commands.get(), &command, 1), 1); }

  /// The rest of the next line that starts with `key` (others are skipped), or "" after `limit`.
  std::string next(const std::string& key, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
      const auto end = buffer.find('\n');
      if (end != std::string::npos) {
        std::string line = buffer.substr(0, end);
        buffer.erase(0, end + 1);
        if (line.rfind(key, 0) == 0) {
          return line.substr(key.size() + 1);
        }
        continue;
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd p{reports.get(), POLLIN, 0};
      if (left <= std::chrono::milliseconds(0) || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
        return {};
      }
      char chunk[256];
      const ssize_t n = ::read(reports.get(), chunk, sizeof chunk);
      if (n <= 0) {
        return {};
      }
      buffer.append(chunk, static_cast<std::size_t>(n));
    }
  }

  /// The child's exit status (see reap_within).
  int wait_exit(std::chrono::milliseconds limit = std::chrono::seconds(10)) const { return reap_within(pid, limit); }
};

/// Forks a child that runs `body(commands, reports)` and then exits with status 0.
inline child_process start_child(void (*body)(int, int)) {
  int down[2];
  int up[2];
  EXPECT_EQ(::pipe2(down, O_CLOEXEC), 0);
  EXPECT_EQ(::pipe2(up, O_CLOEXEC), 0);
  child_process child;
  child.pid = ::fork();
  if (child.pid == 0) {
    ::close(down[1]);
    ::close(up[0]);
    body(down[0], up[1]);
    ::_exit(0);
  }
  ::close(down[0]);
  ::close(up[1]);
  child.commands.reset(down[1]);
  child.reports.reset(up[0]);
  return child;
}

/// The "key value key value ..." pairs of a report line.
inline std::map<std::string, long> fields(const std::string& text) {
  std::istringstream in(text);
  std::map<std::string, long> out;
  std::string key;
  long value = 0;
  while (in >> key >> value) {
    out[key] = value;
  }
  return out;
}

/// Stops the holding server and returns its "done" fields, having checked that it stopped
/// cleanly and holds as many descriptors after the server as before it.
inline std::map<std::string, long> quit_and_check(child_process& child) {
  child.send('q');
  auto done = fields(child.next("done"));
  const std::string fds = child.next("fds");
  EXPECT_EQ(child.wait_exit(), 0);
  EXPECT_EQ(done["clean"], 1);
  std::istringstream in(fds);  // "before after"
  int before = -1;
  int after = -2;
  in >> before >> after;
  EXPECT_EQ(before, after) << "descriptors leaked by the server";
  return done;
}

/// The child's accept answers so far (holding_server.hpp, command 'e'): "accepted",
/// "emfile_since" (EMFILE answers since the latest connection) and "all"; empty if it did not say.
inline std::map<std::string, long> accept_answers(child_process& child) {
  child.send('e');
  return fields(child.next("answers"));
}

/// Waits until the child has accepted exactly `accepted` connections and met EMFILE since the
/// latest of them: it has run out of descriptors, and a client beyond those waits. False after
/// `limit` (the child's last answers in `last`).
inline bool exhausted_after(child_process& child, std::size_t accepted, std::map<std::string, long>& last,
                            std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    last = accept_answers(child);
    if (last["accepted"] == static_cast<long>(accepted) && last["emfile_since"] > 0) {
      return true;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

/// Connects clients to the child until it runs out of descriptors: each is served (its byte)
/// or, once the child's answers say it is exhausted, the one left waiting (`pending`). Decided
/// by the child's own answers, not by how long a byte takes on a loaded machine.
inline void fill_until_one_waits(child_process& child, const endpoint& where, std::vector<unique_fd>& served,
                                 unique_fd& pending) {
  using namespace std::chrono_literals;
  std::map<std::string, long> last;
  for (int i = 0; i < 100 && !pending; ++i) {
    unique_fd client = connect_to(where);
    ASSERT_TRUE(client);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!pending && read_some(client.get(), 5ms) != "a") {
      if (exhausted_after(child, served.size(), last, 0ms)) {
        pending = std::move(client);
      }
      ASSERT_TRUE(std::chrono::steady_clock::now() < deadline)
          << "client " << i << " neither served nor left waiting; accepted " << last["accepted"];
    }
    if (client) {
      served.push_back(std::move(client));
    }
  }
}

/// The real-EMFILE scenario, for a child running the holding server (RLIMIT_NOFILE 64, shed
/// mode queue): clients fill it until one is left waiting; exhausted for a second, the child
/// must sleep, not spin (<= 5 % CPU, a few accept attempts); then 100 episodes, each a release
/// after which the waiting client is served and a new one waits; the server stops cleanly,
/// without leaking, having accepted every client served, in a few log lines for episodes that
/// were real exhaustions. Each release is sent only once the child's answers show the episode
/// before it ended in EMFILE, so every episode is a success followed by an exhaustion, however
/// the machine's load orders the two processes.
inline void expect_each_release_serves_the_pending_client(child_process& child) {
  using namespace std::chrono_literals;
  const std::string port = child.next("port");
  ASSERT_FALSE(port.empty());
  const auto where = parse_endpoint("127.0.0.1:" + port);

  std::vector<unique_fd> served;
  unique_fd pending;
  fill_until_one_waits(child, where, served, pending);
  ASSERT_TRUE(pending) << "the child never ran out of descriptors";
  ASSERT_GT(served.size(), 20U);

  // Exhausted for a second: the child must sleep, not spin (issue: <= 5 % of wall time; its
  // accept attempts: a backoff from 1 ms to 1 s makes a dozen or two, a spin thousands).
  child.send('c');
  const long cpu_before = std::stol(child.next("cpu"));  // "cpu US events N"
  const long answers_before = accept_answers(child)["all"];
  const auto wall_start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(1s);
  child.send('c');
  const long cpu_after = std::stol(child.next("cpu"));
  const long answers_after = accept_answers(child)["all"];
  const auto wall_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - wall_start);
  EXPECT_LE(cpu_after - cpu_before, wall_us.count() / 20)
      << "CPU while exhausted: " << (cpu_after - cpu_before) << " us";
  EXPECT_LE(answers_after - answers_before, 100) << "accept attempts while exhausted";

  // 100 episodes: the child is exhausted, a release, the pending client is served, a new one waits.
  constexpr int episodes = 100;
  std::map<std::string, long> last;
  for (int i = 0; i < episodes; ++i) {
    ASSERT_TRUE(exhausted_after(child, served.size(), last))
        << "episode " << i << ": the child did not run out of descriptors again; accepted " << last["accepted"]
        << ", EMFILE since " << last["emfile_since"];
    child.send('r');
    ASSERT_EQ(read_some(pending.get(), 3s), "a") << "episode " << i << ": pending client lost";
    served.push_back(std::move(pending));
    pending = connect_to(where);
    ASSERT_TRUE(pending);
  }
  // The last episode's exhaustion too, before the stop (which would otherwise often come first).
  ASSERT_TRUE(exhausted_after(child, served.size(), last)) << "after the last episode";
  const auto done = quit_and_check(child);
  EXPECT_EQ(done.at("accepted"), static_cast<long>(served.size()));
  // The releases come faster than the quiet period (1 s), so the exhaustions after them are
  // flaps of one episode: one degraded line, and one line ending it (at the stop, here).
  const long lines = done.at("degraded") + done.at("summaries") + done.at("recovered");
  EXPECT_LE(lines, 3) << "log lines for " << episodes + 1 << " exhaustions";
  // The bound above says something only if they were real exhaustions, each counted as a flap:
  // every episode was a success followed by EMFILE (the wait above), so each is one.
  EXPECT_EQ(done.at("flaps"), episodes);
}

}  // namespace transient::test
