// Runs a program with arguments and captures its exit status, stdout and stderr, for tests
// of the `transient` command. Bounded: the child is killed after a timeout.
#pragma once

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

}  // namespace transient::test
