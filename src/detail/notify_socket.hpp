// NOTIFY_SOCKET, the address systemd (or another supervisor) reads sd_notify(3) messages on:
// read in one place for the notifier (drivers/systemd.hpp) and the file descriptor store
// (sockets/handover.hpp).
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <optional>
#include <system_error>

namespace transient::detail {

/// A datagram destination: the address and its length for sendto/sendmsg.
struct notify_address {
  sockaddr_un address{};  ///< AF_UNIX; an abstract name starts with '\0'.
  socklen_t length = 0;   ///< The address's length, up to the name's end (no trailing NUL).
};

/// NOTIFY_SOCKET's address: a path, or an abstract name written with a leading '@'. Nothing
/// when the variable is unset or empty; nothing and EINVAL in `ec` when it is neither form or
/// too long.
[[nodiscard]] std::optional<notify_address> notify_socket_address(std::error_code& ec);

}  // namespace transient::detail
