// transient/diagnosis/diagnostics.hpp: what holds the descriptors, and what to change. The
// drivers write a diagnosis when accepting stalls; include it to take a census or diagnose
// yourself. Everything here works without a free descriptor (diagnosis_fds keeps the /proc
// files it needs open). Design: docs/design.md, "Principles" (5).
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "transient/sockets/unique_fd.hpp"

namespace transient {

/// What a descriptor refers to.
enum class fd_kind : unsigned char {
  tcp_socket,        ///< AF_INET/AF_INET6 stream socket
  udp_socket,        ///< AF_INET/AF_INET6 datagram socket
  unix_socket,       ///< AF_UNIX socket
  other_socket,      ///< any other socket (netlink, packet, ...)
  pipe,              ///< pipe or FIFO
  regular_file,      ///< regular file
  directory,         ///< directory
  character_device,  ///< /dev/null, a terminal, ...
  eventfd,           ///< anon_inode:[eventfd]
  epoll,             ///< anon_inode:[eventpoll]
  timerfd,           ///< anon_inode:[timerfd]
  signalfd,          ///< anon_inode:[signalfd]
  other_anon_inode,  ///< any other anon_inode (inotify, pidfd, io_uring, ...)
  other,             ///< anything else (block device, ...)
};

/// Number of fd_kind values.
inline constexpr std::size_t fd_kind_count = 14;

/// A readable name of a kind ("regular file", "TCP socket", ...).
[[nodiscard]] std::string_view to_string(fd_kind kind) noexcept;

/// The two /proc files the census needs, opened in advance so that a diagnosis can be
/// computed when no descriptor is free: /proc/self/fd (a directory, re-read from its start
/// each time) and /proc/sys/fs/file-nr. Costs two descriptors for the life of the server.
class diagnosis_fds {
 public:
  /// No descriptors (the census will open what it needs, or probe).
  diagnosis_fds() noexcept = default;
  /// Opens both files; sets `ec` if either fails.
  static diagnosis_fds open(std::error_code& ec) noexcept;
  /// Opens both files; throws std::system_error on failure.
  static diagnosis_fds open();

  /// The open /proc/self/fd directory, or -1.
  [[nodiscard]] int fd_directory() const noexcept { return fd_directory_.get(); }
  /// The open /proc/sys/fs/file-nr, or -1.
  [[nodiscard]] int file_nr() const noexcept { return file_nr_.get(); }

 private:
  unique_fd fd_directory_;
  unique_fd file_nr_;
};

/// The descriptors this process holds, counted by kind.
struct fd_census {
  std::size_t total = 0;                             ///< descriptors counted
  std::array<std::size_t, fd_kind_count> by_kind{};  ///< indexed by fd_kind
  /// TCP sockets by state name ("ESTABLISHED", "LISTEN", "CLOSE_WAIT", ...), most first.
  std::vector<std::pair<std::string, std::size_t>> tcp_states;
  /// Targets held by more than one descriptor (a path, "anon_inode:[eventfd]", ...), most
  /// first, at most five: the same file opened 500 times is a leak.
  std::vector<std::pair<std::string, std::size_t>> repeated_targets;
  /// How the descriptors were found: "read /proc/self/fd" or a note that it had to degrade.
  std::string method;

  /// The count of one kind.
  [[nodiscard]] std::size_t count(fd_kind kind) const noexcept { return by_kind[static_cast<std::size_t>(kind)]; }
  /// The most common kind (ties: the first in fd_kind order).
  [[nodiscard]] fd_kind dominant_kind() const noexcept;
};

/// Counts this process's descriptors. Uses the descriptors if they hold /proc/self/fd; otherwise
/// opens it, and if no descriptor is free, probes every descriptor number below the hard
/// RLIMIT_NOFILE (at most 2^20) instead: slower, and `method` says so. Never needs a free
/// descriptor.
[[nodiscard]] fd_census take_fd_census(const diagnosis_fds& fds = {});

/// Counts this process's descriptors as take_fd_census() finds them (so it never needs a free
/// descriptor either) without classifying them: the census asks several system calls of each
/// descriptor, the count none.
[[nodiscard]] std::size_t count_open_fds(const diagnosis_fds& fds = {}) noexcept;

/// RLIMIT_NOFILE.
struct fd_limits {
  std::uint64_t soft = 0;  ///< the limit in force (RLIM_INFINITY shows as UINT64_MAX)
  std::uint64_t hard = 0;  ///< the ceiling an unprivileged process may raise it to
};

/// The process's RLIMIT_NOFILE (zeros if getrlimit fails, which it does not on Linux).
[[nodiscard]] fd_limits current_fd_limits() noexcept;

/// The system-wide file table, from /proc/sys/fs/file-nr.
struct file_table {
  bool known = false;           ///< false if the file could not be read
  std::uint64_t allocated = 0;  ///< file handles allocated
  std::uint64_t maximum = 0;    ///< fs.file-max
};

/// Reads /proc/sys/fs/file-nr through the descriptors if they hold it, else by opening it.
[[nodiscard]] file_table read_file_table(const diagnosis_fds& fds = {}) noexcept;

/// Which case a resource exhaustion is.
enum class exhaustion_case : unsigned char {
  backpressure,     ///< the server's own connections hold the descriptors: the budget is the limit
  process_leak,     ///< EMFILE with most descriptors held outside the connections: likely a leak (named
                    ///< first, with the budget advice after it, even when the budget is also too high)
  budget_too_high,  ///< EMFILE, the budget at or above the limit, the connections holding most descriptors
  system_table,     ///< ENFILE: the system file table is full, maybe because of another process
  kernel_memory,    ///< ENOBUFS/ENOMEM: kernel socket memory
  unknown,          ///< none of the above could be established
};

/// A readable name of a case ("likely descriptor leak", ...).
[[nodiscard]] std::string_view to_string(exhaustion_case c) noexcept;

/// What the driver knows when it asks for a diagnosis.
struct diagnosis_context {
  std::error_code trigger;                   ///< the last error accept returned (EMFILE, ENFILE, ...)
  std::size_t live_connections = 0;          ///< the server's own open connections
  std::size_t budget = 0;                    ///< max_connections
  std::chrono::milliseconds stalled_for{0};  ///< how long nothing made progress (0: not stalled)
};

/// A diagnosis: the case, the figures it rests on, and the text to show a human.
struct diagnosis {
  exhaustion_case what = exhaustion_case::unknown;  ///< the case
  fd_census census;                                 ///< this process's descriptors
  fd_limits limits;                                 ///< RLIMIT_NOFILE
  file_table system;                                ///< /proc/sys/fs/file-nr
  std::string text;  ///< several lines: the case, the figures, and which setting to change
};

/// Decides the case from figures already gathered (a pure function, for tests and tools).
[[nodiscard]] exhaustion_case classify_exhaustion(const diagnosis_context& context, const fd_census& census,
                                                  const fd_limits& limits) noexcept;

/// Gathers the figures and writes the diagnosis. Needs no free descriptor (see take_fd_census).
[[nodiscard]] diagnosis diagnose(const diagnosis_context& context, const diagnosis_fds& fds = {});

}  // namespace transient
