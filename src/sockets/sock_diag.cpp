// An inet_diag dump of the LISTEN sockets over NETLINK_SOCK_DIAG (see sock_diag.hpp for why).
// This file only moves bytes; sock_diag_reply.cpp decides what they mean.
#include "sockets/sock_diag.hpp"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>
#include <cstddef>

#include "transient/detail/throw_error.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace transient::detail {
namespace {

// Limits that keep every loop bounded. A dump datagram is at most 32 KiB (the kernel caps its
// dump buffers there), so a 64 KiB buffer never truncates one; MSG_TRUNC is still checked.
constexpr std::size_t buffer_size = std::size_t{64} * 1024;
// 2^16 datagrams of ~200 listeners each: far more than any namespace holds.
constexpr int max_datagrams = 1 << 16;
// EINTR in a row before giving up (a signal storm, not a real condition).
constexpr int max_interruptions = 1000;
// The kernel answers at once; this only guards against waiting forever on a broken system.
constexpr timeval receive_timeout{5, 0};

struct dump_request {
  nlmsghdr header;
  inet_diag_req_v2 body;
};

// A netlink socket bound to a port id the kernel picks; sets `port_id`.
unique_fd open_diag_socket(std::uint32_t& port_id, std::error_code& ec) {
  unique_fd fd(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!fd) {
    ec = last_error();  // EPROTONOSUPPORT, EAFNOSUPPORT, EACCES, EPERM: not available here
    return {};
  }
  sockaddr_nl self{};
  self.nl_family = AF_NETLINK;
  socklen_t length = sizeof self;
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&self), sizeof self) != 0 ||
      ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&self), &length) != 0 ||
      ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &receive_timeout, sizeof receive_timeout) != 0) {
    ec = last_error();
    return {};
  }
  port_id = self.nl_pid;
  return fd;
}

void send_request(int fd, std::uint8_t family, std::uint32_t sequence, std::error_code& ec) {
  dump_request request{};
  request.header.nlmsg_len = sizeof request;
  request.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  request.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  request.header.nlmsg_seq = sequence;
  request.body.sdiag_family = family;
  request.body.sdiag_protocol = IPPROTO_TCP;
  request.body.idiag_states = 1U << TCP_LISTEN;  // the kernel walks only the listening hash
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;  // nl_pid 0: the kernel
  for (int attempt = 0; attempt < max_interruptions; ++attempt) {
    if (::sendto(fd, &request, sizeof request, 0, reinterpret_cast<const sockaddr*>(&kernel), sizeof kernel) >= 0) {
      return;
    }
    if (errno != EINTR) {
      ec = last_error();
      return;
    }
  }
  ec = std::make_error_code(std::errc::interrupted);
}

// One datagram from the kernel into `buffer`; returns its length (0 with `ec` on failure).
std::size_t receive(int fd, std::vector<std::byte>& buffer, std::error_code& ec) {
  for (int attempt = 0; attempt < max_interruptions; ++attempt) {
    sockaddr_nl sender{};
    iovec part{buffer.data(), buffer.size()};
    msghdr message{};
    message.msg_name = &sender;
    message.msg_namelen = sizeof sender;
    message.msg_iov = &part;
    message.msg_iovlen = 1;
    const ssize_t n = ::recvmsg(fd, &message, 0);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      ec = errno == EAGAIN ? std::make_error_code(std::errc::timed_out) : last_error();
      return 0;
    }
    if ((message.msg_flags & MSG_TRUNC) != 0) {
      ec = std::make_error_code(std::errc::message_size);  // part of the datagram was lost
      return 0;
    }
    if (sender.nl_pid != 0) {
      continue;  // another process wrote to our port id: not the kernel's reply
    }
    return static_cast<std::size_t>(n);
  }
  ec = std::make_error_code(std::errc::interrupted);
  return 0;
}

// The LISTEN sockets of one address family, appended to `out`.
void dump_family(int fd, std::uint8_t family, const diag_expect& expect, std::vector<std::byte>& buffer,
                 std::vector<diag_listener>& out, std::error_code& ec) {
  send_request(fd, family, expect.sequence, ec);
  if (ec) {
    return;
  }
  // A reply spans several datagrams (NLM_F_MULTI) until NLMSG_DONE.
  for (int datagram = 0; datagram < max_datagrams; ++datagram) {
    const std::size_t length = receive(fd, buffer, ec);
    if (ec) {
      return;
    }
    if (length == 0) {
      ec = std::make_error_code(std::errc::bad_message);  // an empty datagram never ends a dump
      return;
    }
    const std::span<const std::byte> bytes(buffer.data(), length);
    if (parse_diag_datagram(bytes, expect, out, ec) == diag_progress::done) {
      return;
    }
  }
  ec = std::make_error_code(std::errc::value_too_large);
}

}  // namespace

std::vector<diag_listener> read_sock_diag_listeners(std::error_code& ec) {
  ec.clear();
  std::uint32_t port_id = 0;
  const unique_fd fd = open_diag_socket(port_id, ec);
  if (ec) {
    return {};
  }
  std::vector<std::byte> buffer(buffer_size);
  std::vector<diag_listener> listeners;
  std::uint32_t sequence = 0;
  for (const std::uint8_t family : {std::uint8_t{AF_INET}, std::uint8_t{AF_INET6}}) {
    dump_family(fd.get(), family, diag_expect{++sequence, port_id}, buffer, listeners, ec);
    if (ec) {
      return {};
    }
  }
  return listeners;
}

}  // namespace transient::detail
