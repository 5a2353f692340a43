// The parser of NETLINK_SOCK_DIAG dump replies (inet_diag), separate from the socket I/O in
// sock_diag.cpp so that it can be tested on crafted and malformed datagrams.
//
// A reply to one SOCK_DIAG_BY_FAMILY dump is a series of datagrams; each holds netlink
// messages (nlmsghdr + payload, each padded to 4 bytes). Data messages carry an
// inet_diag_msg; the dump ends with NLMSG_DONE (whose payload is 0 or a negative errno), or
// with NLMSG_ERROR (a negative errno, e.g. -ENOENT when the inet_diag module is missing).
// Nothing in a datagram is trusted: every length is checked against the bytes received, and
// headers are copied out with memcpy because a buffer need not be aligned.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>
#include <vector>

#include "transient/sockets/endpoint.hpp"

namespace transient::detail {

/// One LISTEN socket as inet_diag reports it.
struct diag_listener {
  endpoint local;            ///< Local address and port (an IPv4-mapped IPv6 address stays IPv6).
  std::uint32_t uid = 0;     ///< idiag_uid: the socket's owner.
  std::uint64_t inode = 0;   ///< idiag_inode (fstat(fd).st_ino of the socket).
  std::uint64_t cookie = 0;  ///< idiag_cookie[0] | idiag_cookie[1] << 32: the same number as SO_COOKIE.
  std::uint32_t queued = 0;  ///< idiag_rqueue: connections waiting in the accept queue.
  std::uint32_t limit = 0;   ///< idiag_wqueue: the accept queue's limit (the backlog, capped by somaxconn).
};

/// What a reply must carry to be ours: the request's sequence number and our port id.
/// Messages with another sequence number or port id are ignored (not errors).
struct diag_expect {
  std::uint32_t sequence = 0;
  std::uint32_t port_id = 0;
};

/// Whether the dump continues after a datagram.
enum class diag_progress {
  more,  ///< No NLMSG_DONE yet: receive the next datagram.
  done,  ///< NLMSG_DONE (or an error) ended the dump.
};

/// Parses one received datagram, appending each LISTEN socket of the dump to `out`. Errors (in
/// `ec`, with `done` returned): the errno of an NLMSG_ERROR or of a negative NLMSG_DONE status;
/// std::errc::bad_message for a malformed datagram (a truncated header, nlmsg_len smaller than
/// a header or beyond the datagram, an inet_diag_msg shorter than its structure, a family that
/// is neither AF_INET nor AF_INET6); std::errc::value_too_large for NLMSG_OVERRUN. Rows already
/// appended stay in `out`; callers discard them on error. Sockets not in LISTEN state are
/// skipped (the request asks for LISTEN only; the check costs nothing).
[[nodiscard]] diag_progress parse_diag_datagram(std::span<const std::byte> datagram, const diag_expect& expect,
                                                std::vector<diag_listener>& out, std::error_code& ec);

}  // namespace transient::detail
