// The throwing overloads of transient::loop (server.hpp).
#include "transient/drivers/server.hpp"

namespace transient {

void loop::watch(int fd, std::uint32_t events, io_watcher& watcher) {
  std::error_code ec;
  watch(fd, events, watcher, ec);
  if (ec) {
    throw std::system_error(ec, "transient::loop::watch");
  }
}

void loop::modify(int fd, std::uint32_t events) {
  std::error_code ec;
  modify(fd, events, ec);
  if (ec) {
    throw std::system_error(ec, "transient::loop::modify");
  }
}

}  // namespace transient
