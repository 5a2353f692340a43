// notify_socket_address(): see notify_socket.hpp.
#include "detail/notify_socket.hpp"

#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace transient::detail {

std::optional<notify_address> notify_socket_address(std::error_code& ec) {
  ec.clear();
  const char* name = std::getenv("NOTIFY_SOCKET");
  if (name == nullptr || name[0] == '\0') {
    return std::nullopt;
  }
  notify_address result;
  const std::size_t length = std::strlen(name);
  if ((name[0] != '/' && name[0] != '@') || length >= sizeof result.address.sun_path) {
    ec = std::make_error_code(std::errc::invalid_argument);
    return std::nullopt;
  }
  result.address.sun_family = AF_UNIX;
  std::memcpy(result.address.sun_path, name, length);
  if (name[0] == '@') {
    result.address.sun_path[0] = '\0';  // an abstract socket
  }
  result.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + length);
  return result;
}

}  // namespace transient::detail
