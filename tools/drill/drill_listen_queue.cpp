// listen_queue_length (drill_target.hpp): the accept queues a connection to the drill's
// address can land in, read from the kernel's LISTEN table.
#include <algorithm>
#include <system_error>

#include "drill_target.hpp"
#include "transient/sockets/listener.hpp"

namespace transient::tool {

namespace {

// True if the listener on `local` can take a connection to `to` (same port): it listens on that
// address, or on the wildcard of its family, or on [::], which also takes IPv4 unless it is
// IPV6_V6ONLY (the table does not say, so it counts). Another program's listener on the same
// port number at another address, [::1]:P beside 127.0.0.1:P, never does.
bool takes_connections_to(const endpoint& local, const endpoint& to) {
  const endpoint address = local.unmapped();
  const endpoint target = to.unmapped();
  if (address == target) {
    return true;
  }
  return address.is_unspecified() && (address.family() == target.family() || address.is_v6());
}

}  // namespace

// The LISTEN sockets' accept queues on `to`'s port (listen_sockets: a netlink sock_diag dump,
// else /proc/net/tcp): the dump walks only the listeners, so its cost does not grow with the
// TIME_WAIT sockets that a drill leaves by the thousand.
int listen_queue_length(const endpoint& to) {
  std::error_code ec;
  int total = -1;
  for (const listen_entry& entry : listen_sockets(to.port(), ec)) {
    if (takes_connections_to(entry.address, to)) {
      total = std::max(total, 0) + static_cast<int>(entry.queued);
    }
  }
  return total;
}

}  // namespace transient::tool
