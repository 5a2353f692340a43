// Small loopback client helpers for server tests: connect, read with a deadline, count
// this process's descriptors. Every wait is bounded.
#pragma once

#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "transient/endpoint.hpp"
#include "transient/unique_fd.hpp"

namespace transient::test {

/// A blocking TCP connection to `to` (CLOEXEC); empty on failure. On loopback, connect
/// completes once the kernel queues the connection, before the server accepts it.
inline unique_fd connect_to(const endpoint& to) {
  sockaddr_storage address{};
  const socklen_t length = to.to_sockaddr(address);
  unique_fd fd(::socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd && ::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), length) != 0) {
    fd.reset();
  }
  return fd;
}

/// Reads what arrives within `timeout` (stops at the first chunk, end of stream or error).
/// Returns the bytes read; "" on timeout or end of stream.
inline std::string read_some(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) {
    return {};
  }
  char buffer[512];
  const ssize_t n = ::recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
  return n > 0 ? std::string(buffer, static_cast<std::size_t>(n)) : std::string();
}

/// True if the peer closed (or reset) the connection within `timeout`.
inline bool closed_by_peer(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) {
    return false;
  }
  char byte = 0;
  return ::recv(fd, &byte, 1, MSG_DONTWAIT) <= 0;
}

/// The number of descriptors this process holds (entries of /proc/self/fd, less the one
/// used to list them).
inline int open_descriptor_count() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) {
    return -1;
  }
  int count = 0;
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') {
      ++count;
    }
  }
  ::closedir(dir);
  return count - 1;
}

}  // namespace transient::test
