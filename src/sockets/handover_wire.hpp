// The listener handover's messages (sockets/handover.hpp), as bytes. Both ends run on one host,
// so integers travel in the host's byte order; the magic number tells a stranger's bytes (or
// another byte order) apart from a handover.
//
//   header:  magic u32 "TRHO", version u16, listener count u16, payload length u32
//   payload: per listener: name length u8, name, SO_COOKIE u64, address length u8, address text
//   descriptors: one SCM_RIGHTS control message on the header's first byte, in payload order
//   ready:   magic u32 "TRRY", the receiver's pid u32
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace transient::detail {

inline constexpr std::uint32_t handover_magic = 0x4f485254;  // "TRHO" read as a little-endian u32
inline constexpr std::uint16_t handover_version = 1;
inline constexpr std::size_t handover_header_size = 12;
/// SCM_MAX_FD: the most descriptors the kernel carries in one message.
inline constexpr std::size_t handover_max_listeners = 253;
/// Enough for 253 entries of the longest name and address.
inline constexpr std::size_t handover_max_payload = 1U << 17U;
inline constexpr std::uint32_t ready_magic = 0x59525254;  // "TRRY"
inline constexpr std::size_t ready_size = 8;

/// The header's variable fields.
struct handover_header {
  std::uint16_t count = 0;           ///< Listeners (and descriptors) that follow.
  std::uint32_t payload_length = 0;  ///< Bytes after the header.
};

/// One listener as the payload describes it.
struct handover_entry {
  std::string name;          ///< What the receiver asks for it by.
  std::uint64_t cookie = 0;  ///< SO_COOKIE of the socket the sender holds.
  std::string address;       ///< Its local endpoint, as endpoint::to_string() prints it.
};

/// True for a name a handover and systemd's store carry: 1 to 255 bytes, no NUL, no '\n'.
[[nodiscard]] bool valid_listener_name(std::string_view name) noexcept;

/// The whole message (header and payload) for `entries`.
[[nodiscard]] std::string encode_handover(const std::vector<handover_entry>& entries);
/// The header in `bytes` (handover_header_size of them), or nothing if it is not one.
[[nodiscard]] std::optional<handover_header> decode_handover_header(std::string_view bytes) noexcept;
/// The `count` entries in `payload`, or nothing if it does not hold exactly that many valid ones
/// with distinct names.
[[nodiscard]] std::optional<std::vector<handover_entry>> decode_handover_entries(std::string_view payload,
                                                                                 std::size_t count);

/// The ready report carrying `pid`.
[[nodiscard]] std::string encode_ready(std::uint32_t pid);
/// The pid in a ready report (ready_size bytes), or nothing if it is not one.
[[nodiscard]] std::optional<std::uint32_t> decode_ready(std::string_view bytes) noexcept;

}  // namespace transient::detail
