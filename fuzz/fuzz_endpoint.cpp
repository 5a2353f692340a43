// libFuzzer target: endpoint parsing never crashes, always explains a rejection, and what it
// accepts prints canonically and parses back to the same endpoint.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "transient/sockets/endpoint.hpp"
#include "transient/errors/errors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto result = transient::try_parse_endpoint(text);
  std::error_code ec;
  const auto parsed = transient::parse_endpoint(text, ec);
  if (!result) {
    if (result.problem.empty() || ec != transient::error::invalid_endpoint) {
      std::abort();  // a rejection must name its problem and agree with the error_code overload
    }
    return 0;
  }
  if (ec || parsed != *result.value) {
    std::abort();
  }
  const std::string canonical = result.value->to_string();
  const auto again = transient::try_parse_endpoint(canonical);
  if (!again || *again.value != *result.value || again.value->to_string() != canonical) {
    std::abort();  // canonical text must round-trip
  }
  sockaddr_storage storage{};
  const socklen_t length = result.value->to_sockaddr(storage);
  const auto back = transient::endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&storage), length, ec);
  if (ec || back != *result.value) {
    std::abort();
  }
  return 0;
}
