// The checks behind verify(), on a bare descriptor so listen() can run them before a
// listener object exists.
#pragma once

#include "sockets/listen_table.hpp"
#include "transient/sockets/endpoint.hpp"
#include "transient/sockets/listener.hpp"

namespace transient::detail {

/// Verifies that `fd` is a stream socket listening on `expected` (port 0 in `expected` accepts
/// any port) that is the kernel's only LISTEN entry there, unless `reuse_port_allowed`. The
/// kernel's table is read from `source` (tests and the benchmark force one).
[[nodiscard]] verify_report verify_socket(int fd, const endpoint& expected, bool reuse_port_allowed,
                                          listen_source source = listen_source::automatic);

/// The last two checks, on a table already read: sets report.kernel_listener (matched by inode,
/// and by cookie when `table` came from sock_diag and report.cookie is known), report.unique,
/// report.others (with owners) and, if a check fails, report.error and report.message. Needs
/// report.actual, report.inode and report.cookie filled in. Separate so tests can give it tables.
void check_kernel_table(verify_report& report, const listen_table& table, bool reuse_port_allowed);

}  // namespace transient::detail
