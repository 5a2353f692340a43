// transient/policy_metrics.hpp: the accept policy's counters, as a plain snapshot, and
// their rendering in the Prometheus text exposition format.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

#include "transient/condition.hpp"

namespace transient {

/// Why a connection was shed.
enum class shed_reason : unsigned char {
  budget,      ///< The connection budget was full and the shed mode is not `queue`.
  peer_limit,  ///< The peer already had its maximum of live connections.
};
/// Number of shed reasons.
inline constexpr std::size_t shed_reason_count = 2;

/// Why accepting paused.
enum class pause_reason : unsigned char {
  capacity,  ///< The budget was full (backpressure; ends at the next release).
  backoff,   ///< A resource was exhausted (ends after a backoff delay or at a release).
};
/// Number of pause reasons.
inline constexpr std::size_t pause_reason_count = 2;

/// The name of a shed reason ("budget", "peer_limit").
[[nodiscard]] std::string_view to_string(shed_reason r) noexcept;
/// The name of a pause reason ("capacity", "backoff").
[[nodiscard]] std::string_view to_string(pause_reason r) noexcept;

/// Counters of one accept policy at one moment. Arrays indexed by condition use the
/// condition's value (index 0 is unused); arrays indexed by reason use the enum's value.
struct policy_metrics {
  /// A per-condition counter array.
  using by_condition = std::array<std::uint64_t, condition_count + 1>;

  std::uint64_t accepted = 0;  ///< Connections accepted and handed out with a permit.
  std::uint64_t retried = 0;   ///< Accepts retried at once (EINTR).
  by_condition skipped{};      ///< Pending connections that died before accept, skipped (per condition).
  by_condition failed{};       ///< Accept failures that paused or stopped the loop (per condition).
  std::array<std::uint64_t, shed_reason_count> shed{};                ///< Connections shed, per reason.
  std::array<std::uint64_t, pause_reason_count> pauses{};             ///< Pauses entered, per reason.
  std::array<std::chrono::nanoseconds, pause_reason_count> paused{};  ///< Total time paused, per reason.
  /// Drains under EMFILE/ENFILE (step::drain): each gave up the EMFILE reserve once.
  std::uint64_t drains = 0;
  /// Refusal writers (shed_mode::respond) that threw; the connection was shed anyway. Counted
  /// by the driver, which owns the writer.
  std::uint64_t refusals_failed = 0;
  std::uint64_t live = 0;             ///< Places taken in the budget now.
  std::uint64_t peak = 0;             ///< Most connections open at once.
  std::uint64_t max_connections = 0;  ///< The budget.

  /// Adds the counters of `other` (e.g. another loop's policy). live, peak and
  /// max_connections describe the budget, which loops share: they take the larger value.
  policy_metrics& operator+=(const policy_metrics& other) noexcept;
};

/// The Prometheus text format of `m`, every metric name starting with `prefix` and an
/// underscore (e.g. "transient_accepted_total"). Per-condition series appear only for
/// conditions that occurred. Sets `ec` (invalid_argument) and returns "" if `prefix` is
/// not a valid metric name prefix ([a-zA-Z_:][a-zA-Z0-9_:]*).
[[nodiscard]] std::string to_prometheus(const policy_metrics& m, std::string_view prefix, std::error_code& ec);
/// As above; throws std::system_error for an invalid prefix.
[[nodiscard]] std::string to_prometheus(const policy_metrics& m, std::string_view prefix = "transient");

}  // namespace transient
