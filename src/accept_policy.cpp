// accept_policy: the state machine. Each event handler reads as the rule it implements;
// the budget's waiting protocol (connection_budget.hpp) keeps wake-ups from being lost.
#include "transient/accept_policy.hpp"

#include <algorithm>
#include <cerrno>
#include <random>

#include "transient/classify.hpp"
#include "transient/detail/throw_error.hpp"
#include "transient/error.hpp"

namespace transient {

std::string_view to_string(shed_mode mode) noexcept {
  switch (mode) {
    case shed_mode::queue: return "queue";
    case shed_mode::close: return "close";
    case shed_mode::reset: return "reset";
    case shed_mode::respond: return "respond";
  }
  return "unknown";
}

std::string_view to_string(step s) noexcept {
  switch (s) {
    case step::accept: return "accept";
    case step::wait: return "wait";
    case step::pause_for_release: return "pause_for_release";
    case step::pause_until: return "pause_until";
    case step::shed: return "shed";
    case step::drain: return "drain";
    case step::stop: return "stop";
    case step::fail: return "fail";
  }
  return "unknown";
}

std::string_view to_string(health_state s) noexcept {
  switch (s) {
    case health_state::accepting: return "accepting";
    case health_state::backpressure: return "backpressure";
    case health_state::degraded: return "degraded";
    case health_state::stopped: return "stopped";
  }
  return "unknown";
}

std::error_code validate(const accept_policy_config& config) noexcept {
  const bool bad = config.accepts_per_ready == 0 || !setting_in_range(config.stall_timeout) ||
                   !setting_in_range(config.summary_interval) || !setting_in_range(config.quiet_period) ||
                   config.shed > shed_mode::respond;
  if (bad) {
    return std::make_error_code(std::errc::invalid_argument);
  }
  return validate(config.backoff);
}

namespace {

std::uint64_t seed_or_random(std::uint64_t seed) {
  if (seed != 0) {
    return seed;
  }
  std::random_device device;
  return (std::uint64_t{device()} << 32U) ^ device();
}

const accept_policy_config& checked(const accept_policy_config& config) {
  detail::throw_if(
      validate(config),
      "accept_policy: accepts_per_ready must be > 0, durations from 0 to longest_setting, and the backoff valid");
  return config;
}

decision make(step s) noexcept {
  decision d;
  d.next = s;
  return d;
}

}  // namespace

accept_policy::accept_policy(connection_budget& budget, const accept_policy_config& config)
    : budget_(budget),
      config_(checked(config)),
      backoff_(config_.backoff, seed_or_random(config_.seed)),
      log_(config_.summary_interval, config_.quiet_period) {}

accept_policy::~accept_policy() {
  // A reservation still held is cancelled by its own destructor (no release counted).
  if (state_ == state::paused_capacity || state_ == state::paused_backoff) {
    budget_.stop_waiting();
  }
}

// ---- events ---------------------------------------------------------------------------

decision accept_policy::on_ready(time_point now) noexcept {
  if (state_ == state::stopped || stop_requested_.load(std::memory_order_relaxed)) {
    return finish(now, {}, condition::unclassified);
  }
  tick(now);
  if (state_ == state::waiting) {
    burst_ = 0;
    return begin_accept(now);
  }
  // Paused: the driver should not be watching the listener; readiness changes nothing.
  // Accepting or shedding: the decision in force still holds.
  return current();
}

decision accept_policy::on_accepted(time_point now, permit& out, peer_key peer) noexcept {
  if (state_ == state::stopped) {  // a driver that accepted after a stop: do not serve it
    decision d = stop_;
    d.shed_accepted = true;
    d.shed = shed_for_accepted();
    return d;
  }
  if (drain_left_ > 0) {
    return drained(now, true);
  }
  leave_pause(now);  // only if a driver reports an accept it was not asked for
  // Any successful accept is progress: the resource is available again.
  if (log_.degraded()) {  // checked first: building the event's figures costs atomic loads
    tick(now);
    healthy(now);
  }
  ++burst_;

  // Served, or shed (and how, and why): plain values, not a decision, whose error_code costs
  // a call to construct on the path every connection takes.
  bool shed_accepted = false;
  shed_mode how = shed_for_accepted();
  shed_reason why = shed_reason::budget;
  if (state_ == state::shedding) {
    shed_accepted = true;  // what step::shed asked for
    how = config_.shed;
  } else {
    if (!reservation_) {
      // A mode that sheds, or a driver that accepts on its own: take the place now, so the
      // budget still holds.
      reservation_ = budget_.try_reserve();
    }
    if (!reservation_) {
      shed_accepted = true;
    } else if (!reservation_.admit(config_.peers, peer)) {
      reservation_.release();  // cancelled: the peer is at its cap
      shed_accepted = true;
      why = shed_reason::peer_limit;
    } else {
      out = std::move(reservation_);
      ++counters_.accepted;
    }
  }
  state_ = state::waiting;
  const bool stopping = stop_requested_.load(std::memory_order_relaxed);
  if (!shed_accepted && !stopping) {
    return begin_accept(now);  // the common path returns the decision untouched (no partial writes to copy)
  }
  decision next = stopping ? finish(now, {}, condition::unclassified) : begin_accept(now);
  if (shed_accepted) {
    ++counters_.shed[static_cast<std::size_t>(why)];
    next.shed_accepted = true;
    next.shed = how;
  }
  return next;
}

decision accept_policy::on_accept_failed(time_point now, std::error_code ec, bool reserve_held) noexcept {
  if (state_ == state::stopped) {
    return stop_;
  }
  if (drain_left_ > 0) {
    return drained(now, false);  // EAGAIN: the backlog is empty; EMFILE: the freed number was taken
  }
  leave_pause(now);  // only if a driver reports an accept it was not asked for
  reservation_.release();
  state_ = state::waiting;
  if (stop_requested_.load(std::memory_order_relaxed)) {
    // After a stop request the driver shuts the listener down; accept then fails (EINVAL
    // after shutdown(SHUT_RD), docs/errors.md) and that is the clean end, whatever the error.
    return finish(now, {}, condition::unclassified);
  }
  tick(now);  // an episode whose quiet period has passed ends before this failure
  const verdict v = classify(operation::accept, ec);
  action what = v.what;
  if (what == action::fail && errno_of(ec) == EOPNOTSUPP && config_.listener_verified) {
    what = action::skip;  // on a verified listening stream socket it is one connection's failure
  }
  const auto index = static_cast<std::size_t>(v.why);
  switch (what) {
    case action::skip:
      ++counters_.skipped[index];
      ++burst_;
      return begin_accept(now);
    case action::retry:
      ++counters_.retried;
      ++burst_;
      return begin_accept(now);
    case action::wait:
      // The queue is empty: accept got as far as the queue, so nothing is exhausted now.
      healthy(now);
      return waiting();
    case action::back_off:
      ++counters_.failed[index];
      return begin_drain(enter_backoff(now, v.why, ec), v.why, reserve_held);
    case action::fail:
    case action::close:
    case action::done: break;
  }
  ++counters_.failed[index];
  if (v.why == condition::not_listening && ec != condition::not_listening) {
    // EINVAL's own condition is invalid_argument; from accept (without a stop request) it
    // means the socket does not listen (docs/errors.md), so the stop carries the code that says so.
    return finish(now, make_error_code(transient::error::not_listening), v.why);
  }
  return finish(now, ec, v.why);
}

decision accept_policy::on_release(time_point now) noexcept {
  switch (state_) {
    case state::stopped: return stop_;
    case state::paused_capacity:
      if (budget_.resume_if_room(reservation_)) {  // took a place and stopped waiting
        end_pause(now);
        burst_ = 0;
        generation_ = budget_.generation();
        state_ = state::accepting;
        return make(step::accept);
      }
      return current();
    case state::paused_backoff:
      // A release frees a descriptor: retry at once, whatever the remaining delay. If the
      // generation did not move, the wake-up was for another loop (a cancelled reservation).
      if (budget_.generation() != generation_) {
        stall_start_ = now;  // progress
        return resume(now);
      }
      tick(now);
      return current();
    default: tick(now); return current();
  }
}

decision accept_policy::on_timer(time_point now) noexcept {
  if (state_ == state::stopped) {
    return stop_;
  }
  tick(now);
  if (state_ != state::paused_backoff) {
    return current();
  }
  if (budget_.generation() != generation_) {
    stall_start_ = now;  // a release happened that we were not told about: progress
    return resume(now);
  }
  if (stalled(now)) {
    return finish(now, make_error_code(transient::error::stalled), condition::stalled);
  }
  if (now < deadline_) {
    return current();  // early
  }
  return resume(now);
}

decision accept_policy::on_stop(time_point now) noexcept {
  request_stop();
  return finish(now, {}, condition::unclassified);
}

// ---- transitions ----------------------------------------------------------------------

decision accept_policy::begin_accept(time_point now) noexcept {
  if (burst_ >= config_.accepts_per_ready) {
    state_ = state::waiting;
    return waiting();  // the cap on accepts per ready event: a level-triggered listener reports again
  }
  // The generation is read before the place is taken, so a release between the two (or
  // during the accept) is seen when the accept fails on exhaustion.
  generation_ = budget_.generation();
  if (config_.shed != shed_mode::queue) {
    // A mode that sheds accepts whether or not there is room, so it takes no place before
    // the accept: on_accepted takes one when the connection arrives, or sheds it. A place
    // held across the accept (and the handler before it) would make a loop sharing the
    // budget shed a client below the budget.
    if (budget_.live() >= budget_.max_connections()) {
      if (state_ != state::shedding) {
        pause_start_ = now;  // backpressure began
      }
      state_ = state::shedding;  // at the budget: accept and shed, keep the backlog short
      decision d = make(step::shed);
      d.shed = config_.shed;
      return d;
    }
  } else if (!budget_.acquire_or_wait(reservation_)) {
    // Backpressure, not an error: registered as a waiter in the same atomic step that
    // found the budget full, so the next release wakes us. No timer, no watchdog.
    state_ = state::paused_capacity;
    pause_start_ = now;
    ++counters_.pauses[static_cast<std::size_t>(pause_reason::capacity)];
    return make(step::pause_for_release);
  }
  state_ = state::accepting;
  return make(step::accept);
}

decision accept_policy::waiting() const noexcept {
  decision d = make(step::wait);
  if (log_.degraded() && !log_.failing()) {
    d.until = log_.quiet_until();  // the recovered line is due then, even if no client comes
  }
  return d;
}

void accept_policy::tick(time_point now) noexcept {
  if (log_.degraded()) {
    emit(log_.tick(now, base_event()));
  }
}

void accept_policy::healthy(time_point now) noexcept {
  if (log_.failing()) {
    backoff_.reset();
    emit(log_.succeeded(now, base_event()));
  }
}

decision accept_policy::enter_backoff(time_point now, condition why, std::error_code ec) noexcept {
  if (!log_.failing()) {
    stall_start_ = now;  // the watchdog counts from the first failure since the last progress
  }
  emit(log_.failure(now, why, ec, base_event()));
  if (stalled(now)) {
    return finish(now, make_error_code(transient::error::stalled), condition::stalled);
  }
  if (!budget_.wait_for_release(generation_)) {
    // A connection was released while this accept was failing: a descriptor is free now.
    // Each such retry consumes one release, so this cannot spin.
    stall_start_ = now;
    return begin_accept(now);
  }
  state_ = state::paused_backoff;
  pause_start_ = now;
  ++counters_.pauses[static_cast<std::size_t>(pause_reason::backoff)];
  deadline_ = now + backoff_.next();
  if (config_.stall_timeout.count() > 0) {
    deadline_ = std::min(deadline_, stall_start_ + config_.stall_timeout);
  }
  return current();
}

// What happens on EMFILE or ENFILE, after enter_backoff decided the pause: a drain first,
// if the shed mode sheds at all and the driver holds its spare descriptor (libuv's trick:
// waiting clients get an answer instead of waiting out the episode). Nothing else about the
// episode changes: the pause, its deadline, the stall watchdog and the log go on as for any
// exhaustion, and drained connections are not progress (they were accepted on the reserve's
// number, not on a descriptor that came free).
decision accept_policy::begin_drain(decision backing_off, condition why, bool reserve_held) noexcept {
  const bool no_descriptor = why == condition::process_fd_limit || why == condition::system_fd_limit;
  if (!no_descriptor || !reserve_held || config_.shed == shed_mode::queue || backing_off.next != step::pause_until) {
    return backing_off;
  }
  drain_left_ = config_.accepts_per_ready;
  ++counters_.drains;
  return current();
}

// One accept of a drain came back: shed it and go on (or end the drain, if the accept failed
// or the cap was reached; the pause is then in force again).
decision accept_policy::drained(time_point now, bool accepted) noexcept {
  if (accepted) {
    --drain_left_;
    ++counters_.shed[static_cast<std::size_t>(shed_reason::budget)];
  } else {
    drain_left_ = 0;
  }
  decision d = stop_requested_.load(std::memory_order_relaxed) ? finish(now, {}, condition::unclassified) : current();
  if (accepted) {
    d.shed_accepted = true;
    d.shed = config_.shed;
  }
  return d;
}

decision accept_policy::resume(time_point now) noexcept {
  leave_pause(now);
  burst_ = 0;
  return begin_accept(now);
}

void accept_policy::leave_pause(time_point now) noexcept {
  drain_left_ = 0;
  if (state_ == state::paused_capacity || state_ == state::paused_backoff) {
    budget_.stop_waiting();
    end_pause(now);
  }
}

decision accept_policy::finish(time_point now, std::error_code ec, condition why) noexcept {
  if (state_ == state::stopped) {
    return stop_;
  }
  reservation_.release();
  leave_pause(now);
  state_ = state::stopped;
  stopped_at_ = now;
  stop_cause_ = why;
  stop_ = ec ? make(step::fail) : make(step::stop);
  stop_.error = ec;
  if (log_.degraded()) {
    emit(log_.stopping(now, base_event()));  // accepting was healthy again: that episode ends
  }
  policy_event e = base_event();
  e.kind = policy_event_kind::stopped;
  e.at = now;
  e.cause = why;
  e.error = ec;
  if (log_.degraded()) {  // still failing: the stop line ends the episode
    e.duration = now - log_.since();
    e.failures = log_.failures();
    e.flaps = log_.flaps();
  }
  emit(e);
  return stop_;
}

void accept_policy::end_pause(time_point now) noexcept {
  const auto reason = state_ == state::paused_capacity ? pause_reason::capacity : pause_reason::backoff;
  counters_.paused[static_cast<std::size_t>(reason)] += now - pause_start_;
  accepting_since_ = now;
  state_ = state::waiting;
}

bool accept_policy::stalled(time_point now) const noexcept {
  return config_.stall_timeout.count() > 0 && now - stall_start_ >= config_.stall_timeout;
}

shed_mode accept_policy::shed_for_accepted() const noexcept {
  // An accepted connection cannot go back to the backlog: `queue` means close it.
  return config_.shed == shed_mode::queue ? shed_mode::close : config_.shed;
}

policy_event accept_policy::base_event() const noexcept {
  policy_event e;
  e.source = config_.label;
  e.live = budget_.live();
  e.max_connections = budget_.max_connections();
  e.fd_limit = budget_.fd_limit();
  return e;
}

void accept_policy::emit(const std::optional<policy_event>& event) noexcept {
  if (!event) {
    return;
  }
  if (!config_.sink) {
    return;  // sans-IO: without a sink the policy writes nowhere
  }
  try {
    config_.sink(*event);
  } catch (...) {  // a failing sink must not break the loop it reports on
  }
}

// ---- queries --------------------------------------------------------------------------

decision accept_policy::current() const noexcept {
  switch (state_) {
    case state::waiting: return waiting();
    case state::accepting: return make(step::accept);
    case state::shedding: {
      decision d = make(step::shed);
      d.shed = config_.shed;
      return d;
    }
    case state::paused_capacity: return make(step::pause_for_release);
    case state::paused_backoff: {
      decision d = make(drain_left_ > 0 ? step::drain : step::pause_until);
      d.until = deadline_;
      if (drain_left_ > 0) {
        d.shed = config_.shed;
      }
      return d;
    }
    case state::stopped: return stop_;
  }
  return make(step::wait);
}

policy_health accept_policy::health() const noexcept {
  switch (state_) {
    case state::stopped: return {health_state::stopped, stop_.error, stopped_at_};
    case state::paused_backoff: return {health_state::degraded, log_.last_error(), log_.since()};
    case state::paused_capacity:
    case state::shedding: return {health_state::backpressure, {}, pause_start_};
    default: break;
  }
  if (log_.failing()) {  // resumed after a pause, but no accept has got through yet
    return {health_state::degraded, log_.last_error(), log_.since()};
  }
  return {health_state::accepting, {}, accepting_since_};
}

policy_metrics accept_policy::metrics() const noexcept {
  policy_metrics m = counters_;
  m.live = budget_.live();
  m.peak = budget_.peak();
  m.max_connections = budget_.max_connections();
  return m;
}

void accept_policy::attach_diagnosis(std::string text) {
  diagnosis_ = std::move(text);
  policy_event e = base_event();
  e.kind = policy_event_kind::diagnosis;
  e.at = stopped_at_;
  e.cause = stop_cause_;
  e.error = stop_.error;
  e.text = diagnosis_;
  emit(e);
}

}  // namespace transient
