// transient/errno_name.hpp: errno names both ways ("EMFILE" <-> 24), for every errno Linux defines.
#pragma once

#include <optional>
#include <span>
#include <string_view>

namespace transient {

/// The canonical name of an errno value ("EAGAIN" for 11, not "EWOULDBLOCK"); an empty
/// view if Linux defines no errno with that value.
[[nodiscard]] std::string_view errno_name(int value) noexcept;

/// The value of an errno name, case-insensitively, aliases included ("ewouldblock" -> 11);
/// std::nullopt if Linux defines no errno of that name.
[[nodiscard]] std::optional<int> errno_value(std::string_view name) noexcept;

/// Every errno value Linux defines, ascending, each once.
[[nodiscard]] std::span<const int> all_errno_values() noexcept;

}  // namespace transient
