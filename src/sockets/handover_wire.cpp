// The handover's byte format (handover_wire.hpp).
#include "sockets/handover_wire.hpp"

#include <cstring>
#include <set>

namespace transient::detail {
namespace {

template <class T>
void put(std::string& out, T value) {
  char bytes[sizeof value];
  std::memcpy(bytes, &value, sizeof value);
  out.append(bytes, sizeof value);
}

void put_text(std::string& out, std::string_view text) {
  put(out, static_cast<std::uint8_t>(text.size()));
  out.append(text);
}

// Reads from the front of `in`, consuming what it reads; false when too few bytes remain.
template <class T>
bool take(std::string_view& in, T& value) noexcept {
  if (in.size() < sizeof value) {
    return false;
  }
  std::memcpy(&value, in.data(), sizeof value);
  in.remove_prefix(sizeof value);
  return true;
}

bool take_text(std::string_view& in, std::string& text) {
  std::uint8_t length = 0;
  if (!take(in, length) || in.size() < length) {
    return false;
  }
  text.assign(in.substr(0, length));
  in.remove_prefix(length);
  return true;
}

std::optional<handover_entry> take_entry(std::string_view& in) {
  handover_entry entry;
  if (!take_text(in, entry.name) || !valid_listener_name(entry.name) || !take(in, entry.cookie) ||
      !take_text(in, entry.address)) {
    return std::nullopt;
  }
  return entry;
}

}  // namespace

bool valid_listener_name(std::string_view name) noexcept {
  return !name.empty() && name.size() <= 255 && name.find_first_of(std::string_view("\0\n", 2)) == name.npos;
}

std::string encode_handover(const std::vector<handover_entry>& entries) {
  std::string payload;
  for (const auto& entry : entries) {
    put_text(payload, entry.name);
    put(payload, entry.cookie);
    put_text(payload, entry.address);
  }
  std::string message;
  put(message, handover_magic);
  put(message, handover_version);
  put(message, static_cast<std::uint16_t>(entries.size()));
  put(message, static_cast<std::uint32_t>(payload.size()));
  return message + payload;
}

std::optional<handover_header> decode_handover_header(std::string_view bytes) noexcept {
  std::uint32_t magic = 0;
  std::uint16_t version = 0;
  handover_header header;
  if (!take(bytes, magic) || !take(bytes, version) || !take(bytes, header.count) ||
      !take(bytes, header.payload_length) || magic != handover_magic || version != handover_version ||
      header.count == 0 || header.count > handover_max_listeners || header.payload_length > handover_max_payload) {
    return std::nullopt;
  }
  return header;
}

std::optional<std::vector<handover_entry>> decode_handover_entries(std::string_view payload, std::size_t count) {
  std::vector<handover_entry> entries;
  std::set<std::string> names;
  while (entries.size() < count) {
    auto entry = take_entry(payload);
    if (!entry || !names.insert(entry->name).second) {
      return std::nullopt;
    }
    entries.push_back(std::move(*entry));
  }
  if (!payload.empty()) {
    return std::nullopt;
  }
  return entries;
}

std::string encode_ready(std::uint32_t pid) {
  std::string message;
  put(message, ready_magic);
  put(message, pid);
  return message;
}

std::optional<std::uint32_t> decode_ready(std::string_view bytes) noexcept {
  std::uint32_t magic = 0;
  std::uint32_t pid = 0;
  if (!take(bytes, magic) || !take(bytes, pid) || magic != ready_magic || pid == 0) {
    return std::nullopt;
  }
  return pid;
}

}  // namespace transient::detail
