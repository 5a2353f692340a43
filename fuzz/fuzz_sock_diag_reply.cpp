// libFuzzer target: the inet_diag reply parser never crashes or reads outside a datagram, on
// any bytes. The first 8 bytes of an input are the sequence number and port id it expects (so
// the fuzzer can reach the message handlers); the rest is the datagram. Checked: an error ends
// the dump, and no more rows come out than whole messages fit in the datagram.
#include <linux/inet_diag.h>
#include <linux/netlink.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "sockets/sock_diag_reply.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  transient::detail::diag_expect expect;
  if (size < 8) {
    return 0;
  }
  std::memcpy(&expect.sequence, data, 4);
  std::memcpy(&expect.port_id, data + 4, 4);
  const std::span<const std::byte> datagram(reinterpret_cast<const std::byte*>(data) + 8, size - 8);
  std::vector<transient::detail::diag_listener> rows;
  std::error_code ec;
  const auto progress = transient::detail::parse_diag_datagram(datagram, expect, rows, ec);
  if (ec && progress != transient::detail::diag_progress::done) {
    std::abort();
  }
  if (rows.size() > datagram.size() / (NLMSG_HDRLEN + sizeof(inet_diag_msg))) {
    std::abort();
  }
  for (const auto& row : rows) {
    if (!row.local.is_v4() && !row.local.is_v6()) {
      std::abort();
    }
  }
  return 0;
}
