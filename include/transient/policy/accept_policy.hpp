// transient/policy/accept_policy.hpp: the sans-IO accept policy, every decision an accept loop
// takes from the events a driver feeds it, with its settings, backoff and stop report. Include
// it to configure a driver (accept_policy_config) or to drive the policy from a loop of your
// own. Design: docs/design.md, "The accept policy's protocol" and "The spare descriptor".
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "transient/errors/errors.hpp"
#include "transient/policy/budget.hpp"
#include "transient/policy/events.hpp"

// Bounded exponential backoff with full jitter, for the pauses while a resource is exhausted.

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

// The state machine: events in, decisions out. Every member runs on the loop thread, except
// request_stop(), which any thread may call; the budget may be shared with other policies.

namespace transient {

/// What a driver does with connections it cannot serve (the budget is full or the peer
/// has too many connections). The policy decides *when*; the driver does it.
enum class shed_mode : unsigned char {
  queue,    ///< Do not accept: clients wait in the kernel backlog (default). For an already
            ///< accepted connection (per-peer cap) this means `close`.
  close,    ///< Accept and close at once (the client sees an orderly close).
  reset,    ///< Accept and close with SO_LINGER {1, 0} (the client sees a reset).
  respond,  ///< Accept, let the user's callback write a refusal (e.g. HTTP 503), then close.
};

/// The name of a shed mode ("queue", ...).
[[nodiscard]] std::string_view to_string(shed_mode mode) noexcept;

/// The next thing a driver does.
enum class step : unsigned char {
  accept,  ///< Accept now; report on_accepted or on_accept_failed (a completion driver: on_accept_result).
  /// Wait until the listener is readable and report on_ready; a completion driver instead
  /// keeps an accept request armed and reports its result (on_accept_result).
  wait,
  pause_for_release,  ///< Stop watching the listener until a permit is released (on_release).
  pause_until,        ///< Stop watching the listener until `until` (on_timer) or a release (on_release).
  shed,               ///< Accept the pending connection and shed it with `shed`; report as for accept.
  /// Descriptors are exhausted and the driver holds its spare descriptor: give it up (if still
  /// held), accept and report as for accept; each connection comes back shed_accepted. The
  /// backoff pause is in force (`until`): when the drain ends the decision is pause_until.
  drain,
  stop,  ///< Stop cleanly.
  fail,  ///< Stop with `error` (its condition says why); attach a diagnosis if you have one.
};

/// The name of a step ("accept", ...).
[[nodiscard]] std::string_view to_string(step s) noexcept;

/// A decision: a plain value, cheap to copy, no allocation.
struct decision {
  step next = step::wait;  ///< What to do next.
  /// on_accepted only: the connection just accepted must not be served but shed with
  /// `shed` (the permit was left empty).
  bool shed_accepted = false;
  shed_mode shed = shed_mode::queue;  ///< How to shed (step::shed or shed_accepted).
  /// step::pause_until (and drain): when to call on_timer. step::wait: zero, or when to call
  /// on_timer while waiting for readiness (an episode's quiet period ends then and its
  /// `recovered` line is due; a driver that cannot arm a timer while waiting gets it at the
  /// next event).
  std::chrono::steady_clock::time_point until{};
  std::error_code error;  ///< step::fail: why.

  friend bool operator==(const decision&, const decision&) = default;
};

/// The shortest wait a driver measures: a connection accepted at most this long after the
/// policy last saw the accept queue empty (accept_policy::queue_wait_bound) waited no longer,
/// so the driver takes the bound instead of asking the kernel. The first bucket of the
/// queue-wait histogram (policy_metrics::queue_wait_buckets).
inline constexpr std::chrono::milliseconds queue_wait_floor{5};

/// accept_policy::batch() with no limit.
inline constexpr std::uint32_t unbounded_batch = ~std::uint32_t{0};

/// Settings of an accept policy. The defaults are those of the design.
struct accept_policy_config {
  std::uint32_t accepts_per_ready = 64;  ///< Accepts (and skips) per ready event, so one listener cannot starve a loop.
  backoff_config backoff{};              ///< Delays while a resource is exhausted.
  std::uint64_t seed = 0;                ///< Seed of the backoff jitter (0: random).
  /// Stall watchdog: stop with condition::stalled after this long backing off with no
  /// accept and no release. 0 disables it. Never applies to a full budget.
  std::chrono::milliseconds stall_timeout = std::chrono::seconds(30);
  shed_mode shed = shed_mode::queue;  ///< What to do at the budget.
  std::shared_ptr<peer_limit> peers;  ///< Per-peer cap (empty: off). May be shared; each permit keeps it alive.
  /// The longest a connection may wait in the accept queue and still be served: one that
  /// waited longer (its client has likely given up) is shed at accept with `stale_shed` and
  /// never takes a place. 0: off, and nothing is measured. docs/design.md, "Bounding the wait
  /// in the accept queue".
  std::chrono::milliseconds max_queue_wait{0};
  /// How a connection that waited longer than max_queue_wait is shed: close, reset or respond
  /// (queue is not a way to shed an accepted connection).
  shed_mode stale_shed = shed_mode::close;
  std::chrono::milliseconds summary_interval = std::chrono::seconds(10);  ///< Summary lines while degraded (0: none).
  /// A degraded episode ends only after accepting has been healthy this long; failing sooner
  /// is a flap of the same episode (docs/design.md, "Episodes"). 0: it ends at the first success.
  std::chrono::milliseconds quiet_period = std::chrono::seconds(1);
  /// Receives events. Empty: the policy writes nowhere (it does no I/O); the library's
  /// drivers (acceptor, server, uring_acceptor, the Asio adapters) give it write_to_stderr.
  policy_event_sink sink{};
  /// Names the loop and listener in every event (policy_event::source), so that lines from
  /// several loops can be told apart. An acceptor (and so the epoll server and serve) puts
  /// the listener's address first: "ADDRESS", or "ADDRESS LABEL" with the label given here;
  /// the server adds "loop I/N" with several loops. With the Asio adapter, set it yourself.
  std::string label;
  /// The driver verified the listener (SO_ACCEPTCONN = 1, SO_TYPE = SOCK_STREAM): EOPNOTSUPP
  /// from accept is then one connection's failure (skip), not a bug (fail). docs/design.md.
  bool listener_verified = false;
};

/// Checks a config: invalid_argument if accepts_per_ready is 0, a duration (stall_timeout,
/// summary_interval, quiet_period, max_queue_wait) is negative or above longest_setting
/// (accept_policy.hpp), the shed mode is unknown, stale_shed is queue or unknown, or the
/// backoff is invalid; else an empty code.
[[nodiscard]] std::error_code validate(const accept_policy_config& config) noexcept;

/// How accepting is going.
enum class health_state : unsigned char {
  accepting,     ///< Normal.
  backpressure,  ///< The budget is full: paused (or shedding) until a release. Not an error.
  degraded,      ///< A resource is exhausted: backing off until an accept succeeds (or finds the queue empty).
  stopped,       ///< Stopped (see error: empty for a clean stop).
};

/// The name of a health state ("accepting", ...).
[[nodiscard]] std::string_view to_string(health_state s) noexcept;

/// The answer of accept_policy::health().
struct policy_health {
  health_state state = health_state::accepting;   ///< The state.
  std::error_code error;                          ///< degraded: the latest failure; stopped: why (empty: clean stop).
  std::chrono::steady_clock::time_point since{};  ///< When the state began (the caller's clock).
};

/// The state gauge's name of `h` (one of server_states, events.hpp): "stalled" for a stop by
/// the stall watchdog (condition::stalled), else to_string(h.state).
[[nodiscard]] std::string_view state_name(const policy_health& h) noexcept;

/// One row of the accept policy's state x event table, by name: in `state`, `event` runs
/// `rule` and leaves the policy in one of the states `next` names. docs/acceptor.md shows
/// every row.
struct policy_transition {
  std::string_view state;         ///< The state the event finds ("waiting", ...).
  std::string_view event;         ///< The event: the member function the driver calls ("on_ready", ...).
  std::string_view rule;          ///< What the policy does ("begin_burst", ..., "unexpected": a driver's bug).
  std::string_view rule_summary;  ///< The rule in a sentence.
  std::string next;               ///< The states it may go to, comma-separated ("accepting, paused_capacity").
};

namespace detail {
/// The accept policy's state x event table, one row per pair, states and events in the
/// order of the table in src/policy/accept_policy.cpp. For the test that keeps docs/acceptor.md in step.
[[nodiscard]] std::vector<policy_transition> policy_transitions();
}  // namespace detail

/// The accept policy. The protocol: docs/design.md, "The accept policy's protocol".
class accept_policy {
 public:
  /// The clock whose time points the events carry (the policy never reads it).
  using clock = std::chrono::steady_clock;
  /// A moment on that clock.
  using time_point = clock::time_point;

  /// A policy drawing permits from `budget` (which must outlive it). Throws
  /// std::system_error (invalid_argument) if the config is invalid.
  explicit accept_policy(connection_budget& budget, const accept_policy_config& config = {});
  ~accept_policy();
  accept_policy(const accept_policy&) = delete;
  accept_policy& operator=(const accept_policy&) = delete;

  /// The listener is readable (a readiness driver, while it watches the listener: step::wait).
  [[nodiscard]] decision on_ready(time_point now) noexcept;
  /// accept succeeded (after an accept or shed decision). `peer` is the client's key for
  /// the per-peer cap (peer_key_of the address accept filled in; empty: not limited).
  /// Fills `out` with the connection's permit, or leaves it empty and sets
  /// decision::shed_accepted: then shed the connection. The decision is the next step.
  /// An accept that completes after request_stop() but before the policy stopped is served
  /// like any other (it has a permit) and the next step is stop: the client was already
  /// accepted by the kernel, as in a graceful shutdown. Once the policy has stopped, a late
  /// accept is shed.
  /// `waited`: how long the connection waited in the accept queue as the driver knows it
  /// (queue_wait() of the driver kit; 0 when max_queue_wait is 0). A connection that waited
  /// longer than max_queue_wait is stale: it is shed with stale_shed (shed_reason::queue_wait),
  /// its permit stays empty (a place reserved for it goes back) and the policy goes on
  /// accepting, so that the stale connections at the head of the queue are shed while the
  /// place is free. Stale shedding is reported once per episode (policy_event_kind::stale_shed
  /// and stale_shed_ended).
  [[nodiscard]] decision on_accepted(time_point now, permit& out, peer_key peer = {},
                                     std::chrono::milliseconds waited = {}) noexcept;
  /// accept failed with `ec`, classified by classify(operation::accept, ec). A fail
  /// decision carries `ec`, except for EINVAL, which becomes error::not_listening (its
  /// condition is not_listening), and any error after request_stop(), which is a clean stop.
  /// `spare_held`: the driver holds its spare descriptor, so a descriptor shortage (EMFILE,
  /// ENFILE) may be answered with a drain when the shed mode is not queue.
  [[nodiscard]] decision on_accept_failed(time_point now, std::error_code ec, bool spare_held = false) noexcept;
  /// A completion driver's accept request gave a connection. It implies readiness: under
  /// step::wait it begins a burst as on_ready would, then it is on_accepted. A request that a
  /// pause cancelled too late may still give one: the pause ends and the connection is served
  /// if a place is free, else shed. `waited`: as for on_accepted.
  [[nodiscard]] decision on_accept_result(time_point now, permit& out, peer_key peer = {},
                                          std::chrono::milliseconds waited = {}) noexcept;
  /// A completion driver's accept request failed with `ec` (not its own cancellation). Under
  /// step::wait it implies readiness; then it is on_accept_failed.
  [[nodiscard]] decision on_accept_result(time_point now, std::error_code ec, bool spare_held = false) noexcept;
  /// A completion driver's accept request, asked for by step::accept, shed or drain, waits in
  /// the kernel: the submission's completions came and it was not among them. The kernel tries
  /// the accept when the request is submitted, so the backlog was empty: the policy answers as
  /// for EAGAIN (wait; a drain ends). The request stays armed and its result comes later.
  [[nodiscard]] decision on_accept_parked(time_point now) noexcept;
  /// A permit was released (call it when woken by the budget's waker; harmless otherwise).
  [[nodiscard]] decision on_release(time_point now) noexcept;
  /// The timer of a pause_until or drain decision fired (early calls are harmless), or the
  /// `until` of a wait decision came.
  [[nodiscard]] decision on_timer(time_point now) noexcept;
  /// Stop now: returns the stop decision (clean).
  [[nodiscard]] decision on_stop(time_point now) noexcept;

  /// Asks the policy to stop at its next event; the only call safe from any thread.
  /// After it, an accept error (EINVAL after shutdown(SHUT_RD), as measured: docs/design.md) is a
  /// clean stop, not a failure.
  void request_stop() noexcept { stop_requested_.store(true, std::memory_order_relaxed); }

  /// The decision in force (what the last event returned).
  [[nodiscard]] decision current() const noexcept;
  /// For the decision in force, step::accept or step::wait: how many connections a completion
  /// driver may take before it hears the next decision; 1 for every other step. Above 1 it may
  /// keep one accept request taking connection after connection (io_uring's multishot
  /// accept). In the shed modes it is unbounded_batch (what the budget cannot take is shed
  /// anyway), in queue mode the places free beyond one burst (accepts_per_ready), which the
  /// completions already in flight when the budget fills may take. A query, not a field of
  /// the decision: a readiness driver, which never reads it, does not pay for it.
  [[nodiscard]] std::uint32_t batch() const noexcept;
  /// After the stop: true if a connection accepted now would be served (a place is free), as
  /// on_accept_result serves a request's late completion. A driver that looks at the backlog
  /// once more as it stops asks this first, so that it takes no client it would have to shed.
  [[nodiscard]] bool serves_late() const noexcept;
  /// How accepting is going.
  [[nodiscard]] policy_health health() const noexcept;
  /// True if the driver measures each connection's wait in the accept queue (max_queue_wait > 0).
  [[nodiscard]] bool measures_queue_wait() const noexcept { return config_.max_queue_wait.count() > 0; }
  /// The bound on the wait in the accept queue (accept_policy_config::max_queue_wait; 0: none).
  [[nodiscard]] std::chrono::milliseconds max_queue_wait() const noexcept { return config_.max_queue_wait; }
  /// The longest a connection accepted at `now` can have waited in the accept queue: the time
  /// since the policy last saw the queue empty (an accept that found it empty, a parked
  /// request), which no later connection waited longer than. duration::max() until then:
  /// connections may wait from before the start.
  [[nodiscard]] clock::duration queue_wait_bound(time_point now) const noexcept {
    return empty_seen_ ? now - last_empty_ : clock::duration::max();
  }
  /// The counters (live/peak/max from the budget).
  [[nodiscard]] policy_metrics metrics() const noexcept;

  /// After a fail decision, the driver attaches its diagnosis (descriptor census, limits,
  /// what to change). The policy never computes one. Reported to the sink as an event.
  void attach_diagnosis(std::string text);
  /// The attached diagnosis ("" if none).
  [[nodiscard]] const std::string& diagnosis() const noexcept { return diagnosis_; }

  /// Tells the policy whether the driver verified the listener (see accept_policy_config).
  void set_listener_verified(bool verified) noexcept { config_.listener_verified = verified; }

  /// The budget in use.
  [[nodiscard]] const connection_budget& budget() const noexcept { return budget_; }

 private:
  enum class state : unsigned char { waiting, accepting, shedding, draining, paused_capacity, paused_backoff, stopped };
  enum class event : unsigned char;
  struct rules;  // the state x event table and its rules (accept_policy.cpp)
  friend std::vector<policy_transition> detail::policy_transitions();

  decision accepted(time_point now, permit& out, peer_key peer, std::chrono::milliseconds waited) noexcept;
  decision shed_stale(time_point now) noexcept;
  void note_wait(time_point now, std::chrono::milliseconds waited) noexcept;
  void queue_seen_empty(time_point now) noexcept;
  void end_stale_episode(time_point now) noexcept;
  decision failed(time_point now, std::error_code ec, bool spare_held) noexcept;
  decision begin_accept(time_point now) noexcept;
  decision accepting() const noexcept;
  [[nodiscard]] bool paused() const noexcept;
  decision waiting() const noexcept;
  void tick(time_point now) noexcept;
  void healthy(time_point now) noexcept;
  decision enter_backoff(time_point now, condition why, std::error_code ec) noexcept;
  decision begin_drain(decision backing_off, condition why, bool spare_held) noexcept;
  decision drained(time_point now, bool accepted) noexcept;
  decision resume(time_point now) noexcept;
  void leave_pause(time_point now) noexcept;
  decision finish(time_point now, std::error_code ec, condition why) noexcept;
  void end_pause(time_point now) noexcept;
  [[nodiscard]] bool stalled(time_point now) const noexcept;
  [[nodiscard]] shed_mode shed_for_accepted() const noexcept;
  [[nodiscard]] policy_event base_event() const noexcept;
  void emit(const std::optional<policy_event>& event) noexcept;

  connection_budget& budget_;
  accept_policy_config config_;
  backoff backoff_;
  degradation_log log_;
  permit reservation_;  // the place taken for the accept in flight (queue; the modes that shed take it on arrival)
  state state_ = state::waiting;
  std::uint32_t burst_ = 0;       // accepts decided since the last ready event
  std::uint32_t drain_left_ = 0;  // paused_backoff: accepts left in the drain in progress (0: none)
  std::uint16_t generation_ = 0;  // the budget's release generation when the accept was decided
  time_point pause_start_{};      // when the current pause began
  time_point deadline_{};         // end of the current backoff pause
  time_point stall_start_{};      // last progress seen while degraded
  time_point accepting_since_{};  // when accepting last resumed
  time_point last_empty_{};       // when an accept last found the queue empty
  bool empty_seen_ = false;       // last_empty_ is set
  // Waits above this go the measured path: max() when nothing is measured, so that the
  // common path pays one comparison; -1 ms while measuring, so every wait is recorded.
  std::chrono::milliseconds watch_above_ = std::chrono::milliseconds::max();
  time_point stale_since_{};      // when the stale-shedding episode in progress began
  std::uint64_t stale_shed_ = 0;  // connections shed in it (0: no episode)
  decision stop_{};               // the final decision, once stopped
  time_point stopped_at_{};
  condition stop_cause_ = condition::unclassified;
  std::atomic<bool> stop_requested_{false};
  policy_metrics counters_{};
  std::string diagnosis_;
};

/// Writes a refusal (e.g. "HTTP/1.1 503 ...") on a connection shed with shed_mode::respond.
/// The descriptor is non-blocking and closed right after; write what fits, do not wait.
/// An exception it throws is caught: the connection is shed (closed) anyway and counted in
/// policy_metrics::refusals_failed. A refusal is written when the server is overloaded, the
/// moment a server must not fall over, so a failed refusal costs that one client only.
using refusal_writer = std::function<void(int fd, const endpoint& peer)>;

/// Why a driver stopped.
enum class stop_reason : unsigned char {
  clean,              ///< stop() was called (or every listener stopped cleanly).
  listener_dead,      ///< A listener stopped listening (condition::not_listening).
  stalled,            ///< Descriptors or memory stayed exhausted with no progress (condition::stalled).
  programming_error,  ///< EBADF, ENOTSOCK, EFAULT... from accept or epoll (a bug).
  other_error,        ///< Any other failure (see the error code).
};

/// The name of a stop reason ("clean", ...).
[[nodiscard]] std::string_view to_string(stop_reason r) noexcept;

/// The stop reason of a policy's final error (empty: clean).
[[nodiscard]] stop_reason stop_reason_of(const std::error_code& ec) noexcept;

/// How a driver stopped.
struct stop_info {
  stop_reason reason = stop_reason::clean;  ///< Why it stopped.
  std::error_code error;                    ///< Empty for a clean stop.
  std::string diagnosis;                    ///< For stalled and dead listeners: what was found and what to change.

  /// True for a clean stop (no error): the opposite of testing a std::error_code.
  [[nodiscard]] bool ok() const noexcept { return !error; }
};

}  // namespace transient
