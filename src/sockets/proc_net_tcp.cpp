// Parser for /proc/net/tcp and /proc/net/tcp6 rows (see proc_net_tcp.hpp for the format).
#include "sockets/proc_net_tcp.hpp"

#include <array>
#include <cstring>
#include <limits>

namespace transient::detail {
namespace {

// Splits on spaces and tabs; at most `Max` tokens are kept (the rest of a row is not needed).
template <std::size_t Max>
std::size_t split_fields(std::string_view line, std::array<std::string_view, Max>& fields) {
  std::size_t count = 0;
  std::size_t i = 0;
  while (i < line.size() && count < Max) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) {
      ++i;
    }
    const std::size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') {
      ++i;
    }
    if (i > start) {
      fields[count++] = line.substr(start, i - start);
    }
  }
  return count;
}

int hex_digit(char c) noexcept {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  return -1;
}

// Exactly `digits` hex digits (at most 8) into a 32-bit value.
std::optional<std::uint32_t> parse_hex(std::string_view text, std::size_t digits) {
  if (text.size() != digits || digits > 8) {
    return std::nullopt;
  }
  std::uint32_t value = 0;
  for (const char c : text) {
    const int d = hex_digit(c);
    if (d < 0) {
      return std::nullopt;
    }
    value = (value << 4) | static_cast<std::uint32_t>(d);
  }
  return value;
}

std::optional<std::uint64_t> parse_decimal(std::string_view text, std::uint64_t max) {
  if (text.empty() || text.size() > 20) {
    return std::nullopt;
  }
  std::uint64_t value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (value > (max - digit) / 10) {
      return std::nullopt;
    }
    value = value * 10 + digit;
  }
  return value;
}

// "0100007F:1F90" or the 32-digit IPv6 form. Each 8-digit word is the in-memory value of a
// 32-bit piece of the address, so copying the native integer gives network-order bytes.
std::optional<endpoint> parse_address(std::string_view text) {
  const auto colon = text.find(':');
  if (colon == std::string_view::npos) {
    return std::nullopt;
  }
  const std::string_view address = text.substr(0, colon);
  const auto port = parse_hex(text.substr(colon + 1), 4);
  if (!port || (address.size() != 8 && address.size() != 32)) {
    return std::nullopt;
  }
  std::array<std::uint8_t, 16> bytes{};
  for (std::size_t word = 0; word < address.size() / 8; ++word) {
    const auto value = parse_hex(address.substr(word * 8, 8), 8);
    if (!value) {
      return std::nullopt;
    }
    std::memcpy(bytes.data() + word * 4, &*value, 4);
  }
  const auto port16 = static_cast<std::uint16_t>(*port);
  if (address.size() == 8) {
    return endpoint::v4({bytes[0], bytes[1], bytes[2], bytes[3]}, port16);
  }
  return endpoint::v6(bytes, port16);
}

std::optional<tcp_row> fail(std::string* problem, const char* what) {
  if (problem != nullptr) {
    *problem = what;
  }
  return std::nullopt;
}

}  // namespace

std::optional<tcp_row> parse_tcp_row(std::string_view line, std::string* problem) {
  if (problem != nullptr) {
    problem->clear();
  }
  std::array<std::string_view, 10> fields{};
  const std::size_t count = split_fields(line, fields);
  if (count > 0 && fields[0] == "sl") {
    return std::nullopt;  // the header line: not a row, not a problem
  }
  if (count < fields.size()) {
    return fail(problem, "too few fields (expected at least 10)");
  }
  const std::string_view slot = fields[0];
  if (slot.size() < 2 || slot.back() != ':' || !parse_decimal(slot.substr(0, slot.size() - 1), 1u << 31)) {
    return fail(problem, "the first field is not a slot number followed by ':'");
  }
  tcp_row row;
  const auto local = parse_address(fields[1]);
  if (!local) {
    return fail(problem, "malformed local address (expected 8 or 32 hex digits, ':', 4 hex digits)");
  }
  const auto remote = parse_address(fields[2]);
  if (!remote) {
    return fail(problem, "malformed remote address (expected 8 or 32 hex digits, ':', 4 hex digits)");
  }
  if (local->family() != remote->family()) {
    return fail(problem, "local and remote addresses are of different families");
  }
  const auto state = parse_hex(fields[3], 2);
  if (!state) {
    return fail(problem, "malformed state (expected 2 hex digits)");
  }
  const std::string_view queues = fields[4];  // "tx_queue:rx_queue", 8 hex digits each
  const auto rx_queue = queues.size() == 17 && queues[8] == ':' ? parse_hex(queues.substr(9), 8) : std::nullopt;
  if (!rx_queue) {
    return fail(problem, "malformed queues (expected 8 hex digits, ':', 8 hex digits)");
  }
  const auto uid = parse_decimal(fields[7], std::numeric_limits<std::uint32_t>::max());
  if (!uid) {
    return fail(problem, "malformed uid");
  }
  const auto inode = parse_decimal(fields[9], std::numeric_limits<std::uint64_t>::max());
  if (!inode) {
    return fail(problem, "malformed inode");
  }
  row.local = *local;
  row.remote = *remote;
  row.state = static_cast<int>(*state);
  row.uid = static_cast<std::uint32_t>(*uid);
  row.inode = *inode;
  row.rx_queue = *rx_queue;
  return row;
}

std::vector<tcp_row> parse_tcp_table(std::string_view text, std::size_t* malformed) {
  std::vector<tcp_row> rows;
  std::size_t bad = 0;
  std::string problem;
  while (!text.empty()) {
    const auto end = text.find('\n');
    const std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) {
      continue;
    }
    if (auto row = parse_tcp_row(line, &problem)) {
      rows.push_back(*row);
    } else if (!problem.empty()) {
      ++bad;
    }
  }
  if (malformed != nullptr) {
    *malformed = bad;
  }
  return rows;
}

}  // namespace transient::detail
