// systemd's notification protocol (sd_notify(3)): datagrams such as "READY=1", "STATUS=...",
// "WATCHDOG=1" to $NOTIFY_SOCKET.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <string_view>
#include <system_error>

#include "transient/unique_fd.hpp"

namespace transient::tool {

/// A datagram socket for NOTIFY_SOCKET, opened once: messages then still go out when the
/// process has no descriptor to spare (a watchdog that opened a socket per ping would fall
/// silent when descriptors run out, for the wrong reason).
class supervisor_socket {
 public:
  /// Opens the socket if NOTIFY_SOCKET is set: a path, or an abstract name written with a
  /// leading '@'. Sets `ec` when it is set but cannot be used.
  explicit supervisor_socket(std::error_code& ec);
  /// True if NOTIFY_SOCKET is set and the socket is open.
  explicit operator bool() const noexcept { return static_cast<bool>(fd_); }
  /// Sends `state`; sets `ec` on failure.
  void send(std::string_view state, std::error_code& ec) const;

 private:
  unique_fd fd_;
  sockaddr_un address_{};
  socklen_t length_ = 0;
};

/// Sends `state` (e.g. "READY=1") to the socket named by NOTIFY_SOCKET through a socket of
/// its own. Returns false (and leaves `ec` clear) when the variable is not set; sets `ec`
/// when it is set but the message could not be sent.
bool notify_supervisor(std::string_view state, std::error_code& ec);

}  // namespace transient::tool
