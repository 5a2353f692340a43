// One attempt at a listening socket: socket, options, bind, listen. Shared by listen() and
// the port hunt, which must start each candidate with a fresh socket (see open_socket.cpp).
#pragma once

#include <cstdint>
#include <string_view>
#include <system_error>

#include "transient/sockets/endpoint.hpp"
#include "transient/sockets/listener.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace transient::detail {

/// Opens a TCP socket (CLOEXEC, non-blocking) on `where` with `options` and makes it listen
/// with `backlog`. On failure returns an empty unique_fd (the socket is closed), sets `ec` and
/// names the failed step in `stage`: "socket", "setsockopt", "bind" or "listen".
[[nodiscard]] unique_fd open_listening_socket(const endpoint& where, const listen_options& options, int backlog,
                                              std::string_view& stage, std::error_code& ec) noexcept;

/// The local endpoint of a socket (getsockname).
[[nodiscard]] endpoint local_endpoint_of(int fd, std::error_code& ec) noexcept;

/// An int option of SOL_SOCKET (SO_TYPE, SO_ACCEPTCONN, ...); on failure sets `ec` and returns 0.
[[nodiscard]] int socket_int_option(int fd, int name, std::error_code& ec) noexcept;

/// The socket's cookie (SO_COOKIE: an identity the kernel never reuses); on failure sets `ec`
/// and returns 0.
[[nodiscard]] std::uint64_t socket_cookie(int fd, std::error_code& ec) noexcept;

/// The backlog to use: options.backlog, or the kernel's somaxconn when it is 0 or negative.
[[nodiscard]] int effective_backlog(const listen_options& options) noexcept;

}  // namespace transient::detail
