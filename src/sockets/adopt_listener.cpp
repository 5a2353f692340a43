// adopt_listener(): see adopt_listener.hpp.
#include "sockets/adopt_listener.hpp"

#include <fcntl.h>

#include "transient/detail/throw_error.hpp"

namespace transient::detail {
namespace {

std::error_code make_cloexec_nonblocking(int fd) noexcept {
  const int fd_flags = ::fcntl(fd, F_GETFD);
  if (fd_flags < 0 || ::fcntl(fd, F_SETFD, fd_flags | FD_CLOEXEC) != 0) {
    return last_error();
  }
  const int status_flags = ::fcntl(fd, F_GETFL);
  if (status_flags < 0 || ::fcntl(fd, F_SETFL, status_flags | O_NONBLOCK) != 0) {
    return last_error();
  }
  return {};
}

adoption refused(std::error_code ec, std::string message) {
  adoption result;
  result.error = ec;
  result.message = std::move(message);
  return result;
}

}  // namespace

adoption adopt_listener(unique_fd fd, bool verify_it) {
  if (auto ec = make_cloexec_nonblocking(fd.get())) {
    return refused(ec, ": fcntl: " + ec.message());
  }
  std::error_code ec;
  adoption result;
  result.socket = listener::adopt(std::move(fd), ec);
  if (ec) {
    return refused(ec, " is not an IPv4/IPv6 socket: " + ec.message());
  }
  if (verify_it) {
    if (auto one = verify(result.socket); one.error) {
      adoption failed = refused(one.error, ": " + one.message);
      failed.verification = std::move(one);
      return failed;  // result.socket closes the descriptor
    }
  }
  return result;
}

}  // namespace transient::detail
