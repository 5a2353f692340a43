// transient/sockets/listen_queue.hpp: the kernel's accept queue seen from user space: how many
// connections wait on a listener and how many it holds at most, the network namespace's counters
// of handshakes no queue could take, and how long an accepted connection waited. Include it to
// watch a listener's queue or to bound how long clients wait in it. Design: docs/design.md,
// "The accept queue".
#pragma once

#include <chrono>
#include <cstdint>
#include <system_error>

#include "transient/sockets/unique_fd.hpp"

namespace transient {

/// A listener's accept queue at one moment.
struct listen_queue {
  std::uint32_t length = 0;  ///< Connections whose handshake the kernel completed, not yet accepted.
  /// The most the queue holds: the listen() backlog, capped by net.core.somaxconn. The kernel
  /// takes one more before it drops handshakes, so `length` may exceed it by one.
  std::uint32_t limit = 0;

  /// length / limit: 0 when the queue is empty, 1 or a little more when it is full (0 if limit is 0).
  [[nodiscard]] double fill() const noexcept {
    return limit == 0 ? 0.0 : static_cast<double>(length) / static_cast<double>(limit);
  }

  friend bool operator==(const listen_queue&, const listen_queue&) = default;
};

/// The accept queue of the listening TCP socket `fd`: one getsockopt(TCP_INFO), no allocation,
/// safe on any thread. Errors: EBADF, ENOTSOCK, EOPNOTSUPP (not a TCP socket),
/// error::not_listening (a TCP socket that does not listen).
[[nodiscard]] listen_queue queue_of(int fd);
/// As above; on failure sets `ec` and returns an empty queue.
[[nodiscard]] listen_queue queue_of(int fd, std::error_code& ec) noexcept;

/// The counters of this network namespace for handshakes that no listener took
/// (/proc/net/netstat, TcpExt). They are machine-wide: the kernel does not say which listener.
struct listen_drops {
  /// ListenOverflows: handshakes dropped because a listener's accept queue was full. The
  /// client's SYN (or its final ACK) goes unanswered; it retries a second later, then after longer gaps.
  std::uint64_t overflows = 0;
  /// ListenDrops: every SYN or handshake a listener dropped, for any reason (overflows included).
  std::uint64_t drops = 0;

  friend bool operator==(const listen_drops&, const listen_drops&) = default;
};

/// Reads this network namespace's listen_drops. Throws std::system_error if /proc/net/netstat
/// cannot be read or lacks the counters (EPROTO).
[[nodiscard]] listen_drops read_listen_drops();
/// As above; on failure sets `ec` and returns zeros.
[[nodiscard]] listen_drops read_listen_drops(std::error_code& ec);

/// Reads listen_drops through a descriptor of /proc/net/netstat that it opens once and keeps,
/// so that a process whose descriptors are exhausted, when the counters matter most, still
/// reads them. Reads are thread-safe.
class listen_drops_reader {
 public:
  /// Opens /proc/net/netstat. Throws std::system_error if it cannot.
  listen_drops_reader();
  /// As above; on failure sets `ec`, and read() opens the file each time (read_listen_drops()).
  explicit listen_drops_reader(std::error_code& ec);

  /// The counters now. Throws std::system_error if they cannot be read (EPROTO if absent).
  [[nodiscard]] listen_drops read() const;
  /// As above; on failure sets `ec` and returns zeros.
  [[nodiscard]] listen_drops read(std::error_code& ec) const;

 private:
  unique_fd netstat_;
};

/// How long the connection on `fd`, just accepted, waited in its listener's accept queue: the
/// time since the kernel completed its handshake, from the kernel's own stamp (TCP_INFO's
/// tcpi_last_data_sent, stamped at the handshake and afterwards only when the connection sends
/// data), to the kernel's resolution (one jiffy: 1 to 10 ms). Valid until the connection first
/// sends. One getsockopt, no allocation. Errors: EBADF, ENOTSOCK, EOPNOTSUPP (not TCP).
[[nodiscard]] std::chrono::milliseconds queue_wait_of(int fd);
/// As above; on failure sets `ec` and returns 0.
[[nodiscard]] std::chrono::milliseconds queue_wait_of(int fd, std::error_code& ec) noexcept;

}  // namespace transient
