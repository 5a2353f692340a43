// Parser of inet_diag dump replies (see sock_diag_reply.hpp for the message layout).
#include "sockets/sock_diag_reply.hpp"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <array>
#include <climits>
#include <cstring>

namespace transient::detail {
namespace {

// A trivially copyable T read from the start of `bytes`, which must be at least sizeof(T).
template <typename T>
T load(std::span<const std::byte> bytes) noexcept {
  T value{};
  std::memcpy(&value, bytes.data(), sizeof value);
  return value;
}

std::error_code malformed() noexcept { return std::make_error_code(std::errc::bad_message); }

// The errno carried by NLMSG_ERROR or NLMSG_DONE as a negative int. A positive value or
// INT_MIN (whose negation overflows) is not an errno the kernel sends.
std::error_code kernel_error(int negative_errno) noexcept {
  if (negative_errno >= 0 || negative_errno == INT_MIN) {
    return malformed();
  }
  return {-negative_errno, std::system_category()};
}

// One inet_diag_msg payload -> a row; false (with `ec`) if malformed, false without error if
// the socket is not listening.
bool decode_listener(std::span<const std::byte> payload, diag_listener& row, std::error_code& ec) {
  if (payload.size() < sizeof(inet_diag_msg)) {
    ec = malformed();
    return false;
  }
  const auto message = load<inet_diag_msg>(payload);
  if (message.idiag_state != TCP_LISTEN) {
    return false;
  }
  // Ports and addresses are in network order; the kernel's words are copied as they are.
  const auto port = ntohs(message.id.idiag_sport);
  std::array<std::uint8_t, 16> bytes{};
  std::memcpy(bytes.data(), message.id.idiag_src, bytes.size());
  if (message.idiag_family == AF_INET) {
    row.local = endpoint::v4({bytes[0], bytes[1], bytes[2], bytes[3]}, port);
  } else if (message.idiag_family == AF_INET6) {
    // idiag_if (a link-local address's interface) is left out: /proc/net/tcp6 does not show it
    // either, and verify() compares addresses without scope.
    row.local = endpoint::v6(bytes, port);
  } else {
    ec = malformed();
    return false;
  }
  row.uid = message.idiag_uid;
  row.inode = message.idiag_inode;
  // For a LISTEN socket the kernel reports its accept queue: length and limit (ss's Recv-Q and Send-Q).
  row.queued = message.idiag_rqueue;
  row.limit = message.idiag_wqueue;
  // sock_diag stores the 64-bit cookie (the one SO_COOKIE returns) as two 32-bit halves, low first.
  row.cookie = static_cast<std::uint64_t>(message.id.idiag_cookie[0]) |
               (static_cast<std::uint64_t>(message.id.idiag_cookie[1]) << 32);
  return true;
}

}  // namespace

diag_progress parse_diag_datagram(std::span<const std::byte> datagram, const diag_expect& expect,
                                  std::vector<diag_listener>& out, std::error_code& ec) {
  ec.clear();
  constexpr std::size_t header_size = NLMSG_HDRLEN;  // sizeof(nlmsghdr), already aligned
  // Bounded: every message advances by at least a header, so the loop runs at most
  // datagram.size() / 16 times.
  while (!datagram.empty()) {
    if (datagram.size() < header_size) {
      ec = malformed();  // a truncated header
      return diag_progress::done;
    }
    const auto header = load<nlmsghdr>(datagram);
    if (header.nlmsg_len < header_size || header.nlmsg_len > datagram.size()) {
      ec = malformed();
      return diag_progress::done;
    }
    const auto payload = datagram.subspan(header_size, header.nlmsg_len - header_size);
    // The last message's padding may be missing; never step beyond the datagram.
    const std::size_t step = NLMSG_ALIGN(header.nlmsg_len);
    datagram = datagram.subspan(step < datagram.size() ? step : datagram.size());

    if (header.nlmsg_seq != expect.sequence || header.nlmsg_pid != expect.port_id) {
      continue;  // not a reply to this request
    }
    switch (header.nlmsg_type) {
      case NLMSG_NOOP: break;
      case NLMSG_ERROR: {
        if (payload.size() < sizeof(int)) {
          ec = malformed();
          return diag_progress::done;
        }
        const int error = load<int>(payload);
        if (error == 0) {
          break;  // an acknowledgement, not an error (a dump does not ask for one)
        }
        ec = kernel_error(error);
        return diag_progress::done;
      }
      case NLMSG_DONE:
        // The dump's final status: 0, or a negative errno if the dump failed part-way.
        if (payload.size() >= sizeof(int) && load<int>(payload) != 0) {
          ec = kernel_error(load<int>(payload));
        }
        return diag_progress::done;
      case NLMSG_OVERRUN: ec = std::make_error_code(std::errc::value_too_large); return diag_progress::done;
      case SOCK_DIAG_BY_FAMILY: {
        diag_listener row;
        if (decode_listener(payload, row, ec)) {
          out.push_back(row);
        } else if (ec) {
          return diag_progress::done;
        }
        break;
      }
      default: break;  // a type this request does not produce: ignored
    }
  }
  return diag_progress::more;
}

}  // namespace transient::detail
