// endpoint: parsing and canonical printing of IPv4/IPv6 endpoints (no DNS).
#include "transient/sockets/endpoint.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "transient/detail/throw_error.hpp"
#include "transient/errors/errors.hpp"

namespace transient {
namespace {

constexpr std::array<std::uint8_t, 12> v4_mapped_prefix{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

// `text` as it appears in a message: quoted, non-printable bytes escaped, long inputs shortened,
// so that a hostile or binary input still gives a readable one-line message.
std::string quoted(std::string_view text) {
  constexpr std::size_t max_shown = 64;
  std::string out = "'";
  for (std::size_t i = 0; i < text.size() && i < max_shown; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c >= 0x7f || c == '\'' || c == '\\') {
      constexpr std::string_view hex = "0123456789abcdef";
      out += "\\x";
      out.push_back(hex[c >> 4U]);
      out.push_back(hex[c & 0xFU]);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (text.size() > max_shown) {
    out += "...";
  }
  out += "'";
  return out;
}

bool equals_ignoring_case(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           const auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; };
           return lower(x) == lower(y);
         });
}

// The port after the last ':' (decimal, 0-65535; at most 5 digits so that no overflow is possible).
std::optional<std::uint16_t> parse_port(std::string_view text, std::string& problem) {
  if (text.empty()) {
    problem = "missing port after ':'";
    return std::nullopt;
  }
  if (!std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    problem = "port " + quoted(text) + " is not a decimal number";
    return std::nullopt;
  }
  if (text.size() > 5) {
    problem = "port " + quoted(text) + " is out of range (0-65535)";
    return std::nullopt;
  }
  unsigned value = 0;
  for (const char c : text) {
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value > 65535) {
    problem = "port " + std::to_string(value) + " is out of range (0-65535)";
    return std::nullopt;
  }
  return static_cast<std::uint16_t>(value);
}

endpoint_parse_result failure(std::string problem) { return {std::nullopt, std::move(problem)}; }

endpoint_parse_result parse_bracketed(std::string_view text) {
  const auto close = text.find(']');
  if (close == std::string_view::npos) {
    return failure("unterminated bracket: '[' without ']'");
  }
  const std::string_view host = text.substr(1, close - 1);
  if (host.empty()) {
    return failure("empty IPv6 address between '[' and ']'");
  }
  if (host.find('%') != std::string_view::npos) {
    return failure("IPv6 zone ids ('%' in " + quoted(host) + ") are not supported");
  }
  const std::string_view rest = text.substr(close + 1);
  if (rest.empty()) {
    return failure("missing port after ']' (expected [ADDRESS]:PORT)");
  }
  if (rest[0] != ':') {
    return failure("expected ':' after ']', found " + quoted(rest.substr(0, 1)));
  }
  std::string problem;
  const auto port = parse_port(rest.substr(1), problem);
  if (!port) {
    return failure(std::move(problem));
  }
  std::array<std::uint8_t, 16> bytes{};
  const std::string host_z(host);  // inet_pton needs a terminated string; NULs were rejected before
  if (::inet_pton(AF_INET6, host_z.c_str(), bytes.data()) != 1) {
    return failure(quoted(host) + " is not an IPv6 address");
  }
  return {endpoint::v6(bytes, *port), {}};
}

endpoint_parse_result parse_unbracketed(std::string_view text) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos) {
    return failure("missing port (expected HOST:PORT, e.g. 127.0.0.1:8080)");
  }
  const std::string_view host = text.substr(0, colon);
  if (host.find(':') != std::string_view::npos) {
    return failure("an IPv6 address needs brackets, e.g. [::1]:8080");
  }
  if (host.find(']') != std::string_view::npos) {
    return failure("']' without '['");
  }
  std::string problem;
  const auto port = parse_port(text.substr(colon + 1), problem);
  if (!port) {
    return failure(std::move(problem));
  }
  if (host.empty()) {
    return {endpoint::any_v4(*port), {}};  // ":8080" means every IPv4 interface (see the header)
  }
  if (equals_ignoring_case(host, "localhost")) {
    return {endpoint::loopback_v4(*port), {}};  // by definition; no resolver is consulted
  }
  std::array<std::uint8_t, 4> bytes{};
  const std::string host_z(host);
  if (::inet_pton(AF_INET, host_z.c_str(), bytes.data()) != 1) {
    return failure(quoted(host) + " is not an IPv4 address (only 'localhost' is accepted as a name; no DNS)");
  }
  return {endpoint::v4(bytes, *port), {}};
}

}  // namespace

endpoint endpoint::v4(const std::array<std::uint8_t, 4>& address, std::uint16_t port) noexcept {
  endpoint e;
  e.family_ = AF_INET;
  e.port_ = port;
  std::copy(address.begin(), address.end(), e.bytes_.begin());
  return e;
}

endpoint endpoint::v6(const std::array<std::uint8_t, 16>& address, std::uint16_t port,
                      std::uint32_t scope_id) noexcept {
  endpoint e;
  e.family_ = AF_INET6;
  e.port_ = port;
  e.scope_id_ = scope_id;
  e.bytes_ = address;
  return e;
}

endpoint endpoint::loopback_v4(std::uint16_t port) noexcept { return v4({127, 0, 0, 1}, port); }

endpoint endpoint::loopback_v6(std::uint16_t port) noexcept {
  std::array<std::uint8_t, 16> bytes{};
  bytes[15] = 1;
  return v6(bytes, port);
}

endpoint endpoint::any_v4(std::uint16_t port) noexcept { return v4({0, 0, 0, 0}, port); }

endpoint endpoint::any_v6(std::uint16_t port) noexcept { return v6({}, port); }

endpoint endpoint::from_sockaddr(const sockaddr* address, socklen_t length, std::error_code& ec) noexcept {
  ec.clear();
  if (address == nullptr || length < static_cast<socklen_t>(sizeof(sa_family_t))) {
    ec = std::make_error_code(std::errc::invalid_argument);
    return {};
  }
  if (address->sa_family == AF_INET) {
    if (length < static_cast<socklen_t>(sizeof(sockaddr_in))) {
      ec = std::make_error_code(std::errc::invalid_argument);
      return {};
    }
    sockaddr_in in{};
    std::memcpy(&in, address, sizeof in);
    std::array<std::uint8_t, 4> bytes{};
    std::memcpy(bytes.data(), &in.sin_addr, 4);
    return v4(bytes, ntohs(in.sin_port));
  }
  if (address->sa_family == AF_INET6) {
    if (length < static_cast<socklen_t>(sizeof(sockaddr_in6))) {
      ec = std::make_error_code(std::errc::invalid_argument);
      return {};
    }
    sockaddr_in6 in6{};
    std::memcpy(&in6, address, sizeof in6);
    std::array<std::uint8_t, 16> bytes{};
    std::memcpy(bytes.data(), &in6.sin6_addr, 16);
    return v6(bytes, ntohs(in6.sin6_port), in6.sin6_scope_id);
  }
  ec = std::make_error_code(std::errc::address_family_not_supported);
  return {};
}

endpoint endpoint::with_port(std::uint16_t port) const noexcept {
  endpoint e = *this;
  e.port_ = port;
  return e;
}

bool endpoint::is_unspecified() const noexcept {
  const std::size_t size = is_v4() ? 4 : 16;
  return std::all_of(bytes_.begin(), bytes_.begin() + static_cast<std::ptrdiff_t>(size),
                     [](std::uint8_t b) { return b == 0; });
}

bool endpoint::is_loopback() const noexcept {
  if (is_v4()) {
    return bytes_[0] == 127;
  }
  if (is_v4_mapped()) {
    return bytes_[12] == 127;
  }
  return bytes_ == loopback_v6(0).bytes();
}

bool endpoint::is_v4_mapped() const noexcept {
  return is_v6() && std::equal(v4_mapped_prefix.begin(), v4_mapped_prefix.end(), bytes_.begin());
}

endpoint endpoint::unmapped() const noexcept {
  if (!is_v4_mapped()) {
    return *this;
  }
  return v4({bytes_[12], bytes_[13], bytes_[14], bytes_[15]}, port_);
}

std::string endpoint::address_string() const {
  char text[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(family_, bytes_.data(), text, sizeof text);
  return text;
}

std::string endpoint::to_string() const {
  // Appends rather than `"[" + address_string()`: g++ 12 at -O3 raises a false -Wrestrict
  // inside std::string for a literal prepended to a temporary string (GCC bug 105329).
  std::string text;
  if (!is_v4()) {
    text += '[';
  }
  text += address_string();
  text += is_v4() ? ":" : "]:";
  text += std::to_string(port_);
  return text;
}

socklen_t endpoint::to_sockaddr(sockaddr_storage& storage) const noexcept {
  storage = {};
  if (is_v4()) {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_port = htons(port_);
    std::memcpy(&in.sin_addr, bytes_.data(), 4);
    std::memcpy(&storage, &in, sizeof in);
    return sizeof in;
  }
  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(port_);
  in6.sin6_scope_id = scope_id_;
  std::memcpy(&in6.sin6_addr, bytes_.data(), 16);
  std::memcpy(&storage, &in6, sizeof in6);
  return sizeof in6;
}

endpoint_parse_result try_parse_endpoint(std::string_view text) {
  if (text.empty()) {
    return failure("empty endpoint (expected HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080)");
  }
  // Reject control bytes, spaces and non-ASCII up front: inet_pton would stop at a NUL and
  // accept "1.2.3.4\0junk" as 1.2.3.4, and a space is always a typo.
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) {
      return failure(quoted(text) + " contains a space or a non-printable character");
    }
  }
  return text[0] == '[' ? parse_bracketed(text) : parse_unbracketed(text);
}

endpoint parse_endpoint(std::string_view text, std::error_code& ec, std::string& problem) noexcept {
  ec.clear();
  try {
    problem.clear();
    auto result = try_parse_endpoint(text);
    if (result.value) {
      return *result.value;
    }
    ec = error::invalid_endpoint;
    problem = "invalid endpoint " + quoted(text) + ": " + result.problem;
  } catch (const std::bad_alloc&) {
    ec = std::make_error_code(std::errc::not_enough_memory);
    problem.clear();
  }
  return {};
}

endpoint parse_endpoint(std::string_view text, std::error_code& ec) noexcept {
  std::string ignored;
  return parse_endpoint(text, ec, ignored);
}

endpoint parse_endpoint(std::string_view text) {
  std::error_code ec;
  std::string problem;
  const endpoint result = parse_endpoint(text, ec, problem);
  if (ec == std::errc::not_enough_memory) {
    throw std::bad_alloc();
  }
  // "invalid endpoint" is also the code's message: said once (throw_error.hpp).
  detail::throw_said_once_if(ec, problem);
  return result;
}

}  // namespace transient
