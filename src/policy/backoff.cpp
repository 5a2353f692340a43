// backoff: exponential delays with jitter from a seeded splitmix64 generator.
#include "transient/policy/accept_policy.hpp"

#include <algorithm>

#include "transient/detail/throw_error.hpp"

namespace transient {

std::error_code validate(const backoff_config& config) noexcept {
  // `!(factor >= 1)` also rejects NaN.
  if (config.initial <= std::chrono::nanoseconds::zero() || !(config.factor >= 1.0) || config.cap < config.initial ||
      !setting_in_range(config.cap)) {
    return std::make_error_code(std::errc::invalid_argument);
  }
  if (config.mode != jitter::none && config.mode != jitter::full && config.mode != jitter::equal) {
    return std::make_error_code(std::errc::invalid_argument);
  }
  return {};
}

backoff::backoff(backoff_config config, std::uint64_t seed) : config_(config), base_(config.initial), state_(seed) {
  detail::throw_if(validate(config), "backoff: initial must be > 0, factor >= 1, initial <= cap <= longest_setting");
}

// splitmix64 (Steele, Lea, Flood): tiny, fast and good enough to spread retries.
std::uint64_t backoff::random() noexcept {
  std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30U)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27U)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31U);
}

std::chrono::nanoseconds backoff::next() noexcept {
  const std::chrono::nanoseconds base = base_;
  ++failures_;
  // Grow in floating point so a factor like 1.5 works; the cap bounds the result, so the
  // conversion back cannot overflow.
  const double grown = static_cast<double>(base.count()) * config_.factor;
  const auto cap = static_cast<double>(config_.cap.count());
  base_ = std::chrono::nanoseconds(static_cast<std::int64_t>(std::min(grown, cap)));

  const auto uniform = [this](std::int64_t low, std::int64_t high) {  // inclusive bounds, low <= high
    const auto span = static_cast<std::uint64_t>(high - low) + 1U;
    return low + static_cast<std::int64_t>(random() % span);
  };
  switch (config_.mode) {
    case jitter::none: return base;
    case jitter::full: return std::chrono::nanoseconds(uniform(config_.initial.count(), base.count()));
    case jitter::equal: {
      const std::int64_t half = base.count() / 2;
      return std::chrono::nanoseconds(base.count() - half + uniform(0, half));
    }
  }
  return base;
}

}  // namespace transient
