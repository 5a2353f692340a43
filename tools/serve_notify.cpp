// sd_notify without libsystemd (see serve_notify.hpp).
#include "serve_notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "transient/unique_fd.hpp"

namespace transient::tool {

bool notify_supervisor(std::string_view state, std::error_code& ec) {
  ec.clear();
  const char* name = std::getenv("NOTIFY_SOCKET");
  if (name == nullptr || name[0] == '\0') {
    return false;
  }
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  const std::size_t length = std::strlen(name);
  if ((name[0] != '/' && name[0] != '@') || length >= sizeof address.sun_path) {
    ec = std::make_error_code(std::errc::invalid_argument);
    return true;
  }
  std::memcpy(address.sun_path, name, length);
  if (name[0] == '@') {
    address.sun_path[0] = '\0';  // an abstract socket
  }
  const unique_fd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) {
    ec.assign(errno, std::system_category());
    return true;
  }
  const auto address_length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + length);
  if (::sendto(fd.get(), state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&address),
               address_length) < 0) {
    ec.assign(errno, std::system_category());
  }
  return true;
}

}  // namespace transient::tool
