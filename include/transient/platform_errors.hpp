// transient/platform_errors.hpp: the error codes of other platforms' socket calls, and what
// they mean per operation.
//
// Servers built on Asio also run on FreeBSD, macOS and Windows, whose accept, connect,
// read/write, bind and listen report their own codes: BSD numbers (EAGAIN is 35, ECONNABORTED
// 53) and Winsock's (WSAEMFILE 10024, WSAENOBUFS 10055, and Win32 codes from AcceptEx and
// overlapped I/O such as ERROR_NETNAME_DELETED). Each platform's table lists the codes its
// manual pages and headers give for those calls (docs/errors.md names the sources) with the
// Linux errno of the same meaning; classification is then the Linux rule of that errno, so
// one set of rules (classify.hpp) decides everywhere.
//
// On Linux, classify() uses the Linux table. Compiled on another platform, classify() reads
// system-category codes through that platform's table (native_platform, a compile-time
// choice), which is what the Asio adapters see there. The tables themselves are data, and
// are tested on Linux.
#pragma once

#include <optional>
#include <span>
#include <string_view>

#include "transient/classify.hpp"

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
