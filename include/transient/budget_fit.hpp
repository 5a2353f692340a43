// transient/budget_fit.hpp: does a connection budget fit the descriptors the process can
// still open?
//
// Each connection holds at least one descriptor. A budget above what RLIMIT_NOFILE leaves
// free is not refused (descriptors may be freed, the limit raised, the budget may be meant
// for several listeners' bursts), but it means the server runs out of descriptors before it
// reaches its budget: accept backs off on EMFILE and, with legitimate long-lived clients,
// the stall watchdog stops it. The drivers (transient::server, the Asio adapter, `transient
// serve`) check once when they are built and warn, so the first sign is a line at start
// rather than a stop under load.
#pragma once

#include <cstdint>
#include <string>

#include "transient/policy_events.hpp"

namespace transient {

/// How a connection budget compares with the descriptors the process can still open.
struct budget_fit {
  std::uint64_t max_connections = 0;  ///< The budget checked.
  std::uint64_t fd_limit = 0;         ///< The RLIMIT_NOFILE soft limit (0: it could not be read).
  std::uint64_t open = 0;             ///< Descriptors open at the check.
  /// The largest budget the descriptors left can hold (fd_limit - open), counting one
  /// descriptor per connection.
  std::uint64_t fits = 0;
  /// Empty if the budget fits (or the limit could not be read); otherwise one line naming the
  /// budget, the limit, the descriptors open and the budget that would fit.
  std::string warning;

  /// True if the budget fits.
  explicit operator bool() const noexcept { return warning.empty(); }
};

/// Checks `max_connections` against RLIMIT_NOFILE and the descriptors open now.
[[nodiscard]] budget_fit check_budget_fit(std::uint64_t max_connections);

/// check_budget_fit(), and if the budget does not fit, its warning as one
/// policy_event_kind::warning event to `sink` (write_to_stderr if empty; an exception from
/// the sink is dropped, as the accept policy does). Returns the check.
budget_fit warn_if_budget_does_not_fit(std::uint64_t max_connections, const policy_event_sink& sink) noexcept;

/// What raise_fd_limit() found and did.
struct fd_limit_raise {
  std::uint64_t before = 0;  ///< The RLIMIT_NOFILE soft limit before.
  std::uint64_t after = 0;   ///< The soft limit now (before, if nothing changed).
  std::uint64_t hard = 0;    ///< The hard limit: the most an unprivileged process may raise it to.

  /// True if the soft limit was raised.
  [[nodiscard]] bool raised() const noexcept { return after > before; }
};

/// Raises the RLIMIT_NOFILE soft limit to the hard limit, as a server that needs many
/// descriptors should do itself at start: Debian and systemd give services a soft limit of
/// 1,024 (kept low for programs that still use select(), whose FD_SETSIZE is 1,024) under a
/// hard limit of 524,288. Go raises its soft limit the same way. Do not call it in a process
/// that uses select(). A hard limit of RLIM_INFINITY (which setrlimit refuses for descriptors)
/// raises the soft limit to the kernel's fs.nr_open instead. On failure `ec` is set (getrlimit's
/// or setrlimit's error) and the limit is left as it was.
[[nodiscard]] fd_limit_raise raise_fd_limit(std::error_code& ec) noexcept;
/// As above; throws std::system_error on failure.
fd_limit_raise raise_fd_limit();

}  // namespace transient
