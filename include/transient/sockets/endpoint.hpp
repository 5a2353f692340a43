// transient/sockets/endpoint.hpp: an IPv4 or IPv6 address and a TCP port, parsed and printed.
// Included by listener.hpp; include it alone to parse or print an address. Which addresses
// conflict: docs/design.md, "Kernel facts".
//
// Accepted text (no DNS is ever consulted):
//   127.0.0.1:8080   IPv4 address and port
//   [::1]:8080       IPv6 address in brackets and port ([::ffff:127.0.0.1]:80 is the v4-mapped form)
//   0.0.0.0:0        the IPv4 wildcard; port 0 asks the kernel for an ephemeral port
//   [::]:443         the IPv6 wildcard
//   localhost:8080   the IPv4 loopback 127.0.0.1 (by definition, not by lookup)
//   :8080            all IPv4 interfaces, the same as 0.0.0.0:8080. This follows Go's and nginx's
//                    reading of a missing host ("listen on every interface"); we choose IPv4 only
//                    because listen_options::v6_only defaults to true, so [::]:8080 says dual
//                    stack explicitly when that is wanted.
// Printing is canonical: "127.0.0.1:8080", "[::1]:8080" (inet_ntop's shortest IPv6 form).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace transient {

/// An IPv4 or IPv6 address with a TCP port. A value type; the default is 0.0.0.0:0.
class endpoint {
 public:
  /// 0.0.0.0:0.
  endpoint() noexcept = default;

  /// An IPv4 endpoint from the address bytes in network order (127.0.0.1 is {127, 0, 0, 1}).
  [[nodiscard]] static endpoint v4(const std::array<std::uint8_t, 4>& address, std::uint16_t port) noexcept;
  /// An IPv6 endpoint from the address bytes in network order, with an optional scope id.
  [[nodiscard]] static endpoint v6(const std::array<std::uint8_t, 16>& address, std::uint16_t port,
                                   std::uint32_t scope_id = 0) noexcept;
  /// 127.0.0.1:port.
  [[nodiscard]] static endpoint loopback_v4(std::uint16_t port) noexcept;
  /// [::1]:port.
  [[nodiscard]] static endpoint loopback_v6(std::uint16_t port) noexcept;
  /// 0.0.0.0:port.
  [[nodiscard]] static endpoint any_v4(std::uint16_t port) noexcept;
  /// [::]:port.
  [[nodiscard]] static endpoint any_v6(std::uint16_t port) noexcept;

  /// The endpoint stored in a sockaddr_in or sockaddr_in6; EAFNOSUPPORT for another family,
  /// EINVAL if `length` is too short for the family.
  [[nodiscard]] static endpoint from_sockaddr(const sockaddr* address, socklen_t length, std::error_code& ec) noexcept;

  /// True for an IPv4 endpoint.
  [[nodiscard]] bool is_v4() const noexcept { return family_ == AF_INET; }
  /// True for an IPv6 endpoint (including v4-mapped addresses such as ::ffff:127.0.0.1).
  [[nodiscard]] bool is_v6() const noexcept { return family_ == AF_INET6; }
  /// AF_INET or AF_INET6.
  [[nodiscard]] int family() const noexcept { return family_; }
  /// The port in host order.
  [[nodiscard]] std::uint16_t port() const noexcept { return port_; }
  /// A copy with another port.
  [[nodiscard]] endpoint with_port(std::uint16_t port) const noexcept;
  /// The IPv6 scope id (0 for IPv4 and for global addresses).
  [[nodiscard]] std::uint32_t scope_id() const noexcept { return scope_id_; }
  /// The address bytes in network order: 4 meaningful bytes for IPv4, 16 for IPv6.
  [[nodiscard]] const std::array<std::uint8_t, 16>& bytes() const noexcept { return bytes_; }

  /// 0.0.0.0 or ::.
  [[nodiscard]] bool is_unspecified() const noexcept;
  /// 127.0.0.0/8 or ::1 (or a v4-mapped 127.x address).
  [[nodiscard]] bool is_loopback() const noexcept;
  /// An IPv6 address of the form ::ffff:a.b.c.d.
  [[nodiscard]] bool is_v4_mapped() const noexcept;
  /// For a v4-mapped IPv6 endpoint, the IPv4 endpoint it stands for; otherwise a copy.
  /// The kernel treats [::ffff:127.0.0.1]:P and 127.0.0.1:P as one address (docs/design.md).
  [[nodiscard]] endpoint unmapped() const noexcept;

  /// The address alone, canonical: "127.0.0.1", "::1" (no brackets).
  [[nodiscard]] std::string address_string() const;
  /// The canonical text: "127.0.0.1:8080" or "[::1]:8080" (parse_endpoint reads it back).
  [[nodiscard]] std::string to_string() const;

  /// Fills `storage` with a sockaddr_in or sockaddr_in6; returns its length.
  socklen_t to_sockaddr(sockaddr_storage& storage) const noexcept;

  /// Same family, address, scope and port.
  friend bool operator==(const endpoint&, const endpoint&) noexcept = default;

 private:
  int family_ = AF_INET;
  std::uint16_t port_ = 0;
  std::uint32_t scope_id_ = 0;
  std::array<std::uint8_t, 16> bytes_{};
};

/// The outcome of try_parse_endpoint: an endpoint, or the precise problem with the text.
struct endpoint_parse_result {
  /// The endpoint, when the text was valid.
  std::optional<endpoint> value;
  /// Empty on success; otherwise what is wrong, e.g. "port 70000 is out of range (0-65535)".
  std::string problem;
  /// True on success.
  explicit operator bool() const noexcept { return value.has_value(); }
};

/// Parses `text` (see the top of this header for the accepted forms) and says what is wrong
/// with it if it is not valid. Never throws except std::bad_alloc.
[[nodiscard]] endpoint_parse_result try_parse_endpoint(std::string_view text);

/// Parses `text`; on bad input sets `ec` to error::invalid_endpoint and returns 0.0.0.0:0.
/// The overload below (or try_parse_endpoint) also keeps the reason.
[[nodiscard]] endpoint parse_endpoint(std::string_view text, std::error_code& ec) noexcept;

/// As above, and on bad input sets `problem` to the message the throwing overload's what()
/// gives, e.g. "invalid endpoint '127.0.0.1:99999': port 99999 is out of range (0-65535)";
/// clears it on success. Out of memory: `ec` is ENOMEM and `problem` empty.
[[nodiscard]] endpoint parse_endpoint(std::string_view text, std::error_code& ec, std::string& problem) noexcept;

/// Parses `text`; on bad input throws std::system_error(error::invalid_endpoint) whose what()
/// quotes the text and names the problem once: "invalid endpoint '127.0.0.1:99999': port 99999
/// is out of range (0-65535)".
[[nodiscard]] endpoint parse_endpoint(std::string_view text);

}  // namespace transient
