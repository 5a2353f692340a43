// transient/errors/errors.hpp: what an error code means whatever the operation (condition, a
// std::error_condition enum) and the codes transient itself reports (error). Include it to test
// a std::error_code: `ec == transient::condition::fd_exhausted`.
// Design: docs/design.md, "Layers".
#pragma once

#include <array>
#include <string_view>
#include <system_error>

// Conditions: compare any std::error_code (system, generic, standalone Asio's, transient's own)
// against them; a code may match several, and predicates compose with || and &&.

namespace transient {

/// Families of errors a network program reacts to the same way.
/// The numbering starts at 1: a value of 0 would mean "no error" to std::error_condition.
enum class condition : int {
  would_block = 1,      ///< EAGAIN/EWOULDBLOCK: nothing ready now; wait for readiness.
  interrupted,          ///< EINTR: a signal interrupted the call.
  in_progress,          ///< EINPROGRESS/EALREADY: a non-blocking connect is under way.
  already_connected,    ///< EISCONN: the socket is connected (after EINPROGRESS: success).
  timed_out,            ///< ETIMEDOUT: the peer did not answer in time.
  connection_failed,    ///< The connection (not the listener) died: ECONNABORTED, EPROTO, network errors.
  network_unreachable,  ///< ENETDOWN, ENETUNREACH, EHOSTDOWN, EHOSTUNREACH, ENONET.
  refused,              ///< ECONNREFUSED: nobody listens there.
  peer_gone,            ///< ECONNRESET, EPIPE, ESHUTDOWN: the peer closed or reset.
  not_connected,        ///< ENOTCONN: the socket is not (or no longer) connected.
  fd_exhausted,         ///< EMFILE or ENFILE: no descriptor could be allocated.
  process_fd_limit,     ///< EMFILE: this process reached RLIMIT_NOFILE.
  system_fd_limit,      ///< ENFILE: the system file table is full (maybe another process).
  memory_exhausted,     ///< ENOBUFS, ENOMEM: kernel memory for sockets ran out.
  resource_exhausted,   ///< Any of fd_exhausted or memory_exhausted.
  address_in_use,       ///< EADDRINUSE: the address is taken (or a 4-tuple clash).
  address_unavailable,  ///< EADDRNOTAVAIL: not a local address, or ephemeral ports exhausted.
  permission_denied,    ///< EPERM, EACCES: a firewall, LSM or privileged port refused it.
  invalid_argument,     ///< EINVAL: what it means depends on the operation (see classify).
  not_supported,        ///< EOPNOTSUPP: the operation does not fit this socket.
  not_listening,        ///< The socket is not (or no longer) a listener.
  duplicate_listener,   ///< Another socket also listens on this address and port.
  stalled,              ///< Descriptors stayed exhausted with no progress: the watchdog fired.
  programming_error,    ///< EBADF, ENOTSOCK, EFAULT, EAFNOSUPPORT: a bug in the caller.
  unclassified,         ///< A non-zero code that matches none of the conditions above.
};

/// Number of named conditions (the enum's values are 1..condition_count).
inline constexpr int condition_count = static_cast<int>(condition::unclassified);

/// Every condition, in declaration order (for iteration, e.g. to list matches).
inline constexpr std::array<condition, condition_count> all_conditions = [] {
  std::array<condition, condition_count> all{};
  for (int i = 0; i < condition_count; ++i) {
    all[static_cast<std::size_t>(i)] = static_cast<condition>(i + 1);
  }
  return all;
}();

/// The category of transient::condition. Its name() is "transient".
[[nodiscard]] const std::error_category& condition_category() noexcept;

/// Makes `c` a std::error_condition in condition_category() (found by ADL).
[[nodiscard]] std::error_condition make_error_condition(condition c) noexcept;

/// The enumerator's name, e.g. "fd_exhausted"; "unknown" for a value outside the enum.
[[nodiscard]] std::string_view to_string(condition c) noexcept;

/// Parses a name produced by to_string(condition); false if unknown.
[[nodiscard]] bool from_string(std::string_view name, condition& out) noexcept;

/// True if `ec` compares equal to `c`. Same as `ec == c`, spelled as a function for
/// algorithms and for readers who prefer it.
[[nodiscard]] bool matches(const std::error_code& ec, condition c) noexcept;

/// The errno value `ec` stands for, or 0 if it does not stand for one (success, or a
/// category whose codes do not map to errno values).
[[nodiscard]] int errno_of(const std::error_code& ec) noexcept;

}  // namespace transient

template <>
struct std::is_error_condition_enum<transient::condition> : std::true_type {};

// transient's own findings (a stall, a listener that is not the kernel's), as codes that compare
// equal to the matching condition (error::stalled == condition::stalled).

namespace transient {

/// Failures found by transient rather than reported by a system call.
enum class error : int {
  stalled = 1,           ///< Descriptors stayed exhausted and nothing made progress.
  not_listening,         ///< The socket is not in the LISTEN state (SO_ACCEPTCONN = 0).
  not_stream,            ///< The socket is not a stream socket (SO_TYPE != SOCK_STREAM).
  address_mismatch,      ///< getsockname() differs from the address that was asked for.
  not_kernel_listener,   ///< The kernel's LISTEN entry for the address is another socket.
  duplicate_listener,    ///< A second socket listens on the same address and port.
  port_range_exhausted,  ///< Every port of a port hunt was taken.
  invalid_endpoint,      ///< An endpoint string could not be parsed.
  invalid_port_range,    ///< A port range is empty or out of bounds.
  reuse_port_refused,    ///< SO_REUSEPORT was asked for where it would be unsafe (a port hunt).
  no_systemd_sockets,    ///< LISTEN_FDS/LISTEN_PID do not hand this process any socket.
  /// A driver reported an event that the accept policy's state does not expect (a bug in the
  /// driver; its condition is programming_error). docs/acceptor.md lists what each state expects.
  unexpected_event,
  /// A listener handover (sockets/handover.hpp) ended before all of it arrived: the peer
  /// closed the channel or died mid-transfer.
  handover_incomplete,
  /// A listener handover's message is not one (wrong magic or version, a count or length that
  /// does not add up, descriptors missing or extra).
  handover_malformed,
  /// The listeners handed over are not the ones asked for (their names differ), or a
  /// descriptor is not the socket the sender described (another cookie).
  handover_mismatch,
  /// A listener handover, or the receiver's report that it is ready, did not come in time.
  handover_timeout,
  /// NOTIFY_SOCKET is not set: there is no supervisor to send to (systemd's file descriptor
  /// store needs one).
  no_supervisor,
};

/// The category of transient::error. Its name() is "transient.error".
[[nodiscard]] const std::error_category& error_category() noexcept;

/// Makes `e` a std::error_code in error_category() (found by ADL).
[[nodiscard]] std::error_code make_error_code(error e) noexcept;

/// The enumerator's name, e.g. "stalled"; "unknown" for a value outside the enum.
[[nodiscard]] std::string_view to_string(error e) noexcept;

}  // namespace transient

template <>
struct std::is_error_code_enum<transient::error> : std::true_type {};
