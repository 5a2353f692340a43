// A process's resident memory, for the tests that bound what a server keeps.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <fstream>
#include <string>

namespace transient::test {

/// The resident memory of process `pid` (this process by default) in KiB, from the VmRSS line
/// of /proc/PID/status; -1 if unreadable.
inline long resident_kib(pid_t pid = ::getpid()) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::stol(line.substr(6));
    }
  }
  return -1;
}

}  // namespace transient::test
