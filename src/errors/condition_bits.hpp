// The context-free mapping from an error code to the set of conditions it matches,
// shared by condition_category's equivalence test and by classify().
#pragma once

#include <cstdint>
#include <system_error>

#include "transient/errors/errors.hpp"

namespace transient::detail {

/// A set of conditions: bit (c - 1) stands for condition c.
using condition_set = std::uint32_t;
static_assert(condition_count <= 32, "condition_set needs more bits");

/// The bit of one condition.
constexpr condition_set bit(condition c) noexcept { return condition_set{1} << (static_cast<int>(c) - 1); }

/// The system and generic categories, looked up once: std::system_category() is an
/// out-of-line call in libstdc++, and classify() is on the hot path of every accept loop.
struct standard_categories {
  const std::error_category* system;   ///< &std::system_category()
  const std::error_category* generic;  ///< &std::generic_category()
};

/// The standard categories (initialized on first use; thread-safe).
inline const standard_categories& standard() noexcept {
  static const standard_categories categories{&std::system_category(), &std::generic_category()};
  return categories;
}

/// errno_of() for codes outside the standard categories (Asio's, and any other).
int errno_of_foreign(const std::error_code& ec) noexcept;

/// The errno value `ec` stands for, or 0 (see transient::errno_of).
inline int errno_value(const std::error_code& ec) noexcept {
  const std::error_category* category = &ec.category();
  const standard_categories& known = standard();
  if (category == known.system || category == known.generic) {
    return ec.value();
  }
  return ec ? errno_of_foreign(ec) : 0;
}

/// The conditions an errno value matches (errno 0: none; unknown values: unclassified).
condition_set conditions_of_errno(int value) noexcept;

/// The conditions `ec` matches, whatever its category (success: none).
condition_set conditions_of(const std::error_code& ec) noexcept;

}  // namespace transient::detail
