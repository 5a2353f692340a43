// transient/sockets/listener.hpp: listening sockets you can trust. Include it to open a listener:
// `listen` opens one and by default verifies it against the kernel's LISTEN table (it listens,
// it is the kernel's entry for its address, nobody else listens there); `listen_in_range` hunts
// a free port safely; `who_listens` and `listen_sockets` say who listens on a port and what
// waits in its queue; `listeners_from_systemd` takes socket-activated sockets. Every operation
// throws std::system_error or takes std::error_code&; a third overload fills a listen_report,
// whose text the throwing one puts in what(). Design: docs/design.md, "Kernel facts".
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "transient/sockets/endpoint.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace transient {

/// The system calls of the drivers and of listen(): the test seam, defined in
/// <transient/testing/syscalls.hpp>, which only code that replaces them includes.
struct syscalls;

/// How `listen` and `listen_in_range` set up a socket.
struct listen_options {
  /// listen() backlog; 0 means the kernel's maximum, /proc/sys/net/core/somaxconn.
  int backlog = 0;
  /// SO_REUSEADDR. On Linux it only allows binding over TIME_WAIT entries of the port (it never
  /// lets two sockets listen on one address), so it is on by default as in every server.
  bool reuse_address = true;
  /// SO_REUSEPORT. Off by default: it lets any process of the same user join the port and take
  /// a share of its connections (docs/design.md). listen_in_range refuses it.
  bool reuse_port = false;
  /// IPV6_V6ONLY for IPv6 endpoints. On by default, so [::]:P does not also take 0.0.0.0:P.
  bool v6_only = true;
  /// Verify the new listener (see verify()) before returning it.
  bool verify = true;
  /// The test seam (<transient/testing/syscalls.hpp>): the bind and listen calls. Null means
  /// the real system calls. The table is copied when a listen() or listen_in_range() call
  /// starts, so it need not outlive that call.
  const syscalls* sys = nullptr;
};

/// A move-only owner of a listening TCP socket (CLOEXEC, non-blocking) and its local endpoint.
class listener {
 public:
  /// Owns nothing.
  listener() noexcept = default;
  /// Owns `fd`, a socket listening on `local`; `reuse_port` says SO_REUSEPORT was asked for.
  listener(unique_fd fd, const endpoint& local, bool reuse_port) noexcept
      : fd_(std::move(fd)), local_(local), reuse_port_(reuse_port) {}

  /// Adopts a descriptor (from systemd, a parent process, a test): reads its local endpoint and
  /// its SO_REUSEPORT setting. It is not verified here; call verify(). EAFNOSUPPORT for a socket
  /// that is not IPv4/IPv6; the descriptor is then closed.
  [[nodiscard]] static listener adopt(unique_fd fd, std::error_code& ec);

  /// The descriptor, still owned by this listener (-1 if none). For epoll, accept4, setsockopt.
  [[nodiscard]] int native_handle() const noexcept { return fd_.get(); }
  /// The address and port the socket is bound to (the real port when port 0 was asked for).
  [[nodiscard]] const endpoint& local_endpoint() const noexcept { return local_; }
  /// True if SO_REUSEPORT was asked for (or, for an adopted socket, is set).
  [[nodiscard]] bool reuse_port() const noexcept { return reuse_port_; }
  /// True if a descriptor is owned.
  [[nodiscard]] bool is_open() const noexcept { return static_cast<bool>(fd_); }
  /// True if a descriptor is owned.
  explicit operator bool() const noexcept { return is_open(); }

  /// shutdown(SHUT_RD): wakes a thread blocked in accept (which then fails with EINVAL) and
  /// stops the socket listening. close() would not wake it (docs/design.md, "Kernel facts":
  /// stopping a blocked accept), so drivers stop with this, then close. Const because it
  /// changes the kernel socket, not this object; safe to call from another thread.
  std::error_code shutdown_read() const noexcept;
  /// Gives up ownership; returns the descriptor and leaves this listener empty.
  [[nodiscard]] unique_fd release() noexcept;
  /// Closes the socket (if any).
  void close() noexcept { fd_.reset(); }

 private:
  unique_fd fd_;
  endpoint local_;
  bool reuse_port_ = false;
};

/// A process that holds a socket (found through /proc/PID/fd).
struct process_info {
  pid_t pid = 0;              ///< Process id.
  std::string command;        ///< /proc/PID/cmdline with spaces between arguments; "[comm]" if empty.
  bool command_known = true;  ///< False if the command line could not be read (command is then "?").
};

/// `text` fit for a line of human output: every control character and DEL is written as a C
/// escape (\n, \t, \x1b...) and a backslash as two, so that a command line read from another
/// process can neither break a line nor send escape sequences to a terminal. (JSON output
/// escapes for itself and carries the text as it is.)
[[nodiscard]] std::string printable(std::string_view text);

/// One LISTEN socket of the kernel's table.
struct listen_entry {
  endpoint address;                  ///< Local address and port.
  std::uint64_t inode = 0;           ///< Socket inode (matches fstat(fd).st_ino).
  std::uint32_t uid = 0;             ///< Owner's user id as the kernel records it.
  std::vector<process_info> owners;  ///< Processes holding a descriptor for it (may be several after fork).
  /// Processes whose descriptors could not be read (another user's, without privilege): the
  /// owner may be among them. Reported, never skipped silently.
  std::size_t unreadable_processes = 0;
  /// SO_COOKIE of the socket (a number the kernel never reuses, unlike an inode), or 0 when the
  /// table was read from /proc/net/tcp, which does not show it (netlink sock_diag unavailable).
  std::uint64_t cookie = 0;
  /// Connections waiting in its accept queue: completed by the kernel, not yet accepted.
  std::uint32_t queued = 0;
  /// The most its accept queue holds (the listen() backlog, capped by net.core.somaxconn), as
  /// `ss -ltn` shows it in Send-Q; `queued` may exceed it by one. Unknown (empty) when the table was
  /// read from /proc/net/tcp, which does not show it. Not 0 for unknown: listen(fd, 0) gives a limit of 0.
  std::optional<std::uint32_t> queue_limit;
  /// True when no owner was found and some processes could not be read.
  [[nodiscard]] bool owners_unknown() const noexcept { return owners.empty() && unreadable_processes > 0; }
};

/// True if two listening addresses compete for the same connections: same port and same
/// address (a v4-mapped IPv6 address counts as its IPv4 address), or a wildcard and any
/// address of the same family. IPv4 and a real IPv6 address never overlap (0.0.0.0:22 and
/// [::]:22 with IPV6_V6ONLY are the usual pair, not a duplicate).
[[nodiscard]] bool addresses_overlap(const endpoint& a, const endpoint& b) noexcept;

/// What verify() found, check by check.
struct verify_report {
  bool stream = false;               ///< SO_TYPE is SOCK_STREAM.
  bool accepting = false;            ///< SO_ACCEPTCONN is 1 (the socket listens).
  bool address_matches = false;      ///< getsockname() equals the expected endpoint.
  bool kernel_listener = false;      ///< We are the kernel's LISTEN socket for the address (see cookie_matched).
  bool unique = false;               ///< No other LISTEN row overlaps the address (or SO_REUSEPORT was asked for).
  endpoint actual;                   ///< What getsockname() returned.
  std::uint64_t inode = 0;           ///< fstat(fd).st_ino.
  std::uint64_t cookie = 0;          ///< SO_COOKIE (0 if unavailable): a socket id that is never reused.
  std::vector<listen_entry> others;  ///< Other LISTEN sockets on an overlapping address, with owners.
  std::error_code error;             ///< The first failed check: error::not_stream, not_listening, address_mismatch,
                                     ///< not_kernel_listener, duplicate_listener, or a system error.
  std::string message;               ///< One line: what failed, naming the other owner when found. Empty if ok.
  /// True when kernel_listener was decided by SO_COOKIE as well as the inode (the table came from
  /// netlink sock_diag, which shows cookies); false when only the inode was compared
  /// (/proc/net/tcp fallback, or SO_COOKIE unavailable).
  bool cookie_matched = false;

  /// True if every check passed.
  explicit operator bool() const noexcept { return !error; }
  /// Throws std::system_error(error, message) if a check failed.
  void throw_if_failed() const;
};

/// Verifies `l`: SO_TYPE stream, SO_ACCEPTCONN 1, getsockname equals l.local_endpoint(), it is
/// the kernel's LISTEN socket for that address (matched by cookie and inode in an inet_diag
/// netlink dump; by inode in /proc/net/tcp or tcp6 where netlink sock_diag is unavailable), and
/// no other LISTEN socket overlaps it unless l.reuse_port(). Findings go in the report; it never
/// throws except std::bad_alloc. Use report.throw_if_failed() for the throwing form.
[[nodiscard]] verify_report verify(const listener& l);

/// One port a hunt tried, and what happened.
struct port_attempt {
  std::uint16_t port = 0;  ///< The candidate.
  std::string_view stage;  ///< "bind", "listen" or "verify" (where it failed), or "ok".
  std::error_code error;   ///< Why it was passed over (empty for the port taken).
};

/// Everything listen() or listen_in_range() found, for the overloads that want more than a code.
struct listen_report {
  std::error_code error;       ///< Empty on success.
  std::string message;         ///< One line saying what failed and why (empty on success).
  verify_report verification;  ///< The last verification (empty if none ran).
  /// Port hunt only: every candidate in the order tried; the last one is the port taken on success.
  std::vector<port_attempt> attempts;
  /// listen() failing with EADDRINUSE: the LISTEN sockets on an overlapping address and the
  /// processes holding them (who_listens); `message` names them, or says that the holder
  /// cannot be seen (another network namespace or user, or a socket bound but not listening).
  std::vector<listen_entry> holders;
  std::size_t bind_collisions = 0;    ///< Hunt: candidates refused at bind (EADDRINUSE).
  std::size_t listen_collisions = 0;  ///< Hunt: candidates bound but refused at listen (EADDRINUSE).
  std::size_t verify_collisions = 0;  ///< Hunt: candidates listening but shared (duplicate found).
  /// Hunt: a warning that the range overlaps ip_local_port_range (outgoing connections' ports,
  /// whose TIME_WAIT entries block even a SO_REUSEADDR bind). Empty otherwise.
  std::string warning;
  std::chrono::nanoseconds elapsed{};  ///< Time the call took.
};

/// Opens a listener on `where` (port 0: the kernel picks one). With options.verify the result
/// is verified; a failure is error::not_listening, error::duplicate_listener, ... with a message
/// naming the other owner. System errors (EADDRINUSE, EACCES, EADDRNOTAVAIL) keep their errno;
/// on EADDRINUSE the message names the holder: "listen on 127.0.0.1:8080: bind: Address already
/// in use; held by pid 4242 (nginx: master process)". The throwing overload's what() is that
/// message (the reason said once).
[[nodiscard]] listener listen(const endpoint& where, const listen_options& options = {});
/// As above; on failure sets `ec` and returns an empty listener.
[[nodiscard]] listener listen(const endpoint& where, const listen_options& options, std::error_code& ec);
/// As above; on failure fills `report` (error and message) and returns an empty listener.
[[nodiscard]] listener listen(const endpoint& where, const listen_options& options, listen_report& report);

/// Hunts for a free port in [first_port, last_port] on `address` (its port is ignored). Safe
/// when many processes hunt at once: a fresh socket per candidate; EADDRINUSE at bind *or*
/// listen, or a duplicate found by verification, means "next candidate"; the start is random
/// so hunters spread out. Any other error ends the hunt at that port: EACCES (a privileged
/// port without CAP_NET_BIND_SERVICE, whose message says so) would come from every port alike.
/// Refuses options.reuse_port (error::reuse_port_refused): it would let two hunters share a
/// port. Errors: error::invalid_port_range (empty range, port 0), error::port_range_exhausted
/// (every port taken; the message lists them), system errors.
[[nodiscard]] listener listen_in_range(const endpoint& address, std::uint16_t first_port, std::uint16_t last_port,
                                       const listen_options& options = {});
/// As above; on failure sets `ec` and returns an empty listener.
[[nodiscard]] listener listen_in_range(const endpoint& address, std::uint16_t first_port, std::uint16_t last_port,
                                       const listen_options& options, std::error_code& ec);
/// As above, filling `report`: ports tried, collisions, the ephemeral-range warning, time.
[[nodiscard]] listener listen_in_range(const endpoint& address, std::uint16_t first_port, std::uint16_t last_port,
                                       const listen_options& options, listen_report& report);

/// Every LISTEN socket on `port` in this network namespace, with the processes that hold it.
[[nodiscard]] std::vector<listen_entry> who_listens(std::uint16_t port);
/// As above; on failure (neither netlink sock_diag nor /proc/net/tcp readable) sets `ec` and
/// returns nothing.
[[nodiscard]] std::vector<listen_entry> who_listens(std::uint16_t port, std::error_code& ec);

/// Every LISTEN socket on `port` in this network namespace, as who_listens() but without their
/// owners (`owners` empty): it reads only the kernel's table, not every process's descriptors,
/// so it is cheap enough to poll, e.g. for an accept queue (listen_entry::queued).
[[nodiscard]] std::vector<listen_entry> listen_sockets(std::uint16_t port);
/// As above; on failure (neither netlink sock_diag nor /proc/net/tcp readable) sets `ec` and
/// returns nothing.
[[nodiscard]] std::vector<listen_entry> listen_sockets(std::uint16_t port, std::error_code& ec);

/// How listeners_from_systemd treats the environment.
struct systemd_options {
  /// Unset LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES afterwards (as sd_listen_fds(1)), so that
  /// child processes do not look for sockets they do not have. Not thread-safe (unsetenv).
  bool unset_environment = false;
  /// Verify each socket (see verify()).
  bool verify = true;
};

/// A listener taken from elsewhere, with the name it was passed under: from systemd
/// (listeners_from_systemd: LISTEN_FDNAMES, "unknown" when unnamed) or from another process
/// (take_over_listeners, sockets/handover.hpp).
struct named_listener {
  std::string name;  ///< FileDescriptorName= of the socket unit (or FDNAME= of the store), or the handover's name.
  listener socket;   ///< The listener (CLOEXEC set, non-blocking).
};

/// Takes the sockets systemd passed (descriptors 3 .. 3+LISTEN_FDS-1) if LISTEN_PID is this
/// process; sets CLOEXEC and O_NONBLOCK on each and verifies each. Errors:
/// error::no_systemd_sockets (variables absent, LISTEN_PID another process, LISTEN_FDS 0),
/// EINVAL (malformed variables, name count differs from LISTEN_FDS), EAFNOSUPPORT (a socket that
/// is not TCP over IPv4/IPv6), the verification error of a socket that fails it.
[[nodiscard]] std::vector<named_listener> listeners_from_systemd(const systemd_options& options = {});
/// As above; on failure sets `ec` and returns nothing (the descriptors taken are closed).
[[nodiscard]] std::vector<named_listener> listeners_from_systemd(const systemd_options& options, std::error_code& ec);
/// As above; on failure fills `report` with the error and a message.
[[nodiscard]] std::vector<named_listener> listeners_from_systemd(const systemd_options& options, listen_report& report);

/// Moves the listener named `name` out of `listeners` (the first with that name); an empty
/// listener if there is none.
[[nodiscard]] listener take_listener(std::vector<named_listener>& listeners, std::string_view name) noexcept;

}  // namespace transient
