// transient/testing/syscalls.hpp: the system calls the drivers make, and those that open a
// listener, as a seam for tests. Include it in a test to inject what the kernel will not produce
// on demand (ENFILE, ENOBUFS, EPROTO or EPERM from accept; EADDRINUSE from listen() rather than
// bind(); a failing getsockopt): set these function pointers to fakes, and the code runs unchanged. Every member
// defaults to the real call. Captureless lambdas convert to these pointer types; keep a fake's
// state in a static or thread_local variable. Design: docs/design.md, "Layers".
#pragma once

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace transient {

/// The default of syscalls::uring_accept_result: the completion as the kernel posted it.
inline int uring_accept_result_as_posted(int result) noexcept { return result; }

/// The system calls of the drivers and of opening listeners. Copy it, replace what you need,
/// and point server_options::sys (or acceptor_options::sys) at it, or listen_options::sys for
/// listen() and listen_in_range(); the driver or the call copies the table when it starts, so
/// it need not outlive that. Each must behave like the call it replaces (return -1 and set
/// errno). Only code that replaces calls includes this header: the drivers' headers declare
/// the struct and do not define it.
struct syscalls {
  /// accept4(2) on a listener (the driver always passes SOCK_NONBLOCK | SOCK_CLOEXEC).
  int (*accept4)(int fd, sockaddr* address, socklen_t* length, int flags) = ::accept4;
  /// close(2) of accepted connections that are shed.
  int (*close)(int fd) = ::close;
  /// epoll_wait(2) of each loop.
  int (*epoll_wait)(int epfd, epoll_event* events, int max_events, int timeout_ms) = ::epoll_wait;
  /// epoll_ctl(2): arming and disarming listeners.
  int (*epoll_ctl)(int epfd, int op, int fd, epoll_event* event) = ::epoll_ctl;
  /// setsockopt(2): SO_LINGER {1, 0} before closing a connection shed with `reset`.
  int (*setsockopt)(int fd, int level, int name, const void* value, socklen_t length) = ::setsockopt;
  /// getsockopt(2): TCP_INFO of an accepted connection, for its wait in the accept queue
  /// (only with accept_policy_config::max_queue_wait set; a failure means "unknown", never a shed).
  int (*getsockopt)(int fd, int level, int name, void* value, socklen_t* length) = ::getsockopt;
  /// The io_uring driver's accept: each accept completion's result (a descriptor, or -errno)
  /// passes through this before the policy sees it. The kernel will not post ENFILE or EPERM
  /// on demand either; a fake returns any -errno (closing a descriptor it replaces) and the
  /// driver treats it as the kernel's: a failed completion ends the accept request, as if it
  /// came without IORING_CQE_F_MORE (the driver cancels the kernel's request behind it).
  int (*uring_accept_result)(int result) = uring_accept_result_as_posted;
  /// bind(2) of each socket listen() and listen_in_range() open.
  int (*bind)(int fd, const sockaddr* address, socklen_t length) = ::bind;
  /// listen(2) of each socket listen() and listen_in_range() open.
  int (*listen)(int fd, int backlog) = ::listen;
};

}  // namespace transient
