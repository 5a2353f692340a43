// error_category: transient's own error codes and their messages.
#include "transient/errors/errors.hpp"

#include <array>
#include <string>

namespace transient {
namespace {

struct error_text {
  std::string_view name;
  std::string_view message;
};

constexpr std::array<error_text, 18> error_texts{{
    {"unknown", "unknown transient error"},
    {"stalled", "descriptors stayed exhausted and nothing made progress (stall watchdog)"},
    {"not_listening", "socket is not listening (SO_ACCEPTCONN = 0)"},
    {"not_stream", "socket is not a stream socket"},
    {"address_mismatch", "socket is bound to another address than the one asked for"},
    {"not_kernel_listener", "socket is not the kernel's listener for its address"},
    {"duplicate_listener", "another socket listens on the same address and port"},
    {"port_range_exhausted", "every port in the range is in use"},
    {"invalid_endpoint", "invalid endpoint"},
    {"invalid_port_range", "invalid port range"},
    {"reuse_port_refused", "SO_REUSEPORT refused: it would let another process share the port"},
    {"no_systemd_sockets", "no sockets were passed by systemd (LISTEN_FDS/LISTEN_PID)"},
    {"unexpected_event", "the accept policy got an event its state does not expect (a bug in the driver)"},
    {"handover_incomplete", "the listener handover ended before all of it arrived (the peer closed or died)"},
    {"handover_malformed", "the listener handover's message is malformed"},
    {"handover_mismatch", "the listeners handed over are not the ones expected (names or socket identity differ)"},
    {"handover_timeout", "the listener handover (or the receiver's ready report) did not come in time"},
    {"no_supervisor", "NOTIFY_SOCKET is not set: no supervisor to send to"},
}};

const error_text& text_of(int value) noexcept {
  const bool known = value >= 1 && static_cast<std::size_t>(value) < error_texts.size();
  return error_texts[known ? static_cast<std::size_t>(value) : 0];
}

class error_category_impl final : public std::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "transient.error"; }
  [[nodiscard]] std::string message(int value) const override { return std::string(text_of(value).message); }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const error_category_impl instance;
  return instance;
}

std::error_code make_error_code(error e) noexcept { return {static_cast<int>(e), error_category()}; }

std::string_view to_string(error e) noexcept { return text_of(static_cast<int>(e)).name; }

}  // namespace transient
