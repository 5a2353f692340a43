// Which processes hold a socket: a scan of /proc/PID/fd for "socket:[INODE]" links.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "transient/sockets/listener.hpp"

namespace transient::detail {

/// The result of one scan of /proc.
struct socket_owners {
  std::map<std::uint64_t, std::vector<process_info>> by_inode;  ///< Owners of each inode asked for.
  std::size_t unreadable_processes = 0;                         ///< Processes whose fd directory could not be read.
};

/// Scans every /proc/PID/fd once for the given socket inodes.
[[nodiscard]] socket_owners find_socket_owners(const std::vector<std::uint64_t>& inodes);

/// Fills entry.owners and entry.unreadable_processes for each entry from one scan.
void attach_owners(std::vector<listen_entry>& entries);

/// "pid 123 (python3 -m http.server)", several joined by ", ", or "owner unknown (N processes
/// could not be read)", or "no process found".
[[nodiscard]] std::string describe_owners(const listen_entry& entry);

}  // namespace transient::detail
