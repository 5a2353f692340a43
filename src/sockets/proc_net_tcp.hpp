// A parser for /proc/net/tcp and /proc/net/tcp6: pure functions over text, so they can be
// unit-tested with recorded lines and fuzzed. Reading the files is proc_file's job.
//
// A row looks like (tcp6 has 32 hex digits per address):
//    0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 12345 1 ...
// The kernel prints each 32-bit word of an address with %08X from its in-memory (network order)
// value, so on this machine the word's native byte order gives the address bytes back; the
// port is printed in host order.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "transient/sockets/endpoint.hpp"

namespace transient::detail {

/// The TCP state number of a LISTEN row (TCP_LISTEN, printed "0A").
inline constexpr int tcp_state_listen = 0x0A;

/// One parsed row of /proc/net/tcp or /proc/net/tcp6.
struct tcp_row {
  endpoint local;              ///< local_address
  endpoint remote;             ///< rem_address
  int state = 0;               ///< st (0x0A = LISTEN)
  std::uint32_t uid = 0;       ///< uid of the socket's owner
  std::uint64_t inode = 0;     ///< inode of the socket (0 for TIME_WAIT rows)
  std::uint32_t rx_queue = 0;  ///< rx_queue of tx_queue:rx_queue (a LISTEN row: the accept queue's length)
};

/// Parses one row. Returns nothing for the header line and for malformed lines; when `problem`
/// is given it receives what is wrong (empty for the header).
[[nodiscard]] std::optional<tcp_row> parse_tcp_row(std::string_view line, std::string* problem = nullptr);

/// The rows of a whole file's text. Malformed lines are counted in `malformed` (never
/// silently dropped: callers report the count).
[[nodiscard]] std::vector<tcp_row> parse_tcp_table(std::string_view text, std::size_t* malformed = nullptr);

}  // namespace transient::detail
