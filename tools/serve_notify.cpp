// sd_notify without libsystemd (see serve_notify.hpp).
#include "serve_notify.hpp"

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace transient::tool {

supervisor_socket::supervisor_socket(std::error_code& ec) {
  ec.clear();
  const char* name = std::getenv("NOTIFY_SOCKET");
  if (name == nullptr || name[0] == '\0') {
    return;
  }
  const std::size_t length = std::strlen(name);
  if ((name[0] != '/' && name[0] != '@') || length >= sizeof address_.sun_path) {
    ec = std::make_error_code(std::errc::invalid_argument);
    return;
  }
  address_.sun_family = AF_UNIX;
  std::memcpy(address_.sun_path, name, length);
  if (name[0] == '@') {
    address_.sun_path[0] = '\0';  // an abstract socket
  }
  length_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + length);
  fd_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd_) {
    ec.assign(errno, std::system_category());
  }
}

void supervisor_socket::send(std::string_view state, std::error_code& ec) const {
  ec.clear();
  if (::sendto(fd_.get(), state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&address_),
               length_) < 0) {
    ec.assign(errno, std::system_category());
  }
}

bool notify_supervisor(std::string_view state, std::error_code& ec) {
  const supervisor_socket socket(ec);
  if (ec) {
    return true;
  }
  if (!socket) {
    return false;
  }
  socket.send(state, ec);
  return true;
}

}  // namespace transient::tool
