// An accepted connection's wait in the accept queue, read through a getsockopt the caller names:
// the real call for queue_wait_of(), the drivers' syscall table for their queue_wait(). The one
// place that knows which TCP_INFO field holds the wait (listen_queue.cpp).
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <system_error>

namespace transient::detail {

/// The signature of getsockopt(2), as the syscall table holds it.
using getsockopt_call = int (*)(int fd, int level, int name, void* value, socklen_t* length);

/// queue_wait_of(fd, ec) through `call`: on failure sets `ec` and returns 0.
[[nodiscard]] std::chrono::milliseconds queue_wait_through(getsockopt_call call, int fd, std::error_code& ec) noexcept;

}  // namespace transient::detail
