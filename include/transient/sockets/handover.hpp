// transient/sockets/handover.hpp: handing a process's listeners to another process (an upgrade
// in place, a restart) and taking them over, so that the listening socket, and the clients
// waiting in its accept queue, outlive the process that opened it.
//
// Closing a listener resets every client still in its queue; a successor that opens its own
// socket (SO_REUSEPORT) lets the kernel queue clients on the old one until it closes. Handing
// over the same socket avoids both: the kernel's queue is one, and whoever holds the socket
// accepts from it. The receiver verifies each socket against the kernel's LISTEN table (the
// socket cookie, as verify() does) before it may say that it is ready, and the sender keeps
// serving until it hears so:
//
//   sender (old process)                         receiver (successor)
//   hand_over_listeners(channel, offers)   --->  take_over_listeners(channel, options)
//   (goes on accepting)                          (verifies each, starts its accept loops)
//   await_ready(channel, timeout)          <---  report_ready(channel)
//   stops accepting, drains, exits               serves
//
// The channel is one end of a connected AF_UNIX stream socket (socketpair(2)), whose other
// end the receiver inherits or connects to. Every failure is a std::error_code and changes
// nothing on the sender's side: its listeners stay open and served.
//
// systemd's file descriptor store keeps listeners across `systemctl restart` the same way:
// store_listeners_in_systemd() before the stop, listeners_from_systemd() (by name) after the
// start. The unit needs FileDescriptorStoreMax= (docs/guide.md has one).
#pragma once

#include <chrono>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "transient/sockets/listener.hpp"

namespace transient {

/// One listener to hand over, by name. The descriptor stays this process's: the receiver gets
/// a duplicate of the same socket (SCM_RIGHTS), so both may accept until the sender stops.
struct listener_offer {
  std::string_view name;  ///< What the receiver asks for it by (1 to 255 bytes, no NUL, no '\n').
  int fd = -1;            ///< A listening TCP socket (verified here before it is sent).
};

/// Sends `listeners` over `channel`: each one's name, its identity (socket cookie and local
/// address) and the descriptor, in one message. Waits at most `timeout` for the channel to take
/// it. Errors: error::not_stream for an offer that is not a TCP stream socket (UDP, a Unix
/// socket), error::not_listening for a TCP socket that does not listen (a connection), EINVAL
/// for a bad name, a name given twice, an empty list, more than 253 listeners (SCM_MAX_FD) or a
/// timeout out of range (1 ms to longest_setting), error::handover_incomplete when the receiver is gone
/// (EPIPE, ECONNRESET), error::handover_timeout, the send's errno otherwise.
void hand_over_listeners(int channel, std::span<const listener_offer> listeners, std::chrono::milliseconds timeout,
                         std::error_code& ec);
/// As above; throws std::system_error.
void hand_over_listeners(int channel, std::span<const listener_offer> listeners,
                         std::chrono::milliseconds timeout = std::chrono::seconds(5));

/// What take_over_listeners expects.
struct take_over_options {
  /// For the whole transfer, from 1 ms to longest_setting (policy/accept_policy.hpp).
  std::chrono::milliseconds timeout{std::chrono::seconds(5)};
  /// If not empty: exactly these names, in any order (else error::handover_mismatch).
  std::vector<std::string> expected_names;
};

/// Receives the listeners a hand_over_listeners() sent over `channel`, and verifies each: a
/// listening TCP socket, the very socket the sender described (its cookie), and the kernel's
/// listener for its address (verify()). Each comes back CLOEXEC and non-blocking. On failure
/// returns nothing (every descriptor received is closed) and sets `ec`:
/// error::handover_incomplete (the sender closed or died mid-transfer), handover_malformed,
/// handover_mismatch (names, or a descriptor that is not the socket described),
/// handover_timeout, not_listening / not_stream / not_kernel_listener (verification),
/// EAFNOSUPPORT (a socket that is not IPv4/IPv6), EINVAL (options.timeout out of range), or the
/// receive's errno. O_NONBLOCK belongs to the socket's open file, which the sender shares: a
/// sender's listen() socket is non-blocking already.
[[nodiscard]] std::vector<named_listener> take_over_listeners(int channel, const take_over_options& options,
                                                              std::error_code& ec);
/// As above; throws std::system_error.
[[nodiscard]] std::vector<named_listener> take_over_listeners(int channel, const take_over_options& options = {});

/// The receiver's word that it serves on the listeners it took over (verified, and its accept
/// loops running), with its pid. Errors: error::handover_incomplete when the sender is gone,
/// error::handover_timeout if the channel takes nothing for 5 s, the send's errno otherwise.
void report_ready(int channel, std::error_code& ec);
/// As above; throws std::system_error.
void report_ready(int channel);

/// The sender waits at most `timeout` for report_ready(); returns the receiver's pid, or 0 with
/// `ec` set: error::handover_timeout, error::handover_incomplete (the receiver closed the
/// channel or died: it will not serve), handover_malformed, EINVAL for a timeout out of range
/// (1 ms to longest_setting).
[[nodiscard]] int await_ready(int channel, std::chrono::milliseconds timeout, std::error_code& ec);
/// As above; throws std::system_error.
[[nodiscard]] int await_ready(int channel, std::chrono::milliseconds timeout);

/// Stores `listeners` in systemd's file descriptor store (sd_pid_notify_with_fds(3):
/// FDSTORE=1 and FDNAME=name, one message per listener), so that the next start of the service
/// gets them back from listeners_from_systemd() under their names, with the clients queued on
/// them. Errors: error::no_supervisor when NOTIFY_SOCKET is not set, EINVAL for a bad name (as
/// for a handover, and printable, without ':', which separates LISTEN_FDNAMES) or a malformed
/// NOTIFY_SOCKET,
/// error::not_listening / not_stream for a descriptor that is not a listening TCP socket, the
/// send's errno otherwise (systemd drops descriptors beyond FileDescriptorStoreMax= silently).
void store_listeners_in_systemd(std::span<const listener_offer> listeners, std::error_code& ec);
/// As above; throws std::system_error.
void store_listeners_in_systemd(std::span<const listener_offer> listeners);

}  // namespace transient
