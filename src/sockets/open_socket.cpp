// One attempt at a listening socket.
//
// A failed attempt always closes its socket. docs/design.md (measured): two SO_REUSEADDR sockets can
// both bind one address while neither listens; the second listen() then fails with EADDRINUSE
// and leaves the socket bound, and re-binding it to another port fails with EINVAL. So a
// caller that wants another port must start again from a fresh socket, never retry this one.
#include "sockets/open_socket.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include "detail/proc_file.hpp"
#include "detail/seam.hpp"
#include "transient/detail/throw_error.hpp"
#include "transient/testing/syscalls.hpp"

namespace transient::detail {
namespace {

bool set_flag(int fd, int level, int name, bool on) noexcept {
  const int value = on ? 1 : 0;
  return ::setsockopt(fd, level, name, &value, sizeof value) == 0;
}

}  // namespace

int effective_backlog(const listen_options& options) noexcept {
  return options.backlog > 0 ? options.backlog : kernel_somaxconn();
}

unique_fd open_listening_socket(const endpoint& where, const listen_options& options, int backlog,
                                std::string_view& stage, std::error_code& ec) noexcept {
  ec.clear();
  const syscalls sys = seam_of(options.sys);
  stage = "socket";
  unique_fd fd(::socket(where.family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_TCP));
  if (!fd) {
    ec = last_error();
    return {};
  }
  stage = "setsockopt";
  if (!set_flag(fd.get(), SOL_SOCKET, SO_REUSEADDR, options.reuse_address) ||
      (options.reuse_port && !set_flag(fd.get(), SOL_SOCKET, SO_REUSEPORT, true)) ||
      (where.is_v6() && !set_flag(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, options.v6_only))) {
    ec = last_error();
    return {};
  }
  stage = "bind";
  sockaddr_storage address{};
  const socklen_t length = where.to_sockaddr(address);
  if (sys.bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), length) != 0) {
    ec = last_error();
    return {};
  }
  stage = "listen";
  if (sys.listen(fd.get(), backlog) != 0) {
    ec = last_error();
    return {};
  }
  return fd;
}

endpoint local_endpoint_of(int fd, std::error_code& ec) noexcept {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    ec = last_error();
    return {};
  }
  return endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&address), length, ec);
}

int socket_int_option(int fd, int name, std::error_code& ec) noexcept {
  int value = 0;
  socklen_t length = sizeof value;
  if (::getsockopt(fd, SOL_SOCKET, name, &value, &length) != 0) {
    ec = last_error();
    return 0;
  }
  return value;
}

std::uint64_t socket_cookie(int fd, std::error_code& ec) noexcept {
  std::uint64_t cookie = 0;
  socklen_t length = sizeof cookie;
  if (::getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &length) != 0) {
    ec = last_error();
    return 0;
  }
  return cookie;
}

}  // namespace transient::detail
