// classify(): the verdict for an error code in the context of one operation.
//
// The rules follow docs/errors.md column by column. They are evaluated once, at compile time,
// into a table indexed by operation and errno value, so classify() is a category check
// and one load. Cells where the operation does not return that errno (docs/design.md) get
// the operation's rule for "anything else", with `unclassified` as the reason.
#include "transient/errors/classify.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>

#include "errors/condition_bits.hpp"
#include "errors/errno_table.hpp"

namespace transient {
namespace {

using enum action;
using enum condition;

constexpr verdict unexpected_accept{back_off, unclassified,
                                    "unexpected from accept: back off, report it once, let the stall watchdog decide"};
constexpr verdict unexpected_other{fail, unclassified, "unexpected from this operation: treat it as a failure"};
constexpr verdict fd_bug{fail, programming_error,
                         "the descriptor, address family or buffer is invalid: a bug in the caller"};
constexpr verdict not_stream{fail, not_supported, "the socket does not support this operation: a bug in the caller"};
constexpr verdict process_fds{back_off, process_fd_limit,
                              "this process reached RLIMIT_NOFILE: back off until a descriptor is released; "
                              "if it persists, look for a leak"};
constexpr verdict system_fds{back_off, system_fd_limit,
                             "the system file table is full (fs.file-max), maybe by another process: back off, "
                             "check /proc/sys/fs/file-nr"};
constexpr verdict low_memory{back_off, memory_exhausted, "the kernel is short of socket memory: back off, retry later"};
constexpr verdict signal_retry{retry, interrupted, "a signal interrupted the call: call it again now"};

constexpr verdict accept_rule(int e) noexcept {
  switch (e) {
    case EAGAIN:
      return {wait, would_block,
              "no connection is queued: wait until the listener is readable (with SO_RCVTIMEO: a timeout)"};
    case EINTR: return signal_retry;
    case ECONNABORTED:
    case EPROTO:
    case ENOPROTOOPT:
    case ENETDOWN:
    case ENETUNREACH:
    case EHOSTDOWN:
    case EHOSTUNREACH:
    case ENONET:
      return {skip, connection_failed, "the pending connection died; the listener is fine: accept the next one now"};
    case ECONNRESET:
    case EPIPE:
    case ESHUTDOWN:
      return {skip, peer_gone, "the peer reset the pending connection; the listener is fine: accept the next one now"};
    case EMFILE: return process_fds;
    case ENFILE: return system_fds;
    case ENOBUFS:
    case ENOMEM: return low_memory;
    case EPERM:
    case EACCES:
      return {skip, permission_denied,
              "a firewall or security module refused this connection: count it, accept the next one"};
    case EINVAL:
      return {fail, not_listening,
              "the socket is not listening: a clean stop if you shut it down, otherwise a dead listener"};
    case EOPNOTSUPP:
      return {fail, not_supported,
              "the socket is not a stream socket (a bug); on a listening stream socket, skip the connection"};
    case EBADF:
    case ENOTSOCK:
    case EFAULT:
    case EAFNOSUPPORT: return fd_bug;
    default: return unexpected_accept;
  }
}

constexpr verdict connect_rule(int e) noexcept {
  switch (e) {
    case EAGAIN:
      return {back_off, would_block, "the AF_UNIX listener's backlog is full (TCP says EINPROGRESS): back off"};
    case EINTR:
      return {wait, interrupted,
              "the attempt goes on: wait until writable, then read SO_ERROR (calling connect again is wrong)"};
    case EINPROGRESS:
    case EALREADY: return {wait, in_progress, "wait until the socket is writable, then read SO_ERROR for the result"};
    case EISCONN: return {done, already_connected, "the socket is connected (after EINPROGRESS or EINTR: success)"};
    case ECONNABORTED:
    case EPROTO:
    case ENOPROTOOPT:
      return {close, connection_failed, "this attempt failed: close the socket and try the next address"};
    case ENETDOWN:
    case ENETUNREACH:
    case EHOSTDOWN:
    case EHOSTUNREACH:
    case ENONET:
      return {close, network_unreachable, "unreachable: try the next address; back off if every address fails"};
    case ECONNREFUSED: return {close, refused, "nobody listens at that address: try the next address"};
    case ETIMEDOUT: return {close, timed_out, "the peer did not answer: try the next address, or back off"};
    case ECONNRESET:
    case EPIPE:
    case ESHUTDOWN: return {close, peer_gone, "the peer reset the connection: close it, try again or elsewhere"};
    case EMFILE: return process_fds;
    case ENFILE: return system_fds;
    case ENOBUFS:
    case ENOMEM: return low_memory;
    case EADDRINUSE: return {retry, address_in_use, "the local 4-tuple clashes: retry with a new socket"};
    case EADDRNOTAVAIL:
      return {back_off, address_unavailable,
              "ephemeral ports are exhausted (TIME_WAIT?): back off, or widen the range"};
    case EPERM:
    case EACCES:
      return {fail, permission_denied, "a firewall or security module refused the connection (or a broadcast address)"};
    case EINVAL: return {fail, invalid_argument, "invalid address or socket state: a bug in the caller"};
    case EOPNOTSUPP: return not_stream;
    case EBADF:
    case ENOTSOCK:
    case EFAULT:
    case EAFNOSUPPORT: return fd_bug;
    default: return unexpected_other;
  }
}

constexpr verdict transfer_rule(int e) noexcept {
  switch (e) {
    case EAGAIN: return {wait, would_block, "not ready: wait for readiness (with SO_RCVTIMEO/SO_SNDTIMEO: a timeout)"};
    case EINTR: return signal_retry;
    case ECONNABORTED:
    case EPROTO:
    case ENOPROTOOPT: return {close, connection_failed, "the connection failed: close it"};
    case ENETDOWN:
    case ENETUNREACH:
    case EHOSTDOWN:
    case EHOSTUNREACH:
    case ENONET: return {close, network_unreachable, "the peer became unreachable: close the connection"};
    case ECONNREFUSED: return {close, refused, "the peer refused (UDP: an ICMP port-unreachable report): close"};
    case ETIMEDOUT: return {close, timed_out, "the connection timed out (retransmissions or keepalive): close it"};
    case ECONNRESET:
    case EPIPE:
    case ESHUTDOWN:
      return {close, peer_gone, "the peer closed or reset the connection: close it (send with MSG_NOSIGNAL)"};
    case ENOTCONN:
      return {close, not_connected, "the socket is not connected: close it (or a bug: I/O before connect)"};
    case ENOBUFS:
    case ENOMEM: return low_memory;
    case EPERM:
    case EACCES: return {fail, permission_denied, "a firewall or security module refused the transfer"};
    case EINVAL: return {fail, invalid_argument, "invalid buffer, flags or socket state: a bug in the caller"};
    case EOPNOTSUPP: return not_stream;
    case EBADF:
    case ENOTSOCK:
    case EFAULT:
    case EAFNOSUPPORT: return fd_bug;
    default: return unexpected_other;
  }
}

constexpr verdict setup_rule(int e) noexcept {
  switch (e) {
    case EINTR: return signal_retry;
    case EMFILE: return process_fds;
    case ENFILE: return system_fds;
    case ENOBUFS:
    case ENOMEM: return low_memory;
    case EADDRINUSE:
      return {fail, address_in_use,
              "the address is taken: a fixed port fails; a port hunt tries the next port with a new socket"};
    case EADDRNOTAVAIL: return {fail, address_unavailable, "the address is not local to this machine"};
    case EPERM:
    case EACCES:
      return {fail, permission_denied, "a port below 1024 needs CAP_NET_BIND_SERVICE (or a security module refused)"};
    case EINVAL:
      return {fail, invalid_argument, "the socket is already bound (e.g. after a failed listen): use a new socket"};
    case EOPNOTSUPP: return not_stream;
    case EBADF:
    case ENOTSOCK:
    case EFAULT:
    case EAFNOSUPPORT: return fd_bug;
    default: return unexpected_other;
  }
}

constexpr verdict rule(operation op, int e) noexcept {
  switch (op) {
    case operation::accept: return accept_rule(e);
    case operation::connect: return connect_rule(e);
    case operation::read:
    case operation::write: return transfer_rule(e);
    case operation::bind:
    case operation::listen: return setup_rule(e);
  }
  return unexpected_other;
}

constexpr verdict nothing_to_classify{retry, unclassified, "success: there is nothing to classify"};

using verdict_row = std::array<verdict, detail::errno_max + 1>;
constexpr auto verdicts = [] {
  std::array<verdict_row, operation_count> table{};
  for (int op = 0; op < operation_count; ++op) {
    auto& row = table[static_cast<std::size_t>(op)];
    row[0] = nothing_to_classify;
    for (int e = 1; e <= detail::errno_max; ++e) {
      row[static_cast<std::size_t>(e)] = rule(static_cast<operation>(op), e);
    }
  }
  return table;
}();

// Codes that are not errno values: transient's own findings and foreign categories.
verdict classify_other(operation op, const std::error_code& ec) noexcept {
  const detail::condition_set found = detail::conditions_of(ec);
  if ((found & detail::bit(stalled)) != 0) {
    return {fail, stalled, "descriptors stayed exhausted with no progress: restart, and read the diagnosis"};
  }
  if ((found & detail::bit(duplicate_listener)) != 0) {
    return {fail, duplicate_listener, "another socket listens on this address: stop, and find it (transient who)"};
  }
  if ((found & detail::bit(not_listening)) != 0) {
    return {fail, not_listening, "the socket is not the kernel's listener for its address"};
  }
  if ((found & detail::bit(peer_gone)) != 0 && (op == operation::read || op == operation::write)) {
    return {close, peer_gone, "the peer closed the connection: close it"};
  }
  return op == operation::accept ? unexpected_accept : unexpected_other;
}

}  // namespace

namespace {

// The Linux table's verdict for a Linux errno value.
verdict classify_linux(operation op, int value) noexcept {
  const auto row = static_cast<std::size_t>(op);
  if (row >= verdicts.size()) {
    return unexpected_other;
  }
  if (value > 0 && value <= detail::errno_max) {
    return verdicts[row][static_cast<std::size_t>(value)];
  }
  return op == operation::accept ? unexpected_accept : unexpected_other;
}

}  // namespace

verdict classify(platform p, operation op, int value) noexcept {
  if (value == 0) {
    return nothing_to_classify;
  }
  if (p == platform::linux_os) {
    return classify_linux(op, value);
  }
  // A value the platform's table does not list gets the operation's rule for anything else.
  const auto known = find_platform_error(p, value);
  return known ? classify_linux(op, known->linux_errno) : classify_linux(op, -1);
}

verdict classify(operation op, std::error_code ec) noexcept {
  const auto row = static_cast<std::size_t>(op);
  if (row >= verdicts.size()) {
    return unexpected_other;
  }
  if (!ec) {
    return nothing_to_classify;
  }
  // Compiled on another platform, its system-category codes are read through its own table
  // (classify.hpp); on Linux this is compiled out.
  if constexpr (native_platform != platform::linux_os) {
    if (ec.category() == std::system_category() || ec.category() == std::generic_category()) {
      return classify(native_platform, op, ec.value());
    }
  }
  const int value = detail::errno_value(ec);
  if (value > 0 && value <= detail::errno_max) {
    return verdicts[row][static_cast<std::size_t>(value)];
  }
  if (value != 0) {  // an errno beyond Linux's table
    return op == operation::accept ? unexpected_accept : unexpected_other;
  }
  return classify_other(op, ec);
}

namespace {
constexpr std::array<std::string_view, operation_count> operation_names{"accept", "connect", "read",
                                                                        "write",  "bind",    "listen"};
constexpr std::array<std::string_view, 7> action_names{"retry", "wait", "skip", "close", "back_off", "fail", "done"};
}  // namespace

std::string_view to_string(operation op) noexcept {
  const auto index = static_cast<std::size_t>(op);
  return index < operation_names.size() ? operation_names[index] : "unknown";
}

std::string_view to_string(action a) noexcept {
  const auto index = static_cast<std::size_t>(a);
  return index < action_names.size() ? action_names[index] : "unknown";
}

std::optional<operation> parse_operation(std::string_view name) noexcept {
  const auto same = [name](std::string_view known) {
    return std::ranges::equal(known, name,
                              [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); });
  };
  for (std::size_t i = 0; i < operation_names.size(); ++i) {
    if (same(operation_names[i])) {
      return static_cast<operation>(i);
    }
  }
  // The other system calls each operation stands for share its rules.
  struct alias {
    std::string_view name;
    operation op;
  };
  static constexpr std::array<alias, 7> aliases{{{"accept4", operation::accept},
                                                 {"recv", operation::read},
                                                 {"recvfrom", operation::read},
                                                 {"recvmsg", operation::read},
                                                 {"send", operation::write},
                                                 {"sendto", operation::write},
                                                 {"sendmsg", operation::write}}};
  for (const alias& a : aliases) {
    if (same(a.name)) {
      return a.op;
    }
  }
  return std::nullopt;
}

}  // namespace transient
