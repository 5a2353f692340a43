// Runs a program with arguments and captures its exit status, stdout and stderr, for tests
// of the `transient` command. Bounded: the child is killed after a timeout.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "support/spawned_process.hpp"

namespace transient::test {

/// What a finished program left behind.
struct command_result {
  int exit_code = -1;  ///< exit status, or -1 if it was killed or did not exit
  std::string out;     ///< everything written to stdout
  std::string err;     ///< everything written to stderr
};

/// Runs `program` with `args`, waiting at most `timeout`; a child still running then is killed.
inline command_result run_command(const std::string& program, const std::vector<std::string>& args,
                                  std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  spawned_process child(program, args);
  command_result result;
  result.exit_code = child.finish(timeout);
  result.out = child.take(spawned_process::stream::out);
  result.err = child.take(spawned_process::stream::err);
  return result;
}

#ifdef TRANSIENT_CLI_PATH  // the tests of the `transient` command
/// `transient COMMAND ARGS...` refuses ARGS as a usage error: exit status 2, nothing on stdout
/// and one line on stderr, "transient COMMAND: ...", which contains `names`.
inline void expect_usage_error(const std::string& command, const std::vector<std::string>& args,
                               const std::string& names) {
  std::vector<std::string> full{command};
  full.insert(full.end(), args.begin(), args.end());
  const command_result r = run_command(TRANSIENT_CLI_PATH, full, std::chrono::seconds(5));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line expected: " << r.err;
  EXPECT_EQ(r.err.rfind("transient " + command + ": ", 0), 0U) << r.err;
  EXPECT_NE(r.err.find(names), std::string::npos) << r.err;
}
#endif

}  // namespace transient::test
