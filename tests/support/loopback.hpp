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
#include <string_view>

#include "transient/sockets/endpoint.hpp"
#include "transient/sockets/unique_fd.hpp"

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

/// As connect_to, from the local address `from` (port 0: any), e.g. 127.0.0.2 for a second
/// client address on loopback; empty on failure.
inline unique_fd connect_from(const endpoint& from, const endpoint& to) {
  sockaddr_storage local{};
  const socklen_t local_length = from.to_sockaddr(local);
  sockaddr_storage address{};
  const socklen_t length = to.to_sockaddr(address);
  unique_fd fd(::socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd && (::bind(fd.get(), reinterpret_cast<sockaddr*>(&local), local_length) != 0 ||
             ::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), length) != 0)) {
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

/// True if the peer closed (or reset) the connection within `timeout` and no data is left to
/// read first. It only peeks: a byte that arrives just now stays for the next read.
inline bool closed_by_peer(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) {
    return false;
  }
  char byte = 0;
  return ::recv(fd, &byte, 1, MSG_DONTWAIT | MSG_PEEK) <= 0;
}

/// Sends all of `text` in one call (loopback: a small text goes in one piece); false otherwise.
inline bool send_text(int fd, std::string_view text) {
  return ::send(fd, text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size());
}

/// Reads until `bytes` bytes arrived, the peer closed, or about `limit` passed.
inline std::string read_at_least(int fd, std::size_t bytes, std::chrono::milliseconds limit = std::chrono::seconds(2)) {
  std::string all;
  constexpr std::chrono::milliseconds step(50);
  for (auto waited = std::chrono::milliseconds(0); waited < limit && all.size() < bytes; waited += step) {
    const std::string chunk = read_some(fd, step);
    if (chunk.empty() && closed_by_peer(fd, std::chrono::milliseconds(1))) {
      break;
    }
    all += chunk;
  }
  return all;
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
