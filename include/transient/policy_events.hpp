// transient/policy_events.hpp: what the accept policy tells a log, and how often.
//
// A loop that logs one line per failed accept floods the log exactly when the machine is
// short of resources. The policy instead reports episodes: one event when accepting
// becomes degraded (backing off on exhaustion), a summary at a fixed interval while it
// lasts (with the number of failures it did not report one by one), one event on
// recovery, and one when it stops. A user sink receives the structured events; the
// default sink writes one line per event to stderr.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "transient/condition.hpp"

namespace transient {

/// The kinds of events an accept policy reports.
enum class policy_event_kind : unsigned char {
  degraded,        ///< Accepting started to back off on an exhausted resource.
  still_degraded,  ///< Periodic summary while degraded.
  recovered,       ///< An accept succeeded again after being degraded.
  stopped,         ///< The policy stopped (cleanly or with an error).
  diagnosis,       ///< The driver attached a diagnosis to a stop.
};

/// The name of an event kind ("degraded", ...).
[[nodiscard]] std::string_view to_string(policy_event_kind kind) noexcept;

/// One structured event. Fields that do not apply to a kind are zero or empty.
struct policy_event {
  policy_event_kind kind = policy_event_kind::degraded;  ///< What happened.
  std::chrono::steady_clock::time_point at{};            ///< When (the caller's clock).
  condition cause = condition::unclassified;             ///< The condition behind it (degraded, summary, stop).
  std::error_code error;                ///< degraded/summary: the latest failure; stopped: why (empty: clean).
  std::chrono::nanoseconds duration{};  ///< still_degraded/recovered/stopped: time since degraded began.
  std::uint64_t failures = 0;           ///< still_degraded: failures since the previous line; recovered: in all.
  std::uint64_t live = 0;               ///< Live connections in the budget.
  std::uint64_t max_connections = 0;    ///< The budget.
  std::uint64_t fd_limit = 0;           ///< The RLIMIT_NOFILE soft limit the budget came from (0: unknown).
  std::string_view text;                ///< diagnosis: the driver's text (valid during the call only).
};

/// A receiver of events. Called on the loop thread, rarely (never per failed accept).
using policy_event_sink = std::function<void(const policy_event&)>;

/// One human-readable line for `event` (without a newline), e.g.
/// "transient: accept degraded: process_fd_limit (Too many open files); live 900/1000, fd limit 1024; backing off".
[[nodiscard]] std::string format(const policy_event& event);

/// The default sink: writes format(event) and a newline to stderr in one write(2).
/// Never throws; a failed write is dropped (there is nowhere better to report it).
void write_to_stderr(const policy_event& event) noexcept;

/// The episode bookkeeping behind the events: when to report, what to suppress. Each
/// call returns the event to report, if any. Not thread-safe (one per policy).
class degradation_log {
 public:
  /// Summaries at most every `summary_interval` (0: no summaries).
  explicit degradation_log(std::chrono::nanoseconds summary_interval) noexcept : interval_(summary_interval) {}

  /// A failure that makes (or keeps) accepting degraded. `base` supplies the live/budget
  /// figures; the first failure of an episode returns a `degraded` event, later ones are
  /// counted (and returned in a summary when the interval has passed).
  [[nodiscard]] std::optional<policy_event> failure(std::chrono::steady_clock::time_point now, condition cause,
                                                    std::error_code error, const policy_event& base) noexcept;

  /// Time passes (a timer or any event while degraded): a summary if one is due.
  [[nodiscard]] std::optional<policy_event> tick(std::chrono::steady_clock::time_point now,
                                                 const policy_event& base) noexcept;

  /// An accept succeeded: a `recovered` event if an episode was going on.
  [[nodiscard]] std::optional<policy_event> recovered(std::chrono::steady_clock::time_point now,
                                                      const policy_event& base) noexcept;

  /// True while an episode is going on.
  [[nodiscard]] bool degraded() const noexcept { return active_; }
  /// When the episode began (meaningful while degraded()).
  [[nodiscard]] std::chrono::steady_clock::time_point since() const noexcept { return since_; }
  /// The latest failure of the episode.
  [[nodiscard]] std::error_code last_error() const noexcept { return last_error_; }
  /// The condition of the latest failure.
  [[nodiscard]] condition last_cause() const noexcept { return last_cause_; }

 private:
  std::chrono::nanoseconds interval_;
  bool active_ = false;
  std::chrono::steady_clock::time_point since_{};
  std::chrono::steady_clock::time_point last_line_{};
  std::uint64_t failures_ = 0;    // in the whole episode
  std::uint64_t suppressed_ = 0;  // since the last line
  std::error_code last_error_;
  condition last_cause_ = condition::unclassified;
};

}  // namespace transient
