// The LISTEN sockets of this network namespace from the kernel's socket-diagnostics netlink
// interface (NETLINK_SOCK_DIAG, inet_diag), as `ss -lt` reads them.
//
// Why not /proc/net/tcp: to print that file the kernel walks every TCP socket, established
// ones included, and formats each as text, so its cost grows with the server's connections
// (README.md, "Performance", has the figures). An inet_diag dump with idiag_states = 1 << TCP_LISTEN walks only the
// listening hash and returns binary records that also carry the socket cookie (SO_COOKIE), which, unlike an inode, is
// never reused. The interface may be missing (no inet_diag module, a seccomp or LSM policy that forbids netlink
// sockets): callers fall back to /proc (see listen_table.hpp).
#pragma once

#include <system_error>
#include <vector>

#include "sockets/sock_diag_reply.hpp"

namespace transient::detail {

/// Every TCP LISTEN socket, IPv4 then IPv6, of the caller's network namespace. On failure
/// sets `ec` and returns nothing: the errno of socket(), bind(), send() or recv() (EINTR is
/// retried), of the kernel's NLMSG_ERROR (ENOENT when inet_diag is missing), or
/// std::errc::bad_message (malformed reply), message_size (a datagram larger than the
/// buffer), timed_out (no reply within a few seconds).
[[nodiscard]] std::vector<diag_listener> read_sock_diag_listeners(std::error_code& ec);

}  // namespace transient::detail
