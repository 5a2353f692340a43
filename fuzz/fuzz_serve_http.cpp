// libFuzzer target: serve's request framing (tools/serve/serve_http.hpp) never crashes or reads
// outside its buffer, explains every refusal, and frames a stream the same however TCP cuts
// it: serve parses again after every read, so a prefix of the input must never say more than
// the whole (a complete prefix is the same request; a bad prefix stays bad).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "../tools/serve/serve_http.hpp"

namespace {

using transient::tool::parse_request;
using transient::tool::parse_status;
using transient::tool::parsed_request;

bool within(std::string_view part, std::string_view whole) {
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

void check(const parsed_request& r, std::string_view input) {
  if (r.status == parse_status::bad && r.problem.empty()) {
    std::abort();  // a refusal names its problem
  }
  if (r.status == parse_status::complete &&
      (r.length == 0 || r.length > input.size() || r.length > transient::tool::request_limit ||
       !within(r.method, input.substr(0, r.length)) || !within(r.target, input.substr(0, r.length)))) {
    std::abort();  // a request lies within the input and the limit
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const parsed_request whole = parse_request(input);
  check(whole, input);
  // Cut points: every byte of a short input, a sample of a long one.
  const std::size_t step = std::max<std::size_t>(1, size / 256);
  for (std::size_t cut = 0; cut < size; cut += step) {
    const std::string_view prefix = input.substr(0, cut);
    const parsed_request part = parse_request(prefix);
    check(part, prefix);
    if (part.status == parse_status::complete &&
        (whole.status != parse_status::complete || whole.length != part.length)) {
      std::abort();  // a request complete in a prefix is the same request in the whole
    }
    if (part.status == parse_status::bad && whole.status != parse_status::bad) {
      std::abort();  // more bytes never make a bad request good
    }
  }
  return 0;
}
