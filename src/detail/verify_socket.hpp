// The checks behind verify(), on a bare descriptor so listen() can run them before a
// listener object exists.
#pragma once

#include "transient/endpoint.hpp"
#include "transient/listener.hpp"

namespace transient::detail {

/// Verifies that `fd` is a stream socket listening on `expected` (port 0 in `expected` accepts
/// any port) that is the kernel's only LISTEN entry there, unless `reuse_port_allowed`.
[[nodiscard]] verify_report verify_socket(int fd, const endpoint& expected, bool reuse_port_allowed);

}  // namespace transient::detail
