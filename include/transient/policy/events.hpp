// transient/policy/events.hpp: what the accept policy tells the operator: its events
// (degraded, summary, recovered, stopped, diagnosis), the sink they go to, and its counters, the
// state and the process's descriptors as Prometheus text. Include it for a sink of your own or
// to export the metrics.
// Design: docs/design.md, "Episodes".
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "transient/diagnosis/diagnostics.hpp"
#include "transient/errors/errors.hpp"

// The events, one per episode of degraded accepting rather than one per failure (docs/design.md,
// "Episodes"), and where they go.

namespace transient {

/// The kinds of events an accept policy reports.
enum class policy_event_kind : unsigned char {
  degraded,        ///< Accepting started to back off on an exhausted resource.
  still_degraded,  ///< Periodic summary while degraded.
  recovered,       ///< An accept succeeded again after being degraded.
  stopped,         ///< The policy stopped (cleanly or with an error).
  diagnosis,       ///< The driver attached a diagnosis to a stop.
  warning,         ///< A driver found a setting that will cause trouble (`text` says which and why).
  /// Stale shedding began: a connection waited longer than max_queue_wait in the accept queue
  /// (`queue_wait`, `max_queue_wait`) and was shed. One per episode: the connections shed after
  /// it are counted, not reported one by one.
  stale_shed,
  /// Stale shedding ended: a connection came that had not waited too long, or the accept queue
  /// was seen empty (or the policy stopped). `shed`: connections shed in the episode;
  /// `duration`: since it began.
  stale_shed_ended,
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
  /// still_degraded: failures since the previous line; recovered, and stopped during an
  /// episode: in all.
  std::uint64_t failures = 0;
  /// still_degraded: flaps (failing again after accepts had succeeded) since the previous
  /// line; recovered, and stopped during an episode: in all.
  std::uint64_t flaps = 0;
  std::uint64_t live = 0;             ///< Live connections in the budget.
  std::uint64_t max_connections = 0;  ///< The budget.
  std::uint64_t fd_limit = 0;         ///< The RLIMIT_NOFILE soft limit the budget came from (0: unknown).
  std::string_view text;              ///< diagnosis and warning: the text (valid during the call only).
  /// stale_shed: how long the first stale connection waited in the accept queue.
  std::chrono::milliseconds queue_wait{};
  /// stale_shed, stale_shed_ended: the bound it passed (accept_policy_config::max_queue_wait).
  std::chrono::milliseconds max_queue_wait{};
  std::uint64_t shed = 0;  ///< stale_shed_ended: connections shed in the episode.
  /// Which loop and listener the event is about (accept_policy_config::label; the epoll
  /// server sets "ADDRESS" or "ADDRESS loop I/N"); empty: unnamed. Valid during the call only.
  std::string_view source;
};

/// A receiver of events. Called on the loop thread, rarely (never per failed accept).
using policy_event_sink = std::function<void(const policy_event&)>;

/// One human-readable line for `event` (without a newline), e.g.
/// "transient: 127.0.0.1:8080: accept degraded: process_fd_limit (Too many open files); live 900/1000, fd limit 1024;
/// backing off" or "transient: accept recovered after 12 ms (97 failures, 96 flaps); live 3/100, fd limit 64".
/// Durations are in seconds with one decimal, or in milliseconds when that would read 0.0 s.
[[nodiscard]] std::string format(const policy_event& event);

/// The drivers' default sink: writes format(event) and a newline to stderr in one write(2).
/// Never throws; a failed write is dropped (there is nowhere better to report it).
void write_to_stderr(const policy_event& event) noexcept;

/// The episode bookkeeping behind the events: when to report, what to suppress, when an
/// episode ends (docs/design.md, "Episodes"). Each call returns the event to report, if
/// any. Not thread-safe (one per policy).
class degradation_log {
 public:
  /// Summaries at most every `summary_interval` (0: no summaries); an episode ends after
  /// `quiet_period` of healthy accepting (0: at the first success, which floods under churn).
  explicit degradation_log(std::chrono::nanoseconds summary_interval,
                           std::chrono::nanoseconds quiet_period = std::chrono::nanoseconds::zero()) noexcept
      : interval_(summary_interval), quiet_(quiet_period) {}

  /// A failure that makes (or keeps) accepting degraded. `base` supplies the live/budget
  /// figures; the first failure of an episode returns a `degraded` event, later ones are
  /// counted (and returned in a summary when the interval has passed). A failure after
  /// successes within the episode is a flap. Call tick() first, so that an episode whose
  /// quiet period has passed ends before the failure starts a new one.
  [[nodiscard]] std::optional<policy_event> failure(std::chrono::steady_clock::time_point now, condition cause,
                                                    std::error_code error, const policy_event& base) noexcept;

  /// Accepting worked (an accept succeeded, or found the queue empty) during an episode:
  /// the quiet period starts, unless it is already running. With a quiet period of 0 the
  /// episode ends at once and the `recovered` event is returned.
  [[nodiscard]] std::optional<policy_event> succeeded(std::chrono::steady_clock::time_point now,
                                                      const policy_event& base) noexcept;

  /// Time passes (any event while degraded): `recovered` if the quiet period has passed
  /// with no failure, else a summary if one is due and there is something to summarise.
  [[nodiscard]] std::optional<policy_event> tick(std::chrono::steady_clock::time_point now,
                                                 const policy_event& base) noexcept;

  /// The policy stops: if accepting had become healthy again, the episode ends now with
  /// its `recovered` event (its quiet period cut short by the stop); a failing episode
  /// goes on, and the stop reports it.
  [[nodiscard]] std::optional<policy_event> stopping(std::chrono::steady_clock::time_point now,
                                                     const policy_event& base) noexcept;

  /// True while an episode is going on (failing, or healthy for less than the quiet period).
  [[nodiscard]] bool degraded() const noexcept { return phase_ != phase::none; }
  /// True while the episode's latest attempt failed (no success since the latest failure).
  [[nodiscard]] bool failing() const noexcept { return phase_ == phase::failing; }
  /// When the episode's quiet period ends (meaningful while degraded() and not failing()):
  /// the time a driver waiting on the listener calls back so the `recovered` line is timely.
  [[nodiscard]] std::chrono::steady_clock::time_point quiet_until() const noexcept { return healthy_since_ + quiet_; }
  /// When the episode began (meaningful while degraded()).
  [[nodiscard]] std::chrono::steady_clock::time_point since() const noexcept { return since_; }
  /// Failures in the episode so far.
  [[nodiscard]] std::uint64_t failures() const noexcept { return failures_; }
  /// Flaps in the episode so far.
  [[nodiscard]] std::uint64_t flaps() const noexcept { return flaps_; }
  /// The latest failure of the episode.
  [[nodiscard]] std::error_code last_error() const noexcept { return last_error_; }
  /// The condition of the latest failure.
  [[nodiscard]] condition last_cause() const noexcept { return last_cause_; }

 private:
  enum class phase : unsigned char { none, failing, healthy };

  std::optional<policy_event> end(std::chrono::steady_clock::time_point now, const policy_event& base) noexcept;

  std::chrono::nanoseconds interval_;
  std::chrono::nanoseconds quiet_;
  phase phase_ = phase::none;
  std::chrono::steady_clock::time_point since_{};
  std::chrono::steady_clock::time_point healthy_since_{};  // start of the latest healthy stretch
  std::chrono::steady_clock::time_point last_line_{};
  std::uint64_t failures_ = 0;          // in the whole episode
  std::uint64_t flaps_ = 0;             // in the whole episode
  std::uint64_t suppressed_ = 0;        // failures since the last line
  std::uint64_t suppressed_flaps_ = 0;  // flaps since the last line
  std::error_code last_error_;
  condition last_cause_ = condition::unclassified;
};

}  // namespace transient

// The policy's counters, as a plain snapshot, and their Prometheus text.

namespace transient {

/// Why a connection was shed.
enum class shed_reason : unsigned char {
  budget,      ///< The connection budget was full and the shed mode is not `queue`.
  peer_limit,  ///< The peer already had its maximum of live connections.
  /// The connection waited in the accept queue longer than max_queue_wait: its client has
  /// likely given up (accept_policy_config::max_queue_wait).
  queue_wait,
};
/// Number of shed reasons.
inline constexpr std::size_t shed_reason_count = 3;

/// Why accepting paused.
enum class pause_reason : unsigned char {
  capacity,  ///< The budget was full (backpressure; ends at the next release).
  backoff,   ///< A resource was exhausted (ends after a backoff delay or at a release).
};
/// Number of pause reasons.
inline constexpr std::size_t pause_reason_count = 2;

/// The upper bounds of the queue-wait histogram's buckets (policy_metrics::queue_wait_buckets):
/// Prometheus's default buckets, 5 ms to 10 s; a last bucket, unbounded, follows them.
inline constexpr std::array<std::chrono::milliseconds, 11> queue_wait_bounds{
    std::chrono::milliseconds(5),    std::chrono::milliseconds(10),   std::chrono::milliseconds(25),
    std::chrono::milliseconds(50),   std::chrono::milliseconds(100),  std::chrono::milliseconds(250),
    std::chrono::milliseconds(500),  std::chrono::milliseconds(1000), std::chrono::milliseconds(2500),
    std::chrono::milliseconds(5000), std::chrono::milliseconds(10000)};

/// The name of a shed reason ("budget", "peer_limit", "queue_wait").
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
  /// Drains under EMFILE/ENFILE (step::drain): each gave up the spare descriptor once.
  std::uint64_t drains = 0;
  /// Refusal writers (shed_mode::respond) that threw; the connection was shed anyway. Counted
  /// by the driver, which owns the writer.
  std::uint64_t refusals_failed = 0;
  /// The accept-queue waits recorded (accept_policy_config::max_queue_wait > 0): element i counts
  /// the waits above queue_wait_bounds[i - 1] and at most queue_wait_bounds[i]; the last, those
  /// above 10 s. Not cumulative (to_prometheus makes the cumulative buckets).
  std::array<std::uint64_t, queue_wait_bounds.size() + 1> queue_wait_buckets{};
  std::chrono::milliseconds queue_wait_sum{};  ///< The sum of the waits recorded.
  std::uint64_t queue_wait_count = 0;          ///< The waits recorded.
  /// True if the waits are measured (max_queue_wait > 0): to_prometheus then exports the
  /// histogram, with no connection yet too.
  bool queue_wait_measured = false;
  std::uint64_t live = 0;             ///< Places taken in the budget now.
  std::uint64_t peak = 0;             ///< Most connections open at once.
  std::uint64_t max_connections = 0;  ///< The budget.

  /// Counts one accept-queue wait in the histogram (its bucket, the sum and the count).
  void record_queue_wait(std::chrono::milliseconds waited) noexcept;

  /// Adds the counters of `other` (e.g. another loop's policy). live, peak and
  /// max_connections describe the budget, which loops share: they take the larger value.
  policy_metrics& operator+=(const policy_metrics& other) noexcept;
};

/// The conditions PREFIX_accept_skipped_total shows from the start, at 0: those classify()
/// answers `skip` for at accept, and not_supported (EOPNOTSUPP on a verified listener).
inline constexpr std::array<condition, 4> accept_skip_conditions{
    condition::connection_failed, condition::peer_gone, condition::permission_denied, condition::not_supported};
/// The conditions PREFIX_accept_failed_total shows from the start, at 0: those classify()
/// answers `back_off` or `fail` for at accept (unclassified: a code it does not know).
inline constexpr std::array<condition, 7> accept_failure_conditions{
    condition::process_fd_limit, condition::system_fd_limit,   condition::memory_exhausted, condition::not_listening,
    condition::not_supported,    condition::programming_error, condition::unclassified};

/// The Prometheus text format of `m`, every metric name starting with `prefix` and an
/// underscore (e.g. "transient_accepted_total"). The per-condition counters have a series for
/// each of their fixed conditions (accept_skip_conditions, accept_failure_conditions), at 0
/// until one occurs, so that a rate over them is 0 rather than empty; the queue-wait histogram
/// (PREFIX_queue_wait_seconds, with its _bucket{le="..."}, _sum and _count series) only while waits are measured
/// (queue_wait_measured, or any wait recorded). Sets `ec` (invalid_argument) and returns "" if `prefix` is
/// not a valid metric name prefix ([a-zA-Z_:][a-zA-Z0-9_:]*).
[[nodiscard]] std::string to_prometheus(const policy_metrics& m, std::string_view prefix, std::error_code& ec);
/// As above; throws std::system_error for an invalid prefix.
[[nodiscard]] std::string to_prometheus(const policy_metrics& m, std::string_view prefix = "transient");

}  // namespace transient

// The state as a gauge, and the process metrics every Prometheus client library exports, for a
// server that exposes its own metrics (serve's /metrics shows them all).

namespace transient {

/// The states PREFIX_state takes (one series each): /healthz's words. accepting, backpressure
/// and degraded are health_state's; stalled is a stop by the stall watchdog; stopped is any
/// other stop, or a drain under way (state_name() maps a policy_health).
inline constexpr std::array<std::string_view, 5> server_states{"accepting", "backpressure", "degraded", "stalled",
                                                               "stopped"};

/// The Prometheus text of the state gauge: PREFIX_state{state="S"} for each S of
/// server_states, 1 for `state` and 0 for the others. Sets `ec` (invalid_argument) and returns
/// "" if `state` is not one of server_states or `prefix` is not a valid metric name prefix.
[[nodiscard]] std::string state_to_prometheus(std::string_view state, std::string_view prefix, std::error_code& ec);
/// As above; throws std::system_error for an unknown state or an invalid prefix.
[[nodiscard]] std::string state_to_prometheus(std::string_view state, std::string_view prefix = "transient");

/// The process figures the Prometheus client libraries export under the standard names
/// process_open_fds, process_max_fds and process_start_time_seconds. Each is empty if it could
/// not be read.
struct process_metrics {
  std::optional<std::uint64_t> open_fds;  ///< Descriptors open now (the entries of /proc/self/fd).
  /// The soft RLIMIT_NOFILE, the limit accept's EMFILE comes from (not fs.file-max);
  /// UINT64_MAX if unlimited.
  std::optional<std::uint64_t> max_fds;
  /// When the process started, in seconds since the Unix epoch: /proc/self/stat's starttime
  /// after /proc/stat's btime, as the official clients compute it.
  std::optional<double> start_time_seconds;
};

/// Reads the process figures. Needs no free descriptor for open_fds (as take_fd_census(), it
/// lists /proc/self/fd through `fds` if they hold it, else opens it, else probes descriptor
/// numbers). The start time needs two /proc files; it is read once per process and kept, so a
/// process that read it before running out of descriptors still has it then. Sets `ec` to the
/// first failure (the figure is then empty) and returns what it could read.
[[nodiscard]] process_metrics read_process_metrics(const diagnosis_fds& fds, std::error_code& ec);
/// As above; throws std::system_error if a figure cannot be read.
[[nodiscard]] process_metrics read_process_metrics(const diagnosis_fds& fds = {});

/// The Prometheus text of `m`: process_open_fds, process_max_fds and
/// process_start_time_seconds (gauges, no prefix: the names are standard); an empty figure
/// is left out.
[[nodiscard]] std::string to_prometheus(const process_metrics& m);

}  // namespace transient
