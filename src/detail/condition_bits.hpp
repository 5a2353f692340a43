// The context-free mapping from an error code to the set of conditions it matches,
// shared by condition_category's equivalence test and by classify().
#pragma once

#include <cstdint>
#include <system_error>

#include "transient/condition.hpp"

namespace transient::detail {

/// A set of conditions: bit (c - 1) stands for condition c.
using condition_set = std::uint32_t;
static_assert(condition_count <= 32, "condition_set needs more bits");

/// The bit of one condition.
constexpr condition_set bit(condition c) noexcept { return condition_set{1} << (static_cast<int>(c) - 1); }

/// The conditions an errno value matches (errno 0: none; unknown values: unclassified).
condition_set conditions_of_errno(int value) noexcept;

/// The conditions `ec` matches, whatever its category (success: none).
condition_set conditions_of(const std::error_code& ec) noexcept;

}  // namespace transient::detail
