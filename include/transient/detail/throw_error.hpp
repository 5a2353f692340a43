// Helpers for the throwing half of each overload pair.
#pragma once

#include <cerrno>
#include <string>
#include <system_error>

namespace transient::detail {

/// Throws std::system_error(ec, what) if `ec` holds an error.
inline void throw_if(const std::error_code& ec, const char* what) {
  if (ec) {
    throw std::system_error(ec, what);
  }
}

/// Throws std::system_error(ec, what) if `ec` holds an error (for a composed message).
inline void throw_if(const std::error_code& ec, const std::string& what) {
  if (ec) {
    throw std::system_error(ec, what);
  }
}

/// The calling thread's errno as a std::error_code in the system category.
inline std::error_code last_error() noexcept { return {errno, std::system_category()}; }

}  // namespace transient::detail
