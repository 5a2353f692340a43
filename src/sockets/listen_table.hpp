// The kernel's table of TCP LISTEN sockets for verify() and who_listens(), from the fastest
// source that works: an inet_diag netlink dump (sock_diag.hpp), else /proc/net/tcp and tcp6
// (proc_file.hpp). Both cover the caller's network namespace and list the same LISTEN
// sockets; only sock_diag gives cookies. The source is a parameter so that tests and the
// benchmark can force each path and compare them.
#pragma once

#include <cstdint>
#include <optional>
#include <system_error>
#include <vector>

#include "transient/sockets/endpoint.hpp"
#include "transient/sockets/listener.hpp"

namespace transient::detail {

/// Where the LISTEN sockets are read from.
enum class listen_source {
  automatic,     ///< sock_diag; /proc/net/tcp* if sock_diag fails (the answer is the same, only slower).
  sock_diag,     ///< NETLINK_SOCK_DIAG only; its error is returned.
  proc_net_tcp,  ///< /proc/net/tcp and /proc/net/tcp6 only.
};

/// One LISTEN socket, from either source.
struct listen_row {
  endpoint local;            ///< Local address and port.
  std::uint32_t uid = 0;     ///< Owner's user id.
  std::uint64_t inode = 0;   ///< Socket inode.
  std::uint64_t cookie = 0;  ///< SO_COOKIE of the socket; 0 when read from /proc (which does not show it).
  std::uint32_t queued = 0;  ///< Connections waiting in its accept queue (sock_diag's rqueue, /proc's rx_queue).
  /// The accept queue's limit (sock_diag's wqueue); unknown when read from /proc, which does not show it.
  std::optional<std::uint32_t> queue_limit;
};

/// The LISTEN sockets and where they came from.
struct listen_table {
  std::vector<listen_row> rows;
  listen_source source = listen_source::automatic;  ///< sock_diag or proc_net_tcp: the source used.
  std::error_code sock_diag_error;                  ///< Why sock_diag was not used (automatic fallback), if so.
};

/// Reads the LISTEN sockets from `source`. `automatic` falls back to /proc on any sock_diag
/// failure (netlink not permitted, EPROTONOSUPPORT, ENOENT for a missing inet_diag module, a
/// malformed reply): /proc gives the same rows, so a failure of the fast path costs only
/// time. On failure of the source used, sets `ec` and returns an empty table.
[[nodiscard]] listen_table read_listen_table(listen_source source, std::error_code& ec);

/// The row as a public listen_entry (no owners yet).
[[nodiscard]] listen_entry entry_of(const listen_row& row);

/// "sock_diag" or "/proc/net/tcp", for messages.
[[nodiscard]] const char* source_name(listen_source source) noexcept;

}  // namespace transient::detail
