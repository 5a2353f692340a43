// One HAProxy agent check made by hand, for the tests of serve's agent port: connect, send the
// agent-send string if any, read until the peer closes. Every wait is bounded.
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <string_view>
#include <thread>

#include "support/loopback.hpp"
#include "transient/sockets/endpoint.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace transient::test {

/// What one agent check read and how its connection ended.
struct agent_reply {
  std::string text;        ///< Everything read before the end.
  bool connected = false;  ///< The connection was made.
  bool closed = false;     ///< The peer closed (end of stream) within the timeout.
  /// The connection was reset or failed (POLLERR, a recv error, or SO_ERROR at the end): a
  /// checker may drop a line it had not read yet.
  bool reset = false;
};

/// A check of the agent at `at`: `send` is written first (HAProxy's agent-send), then after
/// `pause` (a checker busy elsewhere) the reply is read until the peer closes, at most `timeout`.
inline agent_reply agent_check(const endpoint& at, std::string_view send = {},
                               std::chrono::milliseconds pause = std::chrono::milliseconds(0),
                               std::chrono::milliseconds timeout = std::chrono::seconds(3)) {
  agent_reply r;
  const unique_fd fd = connect_to(at);
  r.connected = static_cast<bool>(fd);
  if (!fd || (!send.empty() && !send_text(fd.get(), send))) {
    return r;
  }
  std::this_thread::sleep_for(pause);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buffer[256];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, 20) <= 0) {
      continue;
    }
    r.reset = r.reset || (p.revents & POLLERR) != 0;  // what a checker may act on before reading
    const ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, MSG_DONTWAIT);
    if (n > 0) {
      r.text.append(buffer, static_cast<std::size_t>(n));
    } else if (n == 0) {
      r.closed = true;
      break;
    } else if (errno != EAGAIN && errno != EINTR) {
      r.reset = true;
      break;
    }
  }
  int error = 0;
  socklen_t length = sizeof error;
  r.reset = r.reset || ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &length) != 0 || error != 0;
  return r;
}

}  // namespace transient::test
