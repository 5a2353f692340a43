// who_listens() with the source of the kernel's table as a parameter, so tests can compare the
// sock_diag and /proc/net/tcp paths.
#pragma once

#include <cstdint>
#include <system_error>
#include <vector>

#include "sockets/listen_table.hpp"
#include "transient/sockets/listener.hpp"

namespace transient::detail {

/// Every LISTEN socket on `port` read from `source`, without owners. On failure sets `ec`.
[[nodiscard]] std::vector<listen_entry> listen_sockets(std::uint16_t port, listen_source source, std::error_code& ec);
/// Every LISTEN socket on `port` read from `source`, with owners. On failure sets `ec`.
[[nodiscard]] std::vector<listen_entry> who_listens(std::uint16_t port, listen_source source, std::error_code& ec);

}  // namespace transient::detail
