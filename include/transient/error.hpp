// transient/error.hpp: error codes that transient itself produces.
//
// System calls report errno values in std::system_category(). Some failures are
// transient's own findings (the watchdog fired, a listener is not the kernel's listener);
// they are reported as transient::error codes, which compare equal to the matching
// transient::condition (error::stalled == condition::stalled, and so on).
#pragma once

#include <string_view>
#include <system_error>

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
