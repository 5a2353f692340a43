// transient/errors/classify.hpp: what an error means for the operation that returned it
// (classify()), errno names both ways, and other platforms' socket error codes. Include it to
// decide what to do after a failed socket call; `transient explain` prints the same verdicts.
// Design: docs/design.md, "Principles"; the table: docs/errors.md.
#pragma once

#include <optional>
#include <span>
#include <string_view>
#include <system_error>

#include "transient/errors/errors.hpp"

// Errno names both ways ("EMFILE" <-> 24), for every errno Linux defines.

namespace transient {

/// The canonical name of an errno value ("EAGAIN" for 11, not "EWOULDBLOCK"); an empty
/// view if Linux defines no errno with that value.
[[nodiscard]] std::string_view errno_name(int value) noexcept;

/// The value of an errno name, case-insensitively, aliases included ("ewouldblock" -> 11);
/// std::nullopt if Linux defines no errno of that name.
[[nodiscard]] std::optional<int> errno_value(std::string_view name) noexcept;

/// Every errno value Linux defines, ascending, each once.
[[nodiscard]] std::span<const int> all_errno_values() noexcept;

}  // namespace transient

// classify(): one operation's verdict for a code, from a constexpr table that follows
// docs/errors.md. It never allocates and never throws.

namespace transient {

/// The socket operation that returned an error.
enum class operation : unsigned char {
  accept,   ///< accept(2)/accept4(2) on a listener.
  connect,  ///< connect(2), including the SO_ERROR read after EINPROGRESS.
  read,     ///< read/recv/recvmsg on a connected socket.
  write,    ///< write/send/sendmsg on a connected socket.
  bind,     ///< socket(2) and bind(2) while setting up a listener.
  listen,   ///< listen(2).
};

/// Number of operations (the enum's values are 0..operation_count-1).
inline constexpr int operation_count = 6;

/// What the caller should do next.
enum class action : unsigned char {
  retry,     ///< Call again now.
  wait,      ///< Wait for readiness (or, for connect, writability), then call again.
  skip,      ///< accept only: that pending connection died; the listener is fine: accept the next now.
  close,     ///< The connection is finished (connect: this attempt failed; try the next address).
  back_off,  ///< A resource is exhausted: pause, then retry later.
  fail,      ///< Not retriable here: a bug, a configuration error, or a dead listener.
  done,      ///< connect only: EISCONN after EINPROGRESS means the socket is connected.
};

/// The answer of classify().
struct verdict {
  action what;              ///< The action to take.
  condition why;            ///< The condition that decided it.
  std::string_view advice;  ///< One line for a human; refers to static storage.

  friend bool operator==(const verdict&, const verdict&) = default;
};

/// What `ec` means for `op`. Success (a zero code) yields {retry, unclassified}: there is
/// nothing to classify, and callers should not pass it. Codes the table does not know
/// follow the operation's rule for "anything else" (accept: back_off, so that the stall
/// watchdog decides; every other operation: fail).
[[nodiscard]] verdict classify(operation op, std::error_code ec) noexcept;

/// The name of an operation ("accept", ...).
[[nodiscard]] std::string_view to_string(operation op) noexcept;

/// The name of an action ("back_off", ...).
[[nodiscard]] std::string_view to_string(action a) noexcept;

/// Parses an operation name, case-insensitively; std::nullopt if unknown. The system calls an
/// operation stands for are accepted as it: accept4 as accept, recv/recvfrom/recvmsg as read,
/// send/sendto/sendmsg as write.
[[nodiscard]] std::optional<operation> parse_operation(std::string_view name) noexcept;

}  // namespace transient

// The codes of other platforms' socket calls, each with the Linux errno of the same meaning
// (docs/errors.md, "FreeBSD, macOS and Windows").

namespace transient {

/// A platform whose socket error codes transient knows.
enum class platform : unsigned char {
  linux_os,  ///< Linux (glibc and musl share the kernel's numbers).
  freebsd,   ///< FreeBSD.
  macos,     ///< macOS (Darwin).
  windows,   ///< Windows (Winsock and the Win32 codes of overlapped socket I/O).
};

/// The platform this translation unit is compiled for.
inline constexpr platform native_platform =
#if defined(_WIN32)
    platform::windows;
#elif defined(__APPLE__)
    platform::macos;
#elif defined(__FreeBSD__)
    platform::freebsd;
#else
    platform::linux_os;
#endif

/// One error code of a platform: its name there, its value there, and the Linux errno of the
/// same meaning (whose rules classify it).
struct platform_error {
  std::string_view name;  ///< E.g. "WSAEMFILE", "ECONNABORTED".
  int value;              ///< Its value on that platform.
  int linux_errno;        ///< The Linux errno that means the same.
};

/// The name of a platform: "linux", "freebsd", "macos", "windows".
[[nodiscard]] std::string_view to_string(platform p) noexcept;

/// Parses a platform name (case-insensitive); std::nullopt if unknown.
[[nodiscard]] std::optional<platform> parse_platform(std::string_view name) noexcept;

/// The codes of a platform's socket calls, ascending by value (Linux: every errno).
[[nodiscard]] std::span<const platform_error> platform_errors(platform p) noexcept;

/// The code named `name` on platform `p` (case-insensitive), or std::nullopt.
[[nodiscard]] std::optional<platform_error> find_platform_error(platform p, std::string_view name) noexcept;

/// The code of value `value` on platform `p`, or std::nullopt.
[[nodiscard]] std::optional<platform_error> find_platform_error(platform p, int value) noexcept;

/// What the code `value` of platform `p` means for `op`: the rule of its Linux equivalent; a
/// value the platform's table does not list gets the operation's rule for anything else.
[[nodiscard]] verdict classify(platform p, operation op, int value) noexcept;

}  // namespace transient
