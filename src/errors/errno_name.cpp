// errno names both ways, from the generated table in detail/errno_table.hpp.
#include "transient/errors/classify.hpp"

#include <algorithm>
#include <cctype>

#include "errors/errno_table.hpp"

namespace transient {
namespace {

bool equal_ignoring_case(std::string_view a, std::string_view b) noexcept {
  return std::ranges::equal(a, b, [](char x, char y) {
    return std::toupper(static_cast<unsigned char>(x)) == std::toupper(static_cast<unsigned char>(y));
  });
}

constexpr std::array<int, detail::errno_canonical.size()> canonical_values = [] {
  std::array<int, detail::errno_canonical.size()> values{};
  std::ranges::transform(detail::errno_canonical, values.begin(), &detail::errno_entry::value);
  return values;
}();

}  // namespace

std::string_view errno_name(int value) noexcept {
  const auto* found = std::ranges::find(detail::errno_canonical, value, &detail::errno_entry::value);
  return found == detail::errno_canonical.end() ? std::string_view{} : found->name;
}

std::optional<int> errno_value(std::string_view name) noexcept {
  for (const auto& table : {std::span<const detail::errno_entry>(detail::errno_canonical),
                            std::span<const detail::errno_entry>(detail::errno_aliases)}) {
    for (const auto& entry : table) {
      if (equal_ignoring_case(entry.name, name)) {
        return entry.value;
      }
    }
  }
  return std::nullopt;
}

std::span<const int> all_errno_values() noexcept { return canonical_values; }

}  // namespace transient
