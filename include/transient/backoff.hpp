// transient/backoff.hpp: bounded exponential backoff with jitter.
//
// Used by the accept policy while a resource is exhausted (EMFILE, ENFILE, ENOBUFS...):
// each failure waits longer than the last, up to a cap, and a success starts again from
// the beginning. Jitter spreads the retries of many loops and processes so that they do
// not all hit the kernel in the same millisecond. The random generator is a small seeded
// one, so tests can script every delay.
#pragma once

#include <chrono>
#include <cstdint>
#include <system_error>

namespace transient {

/// The longest duration any transient setting takes: a backoff delay, a policy timeout or
/// interval, the Asio adapter's close check. Longer values are typing mistakes, not settings,
/// and would overflow the clock's arithmetic (a deadline of now plus the duration, in
/// nanoseconds), so every validate() refuses them. A setting that can be turned off takes 0.
inline constexpr std::chrono::hours longest_setting{24 * 365};

/// True if `d` is a duration a setting takes: from 0 to longest_setting.
template <class Rep, class Period>
[[nodiscard]] constexpr bool setting_in_range(std::chrono::duration<Rep, Period> d) noexcept {
  return d >= decltype(d)::zero() && d <= longest_setting;
}

/// How a delay is randomised.
enum class jitter : unsigned char {
  none,   ///< Exactly the exponential delay.
  full,   ///< Uniform in [initial, delay]: spreads retries most (never below `initial`, so never a spin).
  equal,  ///< delay/2 plus uniform in [0, delay/2]: keeps at least half of the delay.
};

/// Settings of a backoff. Defaults: start at 1 ms, double each time, at most 1 s, full jitter.
struct backoff_config {
  std::chrono::nanoseconds initial = std::chrono::milliseconds(1);  ///< First delay; must be > 0.
  double factor = 2.0;                                              ///< Growth per failure; must be >= 1.
  std::chrono::nanoseconds cap = std::chrono::seconds(1);           ///< Largest delay; must be >= initial.
  jitter mode = jitter::full;                                       ///< How delays are randomised.
};

/// Checks a backoff_config: an error code in std::generic_category() (invalid_argument)
/// if a value is out of range (including a cap above longest_setting), else an empty code.
[[nodiscard]] std::error_code validate(const backoff_config& config) noexcept;

/// Exponential backoff with jitter. Not thread-safe: one per loop.
class backoff {
 public:
  /// A backoff with `config` whose jitter draws from a generator seeded with `seed`.
  /// Throws std::system_error (invalid_argument) if the config is out of range.
  explicit backoff(backoff_config config = {}, std::uint64_t seed = 0x7472616e7369656eULL);

  /// The delay to wait after one more failure; grows the base for the next one.
  [[nodiscard]] std::chrono::nanoseconds next() noexcept;

  /// Starts again from `initial` (after a success).
  void reset() noexcept {
    base_ = config_.initial;
    failures_ = 0;
  }

  /// Failures since the last reset (how many times next() was called).
  [[nodiscard]] std::uint64_t failures() const noexcept { return failures_; }

  /// The settings in use.
  [[nodiscard]] const backoff_config& config() const noexcept { return config_; }

 private:
  std::uint64_t random() noexcept;

  backoff_config config_;
  std::chrono::nanoseconds base_;
  std::uint64_t failures_ = 0;
  std::uint64_t state_;
};

}  // namespace transient
