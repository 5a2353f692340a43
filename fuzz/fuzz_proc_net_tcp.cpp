// libFuzzer target: the /proc/net/tcp parser never crashes on any text, and every row it
// accepts has a consistent family and an address that prints and parses back.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "sockets/proc_net_tcp.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::size_t malformed = 0;
  const auto rows = transient::detail::parse_tcp_table(text, &malformed);
  for (const auto& row : rows) {
    if (row.local.family() != row.remote.family() || row.state < 0 || row.state > 0xFF) {
      std::abort();
    }
    const auto back = transient::try_parse_endpoint(row.local.to_string());
    if (!back || *back.value != row.local) {
      std::abort();
    }
  }
  std::string problem;
  const auto single = transient::detail::parse_tcp_row(text, &problem);
  if (single && !problem.empty()) {
    std::abort();
  }
  return 0;
}
