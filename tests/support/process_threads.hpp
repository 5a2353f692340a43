// The threads of a process, for the tests that say how many a program runs.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <iterator>
#include <string>
#include <system_error>

namespace transient::test {

/// The number of threads of process `pid` (entries of /proc/PID/task); -1 if it is gone.
inline int thread_count(pid_t pid) {
  std::error_code ec;
  const std::filesystem::directory_iterator tasks("/proc/" + std::to_string(pid) + "/task", ec);
  return ec ? -1 : static_cast<int>(std::distance(tasks, std::filesystem::directory_iterator()));
}

}  // namespace transient::test
