// condition_category: maps system, generic, Asio and transient error codes to conditions.
#include "transient/errors/errors.hpp"

#include <cerrno>
#include <cstring>

#include "errors/condition_bits.hpp"
#include "errors/errno_table.hpp"

namespace transient {
namespace detail {
namespace {

constexpr condition_set fd_bits = bit(condition::fd_exhausted) | bit(condition::resource_exhausted);
constexpr condition_set memory_bits = bit(condition::memory_exhausted) | bit(condition::resource_exhausted);

constexpr condition_set compute_errno_conditions(int value) noexcept {
  using enum condition;
  switch (value) {
    case 0: return 0;
    case EAGAIN: return bit(would_block);
    case EINTR: return bit(interrupted);
    case EINPROGRESS:
    case EALREADY: return bit(in_progress);
    case EISCONN: return bit(already_connected);
    case ETIMEDOUT: return bit(timed_out);
    case ECONNABORTED:
    case EPROTO:
    case ENOPROTOOPT: return bit(connection_failed);
    case ENETDOWN:
    case ENETUNREACH:
    case EHOSTDOWN:
    case EHOSTUNREACH:
    case ENONET: return bit(connection_failed) | bit(network_unreachable);
    case ECONNREFUSED: return bit(refused);
    case ECONNRESET:
    case EPIPE:
    case ESHUTDOWN: return bit(peer_gone);
    case ENOTCONN: return bit(not_connected);
    case EMFILE: return fd_bits | bit(process_fd_limit);
    case ENFILE: return fd_bits | bit(system_fd_limit);
    case ENOBUFS:
    case ENOMEM: return memory_bits;
    case EADDRINUSE: return bit(address_in_use);
    case EADDRNOTAVAIL: return bit(address_unavailable);
    case EPERM:
    case EACCES: return bit(permission_denied);
    case EINVAL: return bit(invalid_argument);
    case EOPNOTSUPP: return bit(not_supported);
    case EBADF:
    case ENOTSOCK:
    case EFAULT:
    case EAFNOSUPPORT: return bit(programming_error);
    default: return bit(unclassified);
  }
}

// Indexed by errno value, so the comparison on the hot path is one load.
constexpr auto errno_conditions = [] {
  std::array<condition_set, errno_max + 1> table{};
  for (int value = 0; value <= errno_max; ++value) {
    table[static_cast<std::size_t>(value)] = compute_errno_conditions(value);
  }
  return table;
}();

condition_set conditions_of_transient_error(int value) noexcept {
  using enum condition;
  switch (static_cast<error>(value)) {
    case error::stalled: return bit(stalled);
    case error::not_listening:
    case error::not_stream:
    case error::address_mismatch:
    case error::not_kernel_listener: return bit(not_listening);
    case error::duplicate_listener: return bit(duplicate_listener);
    case error::port_range_exhausted: return bit(address_in_use);
    case error::invalid_endpoint:
    case error::invalid_port_range:
    case error::reuse_port_refused: return bit(invalid_argument);
    case error::no_systemd_sockets: return bit(unclassified);
    case error::unexpected_event: return bit(programming_error);
    case error::handover_incomplete:
    case error::handover_malformed:
    case error::handover_mismatch:
    case error::handover_timeout:
    case error::no_supervisor: return bit(unclassified);
  }
  return bit(unclassified);
}

// Asio reports end of stream as asio::error::eof (value 2) in its "asio.misc" category, and
// Boost.Asio in its boost::asio::error::misc_category, also named "asio.misc"; their other
// codes use the system category and are handled as errno values.
condition_set conditions_of_foreign(const std::error_code& ec) noexcept {
  constexpr int asio_misc_eof = 2;
  if (std::strcmp(ec.category().name(), "asio.misc") == 0 && ec.value() == asio_misc_eof) {
    return bit(condition::peer_gone);
  }
  return bit(condition::unclassified);
}

}  // namespace

int errno_of_foreign(const std::error_code& ec) noexcept {
  // Standalone Asio (1.22) keeps its own "asio.system" category for errno values and does
  // not map it to the generic category; measured with libasio-dev on this machine. Boost
  // (1.74 and later) converts boost::system::error_code to std::error_code through wrapper
  // categories named after Boost's own, "system" and "generic", whose default conditions are
  // wrappers too (not std::generic_category()); on POSIX both carry errno values. Recognised
  // by name, so that the library does not depend on Boost.
  const char* name = ec.category().name();
  if (std::strcmp(name, "asio.system") == 0 || std::strcmp(name, "system") == 0 || std::strcmp(name, "generic") == 0) {
    return ec.value();
  }
  // Other categories may say which errno they stand for through their default condition
  // (newer Asio versions do).
  const std::error_condition portable = ec.default_error_condition();
  return portable.category() == std::generic_category() ? portable.value() : 0;
}

condition_set conditions_of_errno(int value) noexcept {
  if (value >= 0 && value <= errno_max) {
    return errno_conditions[static_cast<std::size_t>(value)];
  }
  return bit(condition::unclassified);
}

condition_set conditions_of(const std::error_code& ec) noexcept {
  if (!ec) {
    return 0;
  }
  if (const int value = errno_value(ec); value != 0) {
    return conditions_of_errno(value);
  }
  if (ec.category() == error_category()) {
    return conditions_of_transient_error(ec.value());
  }
  return conditions_of_foreign(ec);
}

}  // namespace detail

int errno_of(const std::error_code& ec) noexcept { return detail::errno_value(ec); }

namespace {

constexpr std::array<std::string_view, condition_count + 1> condition_names{
    "unknown",           "would_block",         "interrupted",        "in_progress",
    "already_connected", "timed_out",           "connection_failed",  "network_unreachable",
    "refused",           "peer_gone",           "not_connected",      "fd_exhausted",
    "process_fd_limit",  "system_fd_limit",     "memory_exhausted",   "resource_exhausted",
    "address_in_use",    "address_unavailable", "permission_denied",  "invalid_argument",
    "not_supported",     "not_listening",       "duplicate_listener", "stalled",
    "programming_error", "unclassified",
};

constexpr std::array<std::string_view, condition_count + 1> condition_messages{
    "unknown condition",
    "operation would block",
    "interrupted by a signal",
    "operation in progress",
    "socket already connected",
    "timed out",
    "connection failed",
    "network unreachable",
    "connection refused",
    "peer closed or reset the connection",
    "socket not connected",
    "no file descriptor available",
    "process descriptor limit (RLIMIT_NOFILE) reached",
    "system file table full",
    "kernel memory for sockets exhausted",
    "resource exhausted",
    "address in use",
    "address unavailable",
    "permission denied",
    "invalid argument for this operation",
    "operation not supported on this socket",
    "socket is not listening",
    "another socket listens on the same address",
    "descriptors exhausted with no progress (stalled)",
    "programming error",
    "unclassified error",
};

class condition_category_impl final : public std::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "transient"; }

  [[nodiscard]] std::string message(int value) const override {
    return std::string(condition_messages[in_range(value) ? static_cast<std::size_t>(value) : 0]);
  }

  [[nodiscard]] bool equivalent(const std::error_code& code, int value) const noexcept override {
    return in_range(value) && (detail::conditions_of(code) & detail::bit(static_cast<condition>(value))) != 0;
  }

 private:
  static bool in_range(int value) noexcept { return value >= 1 && value <= condition_count; }
};

}  // namespace

const std::error_category& condition_category() noexcept {
  static const condition_category_impl instance;
  return instance;
}

std::error_condition make_error_condition(condition c) noexcept { return {static_cast<int>(c), condition_category()}; }

std::string_view to_string(condition c) noexcept {
  const int value = static_cast<int>(c);
  return condition_names[value >= 1 && value <= condition_count ? static_cast<std::size_t>(value) : 0];
}

bool from_string(std::string_view name, condition& out) noexcept {
  for (const condition c : all_conditions) {
    if (to_string(c) == name) {
      out = c;
      return true;
    }
  }
  return false;
}

bool matches(const std::error_code& ec, condition c) noexcept { return ec == c; }

}  // namespace transient
