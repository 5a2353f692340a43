// Adopting a descriptor another process passed (systemd's socket activation, a listener
// handover) as a listener: one way for both, so both check the same things.
#pragma once

#include <string>
#include <system_error>

#include "transient/sockets/listener.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace transient::detail {

/// A passed descriptor as a listener, or why it is not one.
struct adoption {
  listener socket;        ///< The listener (CLOEXEC, non-blocking); empty on failure.
  std::error_code error;  ///< Empty on success.
  /// On failure, what went wrong, to follow the descriptor's description: ": fcntl: ...",
  /// " is not an IPv4/IPv6 socket: ..." or ": " and the verification's message.
  std::string message;
  verify_report verification;  ///< The verification, when it ran and failed.
};

/// Sets CLOEXEC and O_NONBLOCK on `fd` (O_NONBLOCK is the open file's, so it holds for every
/// process sharing the socket), adopts it (listener::adopt) and, if `verify_it`, verifies it.
/// On failure the descriptor is closed.
[[nodiscard]] adoption adopt_listener(unique_fd fd, bool verify_it);

}  // namespace transient::detail
