// `transient who PORT`: runs the built tool against real listeners of this test process.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "transient/listener.hpp"

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

TEST(WhoCli, JsonNamesOwnerAndInode) {
  const auto l = transient::listen(endpoint::loopback_v6(0));
  const std::string port = std::to_string(l.local_endpoint().port());
  const auto inode = transient::verify(l).inode;
  const auto r = run("who --json " + port);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.rfind("{\"port\":" + port + ",\"duplicate\":false,\"listeners\":[{\"address\":\"[::1]:" + port +
                               "\",\"inode\":" + std::to_string(inode),
                           0),
            0u)
      << r.output;
  EXPECT_NE(r.output.find("\"pid\":" + std::to_string(::getpid())), std::string::npos) << r.output;
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
