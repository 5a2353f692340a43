// `transient who PORT`: runs the built tool against real listeners of this test process.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "support/loopback.hpp"
#include "transient/sockets/listener.hpp"

namespace {

using transient::endpoint;

struct run_result {
  int status = -1;
  std::string output;  // stdout and stderr together
};

run_result run(const std::string& args) {
  run_result result;
  const std::string command = std::string("timeout 20 ") + TRANSIENT_CLI_PATH + " " + args + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) {
    return result;
  }
  char buffer[4096];
  std::size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) {
    result.output.append(buffer, n);
  }
  const int status = ::pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

transient::listen_options reuse_port() {
  transient::listen_options options;
  options.reuse_port = true;
  return options;
}

TEST(WhoCli, ListsOurListenerAndExitsZero) {
  const auto l = transient::listen(endpoint::loopback_v4(0));
  const std::string port = std::to_string(l.local_endpoint().port());
  const auto r = run("who " + port);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.rfind("ADDRESS", 0), 0u) << r.output;
  EXPECT_NE(r.output.find("127.0.0.1:" + port), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(std::to_string(::getpid())), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("transient_test_who_cli"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("DUPLICATE"), std::string::npos) << r.output;
}

// A command longer than the column loses its directories before its program name, whatever the
// length of the path this test runs from; the JSON form keeps the whole command.
TEST(WhoCli, ALongCommandKeepsItsProgramName) {
  const auto l = transient::listen(endpoint::loopback_v4(0));
  const std::string port = std::to_string(l.local_endpoint().port());
  const std::string program = "/a/directory/path/long/enough/to/overflow/the/command/column/of/who/long_named_sleeper";
  int exec_done[2];  // close-on-exec: the read end sees EOF once the child has exec'd
  ASSERT_EQ(::pipe2(exec_done, O_CLOEXEC), 0);
  const pid_t child = ::fork();
  ASSERT_NE(child, -1);
  if (child == 0) {
    // The child holds the listener too (descriptor kept across exec) under a long argv[0].
    const int flags = ::fcntl(l.native_handle(), F_GETFD);
    ::fcntl(l.native_handle(), F_SETFD, flags & ~FD_CLOEXEC);
    const char* argv[] = {program.c_str(), "20", nullptr};
    ::execv("/bin/sleep", const_cast<char* const*>(argv));
    ::_exit(127);
  }
  ::close(exec_done[1]);
  char byte = 0;
  EXPECT_EQ(::read(exec_done[0], &byte, 1), 0);
  ::close(exec_done[0]);
  const auto r = run("who " + port);
  const auto j = run("who --json " + port);
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find(" .../long_named_sleeper 20 "), std::string::npos) << r.output;
  EXPECT_NE(j.output.find("\"command\":\"" + program + " 20\""), std::string::npos) << j.output;
}

TEST(WhoCli, JsonNamesOwnerAndInode) {
  const auto l = transient::listen(endpoint::loopback_v6(0));
  const std::string port = std::to_string(l.local_endpoint().port());
  const auto report = transient::verify(l);
  ASSERT_NE(report.cookie, 0U);
  const auto r = run("who --json " + port);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.rfind("{\"port\":" + port + ",\"duplicate\":false,\"listeners\":[{\"address\":\"[::1]:" + port +
                               "\",\"inode\":" + std::to_string(report.inode) +
                               ",\"cookie\":" + std::to_string(report.cookie) + ",",
                           0),
            0u)
      << r.output;
  EXPECT_NE(r.output.find("\"pid\":" + std::to_string(::getpid())), std::string::npos) << r.output;
}

// The accept queue as `ss -ltn` shows it: a listener with backlog 8 and 3 clients the kernel
// connected, not yet accepted, is 3/8 in the table and queued 3, queue_limit 8 in JSON.
TEST(WhoCli, ShowsTheAcceptQueueAsQueuedOfLimit) {
  transient::listen_options options;
  options.backlog = 8;
  const auto l = transient::listen(endpoint::loopback_v4(0), options);
  const std::string port = std::to_string(l.local_endpoint().port());
  std::vector<transient::unique_fd> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(transient::test::connect_to(l.local_endpoint()));
    ASSERT_TRUE(clients.back());
  }
  const auto r = run("who " + port);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find(" QUEUE "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("127.0.0.1:" + port + "  3/8 "), std::string::npos) << r.output;
  const auto j = run("who --json " + port);
  EXPECT_EQ(j.status, 0) << j.output;
  EXPECT_NE(j.output.find(",\"queued\":3,\"queue_limit\":8,"), std::string::npos) << j.output;
}

TEST(WhoCli, NobodyListeningIsNotAnError) {
  auto l = transient::listen(endpoint::loopback_v4(0));
  const std::string port = std::to_string(l.local_endpoint().port());
  l.close();
  const auto r = run("who " + port);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, "nobody listens on port " + port + "\n");
}

TEST(WhoCli, TwoReusePortListenersAreADuplicateAndExitOne) {
  const auto first = transient::listen(endpoint::loopback_v4(0), reuse_port());
  const auto second = transient::listen(first.local_endpoint(), reuse_port());
  const std::string port = std::to_string(first.local_endpoint().port());
  const auto r = run("who " + port);
  EXPECT_EQ(r.status, 1) << r.output;
  std::size_t flagged = 0;
  for (std::size_t at = r.output.find("DUPLICATE"); at != std::string::npos; at = r.output.find("DUPLICATE", at + 1)) {
    ++flagged;
  }
  EXPECT_EQ(flagged, 2u) << r.output;
  EXPECT_NE(r.output.find("duplicate listener"), std::string::npos) << r.output;

  const auto j = run("who " + port + " --json");
  EXPECT_EQ(j.status, 1) << j.output;
  EXPECT_NE(j.output.find("\"duplicate\":true,\"listeners\""), std::string::npos) << j.output;
}

TEST(WhoCli, BadPortIsOneClearLineAndExitTwo) {
  for (const char* bad : {"0", "65536", "http", "-1", "80x", "99999999999"}) {
    const auto r = run(std::string("who ") + bad);
    EXPECT_EQ(r.status, 2) << bad << ": " << r.output;
    EXPECT_EQ(r.output,
              std::string("transient who: '") + bad + "' is not a TCP port (expected a number from 1 to 65535)\n")
        << bad;
  }
  const auto missing = run("who");
  EXPECT_EQ(missing.status, 2);
  EXPECT_NE(missing.output.find("missing PORT"), std::string::npos) << missing.output;
  const auto extra = run("who 80 81");
  EXPECT_EQ(extra.status, 2);
  const auto flag = run("who --bogus 80");
  EXPECT_EQ(flag.status, 2);
  EXPECT_NE(flag.output.find("unknown option '--bogus'"), std::string::npos) << flag.output;
}

TEST(WhoCli, HelpExitsZero) {
  const auto r = run("who --help");
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.output.rfind("usage: transient who PORT [--json]", 0), 0u) << r.output;
}

}  // namespace
