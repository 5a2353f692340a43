// transient/classify.hpp: what an error means for the operation that returned it.
//
// "Temporary" means nothing without context: EINVAL from accept() on a socket we shut
// down is a clean stop, from a socket that never listened a dead listener, from bind() a
// bug. classify() answers for one operation at a time, from a constexpr table that
// follows docs/errors.md. It never allocates and never throws.
#pragma once

#include <optional>
#include <string_view>
#include <system_error>

#include "transient/condition.hpp"

namespace transient {

/// The socket operation that returned an error.
enum class operation : unsigned char {
  accept,   ///< accept(2)/accept4(2) on a listener.
  connect,  ///< connect(2), including the SO_ERROR read after EINPROGRESS.
  read,     ///< read/recv/recvmsg on a connected socket.
  write,    ///< write/send/sendmsg on a connected socket.
  bind,     ///< socket(2) and bind(2) while setting up a listener.
  listen,   ///< listen(2).
};

/// Number of operations (the enum's values are 0..operation_count-1).
inline constexpr int operation_count = 6;

/// What the caller should do next.
enum class action : unsigned char {
  retry,     ///< Call again now.
  wait,      ///< Wait for readiness (or, for connect, writability), then call again.
  skip,      ///< accept only: that pending connection died; the listener is fine: accept the next now.
  close,     ///< The connection is finished (connect: this attempt failed; try the next address).
  back_off,  ///< A resource is exhausted: pause, then retry later.
  fail,      ///< Not retriable here: a bug, a configuration error, or a dead listener.
  done,      ///< connect only: EISCONN after EINPROGRESS means the socket is connected.
};

/// The answer of classify().
struct verdict {
  action what;              ///< The action to take.
  condition why;            ///< The condition that decided it.
  std::string_view advice;  ///< One line for a human; refers to static storage.

  friend bool operator==(const verdict&, const verdict&) = default;
};

/// What `ec` means for `op`. Success (a zero code) yields {retry, unclassified}: there is
/// nothing to classify, and callers should not pass it. Codes the table does not know
/// follow the operation's rule for "anything else" (accept: back_off, so that the stall
/// watchdog decides; every other operation: fail).
[[nodiscard]] verdict classify(operation op, std::error_code ec) noexcept;

/// The name of an operation ("accept", ...).
[[nodiscard]] std::string_view to_string(operation op) noexcept;

/// The name of an action ("back_off", ...).
[[nodiscard]] std::string_view to_string(action a) noexcept;

/// Parses an operation name, case-insensitively; std::nullopt if unknown. The system calls an
/// operation stands for are accepted as it: accept4 as accept, recv/recvfrom/recvmsg as read,
/// send/sendto/sendmsg as write.
[[nodiscard]] std::optional<operation> parse_operation(std::string_view name) noexcept;

}  // namespace transient
