// accept_policy: the state machine. Each event handler reads as the rule it implements;
// the budget's waiting protocol (budget.hpp) keeps wake-ups from being lost.
#include "transient/policy/accept_policy.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <initializer_list>
#include <random>

#include "transient/detail/throw_error.hpp"
#include "transient/errors/classify.hpp"
#include "transient/errors/errors.hpp"

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

std::string_view state_name(const policy_health& h) noexcept {
  if (h.state == health_state::stopped && h.error == condition::stalled) {
    return "stalled";
  }
  return to_string(h.state);
}

std::error_code validate(const accept_policy_config& config) noexcept {
  const bool bad = config.accepts_per_ready == 0 || !setting_in_range(config.stall_timeout) ||
                   !setting_in_range(config.summary_interval) || !setting_in_range(config.quiet_period) ||
                   !setting_in_range(config.max_queue_wait) || config.shed > shed_mode::respond ||
                   config.stale_shed == shed_mode::queue || config.stale_shed > shed_mode::respond;
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
      "accept_policy: accepts_per_ready must be > 0, durations from 0 to longest_setting, stale_shed close, reset "
      "or respond, and the backoff valid");
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
      log_(config_.summary_interval, config_.quiet_period),
      watch_above_(config_.max_queue_wait.count() > 0 ? std::chrono::milliseconds(-1)
                                                      : std::chrono::milliseconds::max()) {
  counters_.queue_wait_measured = config_.max_queue_wait.count() > 0;
}

accept_policy::~accept_policy() {
  // A reservation still held is cancelled by its own destructor (no release counted).
  if (paused()) {
    budget_.stop_waiting();
  }
}

// ---- the state x event table ----------------------------------------------------------

namespace {

// The set of `targets`, one bit per state (a row's next states).
template <typename State>
constexpr std::uint8_t to(std::initializer_list<State> targets) noexcept {
  std::uint8_t bits = 0;
  for (const State t : targets) {
    bits = static_cast<std::uint8_t>(bits | 1U << static_cast<unsigned>(t));
  }
  return bits;
}

}  // namespace

enum class accept_policy::event : unsigned char {
  ready,
  accepted,
  accept_failed,
  result_accepted,
  result_failed,
  parked,
  release,
  timer,
  stop,
};

// Each state's answer to each event, as data (h11's way): the rule that runs and the states
// it may leave the policy in. dispatch() is the one lookup every event goes through; a pair
// that no correct driver produces runs `unexpected`, which stops the policy, and a rule that
// leaves the policy in a state its row does not name does too. detail::policy_transitions()
// gives the rows to the test that renders them into docs/acceptor.md.
struct accept_policy::rules {
  // An event's arguments; each event reads its own.
  struct input {
    permit* out = nullptr;
    peer_key peer{};
    const std::error_code* ec = nullptr;
    bool spare_held = false;
    std::chrono::milliseconds waited{};
  };
  using run_fn = decision (*)(accept_policy&, time_point, const input&) noexcept;
  struct rule {
    std::string_view name;
    std::string_view summary;  // what it does, for the table in docs/acceptor.md
    run_fn run;
  };
  struct cell {
    const rule* what;
    std::uint8_t next;  // bit i: the rule may leave the policy in state i
  };
  static constexpr std::size_t states = 7;
  static constexpr std::size_t events = 9;

  // ---- the rules ----

  // The listener is readable: a burst of accepts begins.
  static decision begin_burst(accept_policy& p, time_point now, const input& /*in*/) noexcept {
    if (p.stop_requested_.load(std::memory_order_relaxed)) {
      return p.finish(now, {}, condition::unclassified);
    }
    p.tick(now);
    p.burst_ = 0;
    return p.begin_accept(now);
  }
  // The accept asked for gave a connection: serve it (a permit) or shed it.
  static decision serve_or_shed(accept_policy& p, time_point now, const input& in) noexcept {
    return p.accepted(now, *in.out, in.peer, in.waited);
  }
  // A completion under wait: the connection came, so the listener was ready; a burst begins.
  static decision ready_then_serve(accept_policy& p, time_point now, const input& in) noexcept {
    p.tick(now);
    p.burst_ = 0;
    return p.accepted(now, *in.out, in.peer, in.waited);
  }
  // A completion of a request that the pause cancelled too late: the connection is here, so
  // the pause ends; it is served if a place is free, else shed (it cannot go back).
  static decision resume_then_serve(accept_policy& p, time_point now, const input& in) noexcept {
    p.leave_pause(now);
    return p.accepted(now, *in.out, in.peer, in.waited);
  }
  static decision shed_drained(accept_policy& p, time_point now, const input& /*in*/) noexcept {
    return p.drained(now, true);
  }
  // A driver that accepted after the stop: do not serve it.
  static decision shed_late(accept_policy& p, time_point /*now*/, const input& /*in*/) noexcept {
    decision d = p.stop_;
    d.shed_accepted = true;
    d.shed = p.shed_for_accepted();
    return d;
  }
  // A completion of a request that the stop cancelled too late: the kernel accepted this client
  // before the cancel reached the request, and nobody else can serve it (shedding it resets a
  // client the listener's next holder would have served). Served if a place is free, else
  // shed; the stop holds.
  static decision serve_late(accept_policy& p, time_point /*now*/, const input& in) noexcept {
    decision d = p.stop_;
    permit place = p.budget_.try_reserve();
    if (place && place.admit(p.config_.peers, in.peer)) {
      *in.out = std::move(place);
      ++p.counters_.accepted;
      return d;
    }
    place.release();
    d.shed_accepted = true;
    d.shed = p.shed_for_accepted();
    return d;
  }
  static decision classify_failure(accept_policy& p, time_point now, const input& in) noexcept {
    return p.failed(now, *in.ec, in.spare_held);
  }
  static decision ready_then_classify(accept_policy& p, time_point now, const input& in) noexcept {
    p.burst_ = 0;
    return p.failed(now, *in.ec, in.spare_held);
  }
  // EAGAIN (the backlog is empty) or EMFILE (another thread took the freed number).
  static decision end_drain(accept_policy& p, time_point now, const input& /*in*/) noexcept {
    return p.drained(now, false);
  }
  // The request waits in the kernel: the backlog was empty, as for EAGAIN.
  static decision queue_empty(accept_policy& p, time_point now, const input& /*in*/) noexcept {
    p.reservation_.release();
    p.state_ = state::waiting;
    p.queue_seen_empty(now);
    if (p.stop_requested_.load(std::memory_order_relaxed)) {
      return p.finish(now, {}, condition::unclassified);
    }
    p.tick(now);
    p.healthy(now);  // the accept got as far as the queue: nothing is exhausted now
    return p.waiting();
  }
  // The decision in force holds; an episode's summary or recovered line may fall due.
  static decision keep(accept_policy& p, time_point now, const input& /*in*/) noexcept {
    p.tick(now);
    return p.current();
  }
  static decision resume_if_room(accept_policy& p, time_point now, const input& /*in*/) noexcept {
    if (p.stop_requested_.load(std::memory_order_relaxed)) {
      return p.finish(now, {}, condition::unclassified);  // the stop comes before the place
    }
    if (!p.budget_.resume_if_room(p.reservation_)) {  // took a place and stopped waiting
      return p.current();
    }
    p.end_pause(now);
    p.burst_ = 0;
    p.generation_ = p.budget_.generation();
    p.state_ = state::accepting;
    return p.accepting();
  }
  // A release frees a descriptor: retry at once, whatever the remaining delay. If the
  // generation did not move, the wake-up was for another loop (a cancelled reservation).
  static decision retry_if_released(accept_policy& p, time_point now, const input& in) noexcept {
    if (p.budget_.generation() == p.generation_) {
      return keep(p, now, in);
    }
    p.stall_start_ = now;  // progress
    return p.resume(now);
  }
  static decision backoff_timer(accept_policy& p, time_point now, const input& /*in*/) noexcept {
    if (p.stop_requested_.load(std::memory_order_relaxed)) {
      return p.finish(now, {}, condition::unclassified);  // asked for before a stall could be declared
    }
    p.tick(now);
    if (p.budget_.generation() != p.generation_) {
      p.stall_start_ = now;  // a release happened that we were not told about: progress
      return p.resume(now);
    }
    if (p.stalled(now)) {
      return p.finish(now, make_error_code(transient::error::stalled), condition::stalled);
    }
    return now < p.deadline_ ? p.current() : p.resume(now);  // early: the pause holds
  }
  static decision stop(accept_policy& p, time_point now, const input& /*in*/) noexcept {
    return p.finish(now, {}, condition::unclassified);
  }
  static decision stay_stopped(accept_policy& p, time_point /*now*/, const input& /*in*/) noexcept { return p.stop_; }
  // No correct driver sends this event in this state: a bug, reported as a stop.
  static decision unexpected(accept_policy& p, time_point now, const input& /*in*/) noexcept {
    return p.finish(now, make_error_code(transient::error::unexpected_event), condition::programming_error);
  }

  static constexpr rule begin_burst_rule{"begin_burst",
                                         "a burst of accepts begins: accept with a place taken (queue), shed at the "
                                         "budget (the other modes), or pause for a release when the budget is full",
                                         &begin_burst};
  static constexpr rule serve_or_shed_rule{
      "serve_or_shed",
      "the connection gets a permit, or is shed (stale: it waited over max_queue_wait; no place, the per-peer cap, "
      "step::shed); then the next accept, or wait after accepts_per_ready",
      &serve_or_shed};
  static constexpr rule ready_then_serve_rule{
      "ready_then_serve",
      "the result implies readiness: a burst begins with this connection, served if a place is free, else shed",
      &ready_then_serve};
  static constexpr rule resume_then_serve_rule{
      "resume_then_serve",
      "a request the pause cancelled too late: the pause ends, the connection is served if a place is free, else shed",
      &resume_then_serve};
  static constexpr rule shed_drained_rule{
      "shed_drained",
      "the drained connection is shed; the drain goes on, or ends after accepts_per_ready (the pause holds)",
      &shed_drained};
  static constexpr rule shed_late_rule{"shed_late", "accepted after the stop: shed, and the stop holds", &shed_late};
  static constexpr rule serve_late_rule{
      "serve_late",
      "a request the stop cancelled too late: the connection is served if a place is free, else shed; the stop "
      "holds",
      &serve_late};
  static constexpr rule classify_failure_rule{
      "classify_failure",
      "classify(): skip or retry (accept again), wait (EAGAIN: the queue is empty, stale shedding ends), back off "
      "and maybe drain (EMFILE...), or fail",
      &classify_failure};
  static constexpr rule ready_then_classify_rule{
      "ready_then_classify",
      "the result implies readiness: a burst begins with this failure, classified as for classify_failure",
      &ready_then_classify};
  static constexpr rule end_drain_rule{
      "end_drain", "the drain ends (the backlog is empty, or another thread took the freed number); the pause holds",
      &end_drain};
  static constexpr rule queue_empty_rule{
      "queue_empty", "as EAGAIN: the reservation goes back, stale shedding ends, wait (accepting was healthy)",
      &queue_empty};
  static constexpr rule keep_rule{
      "keep", "the decision in force holds; an episode's summary or recovered line may fall due", &keep};
  static constexpr rule resume_if_room_rule{"resume_if_room",
                                            "a stop was requested: stop; a place is free: take it and accept; else "
                                            "keep waiting",
                                            &resume_if_room};
  static constexpr rule retry_if_released_rule{
      "retry_if_released",
      "a connection was released since the failure: a descriptor is free, retry at once (or stop, if a stop was "
      "requested); else keep the pause",
      &retry_if_released};
  static constexpr rule backoff_timer_rule{
      "backoff_timer",
      "a stop was requested: stop; the pause ends at its deadline (or after a release), or the watchdog stops a "
      "stall; early: the pause holds",
      &backoff_timer};
  static constexpr rule stop_rule{
      "stop", "stop cleanly (the place reserved goes back, a pause's waiter leaves the budget)", &stop};
  static constexpr rule stay_stopped_rule{"stay_stopped", "the stop (or failure) holds", &stay_stopped};
  static constexpr rule unexpected_rule{
      "unexpected", "a driver's bug: stop with error::unexpected_event (condition programming_error)", &unexpected};

  static constexpr std::array<std::string_view, states> state_names{
      "waiting", "accepting", "shedding", "draining", "paused_capacity", "paused_backoff", "stopped"};
  static constexpr std::array<std::string_view, events> event_names{"on_ready",
                                                                    "on_accepted",
                                                                    "on_accept_failed",
                                                                    "on_accept_result (connection)",
                                                                    "on_accept_result (error)",
                                                                    "on_accept_parked",
                                                                    "on_release",
                                                                    "on_timer",
                                                                    "on_stop"};

  // clang-format off
  static constexpr std::array<std::array<cell, events>, states> table = [] {
    using enum state;
    const std::uint8_t next_accept = to({waiting, accepting, shedding, paused_capacity, stopped});
    const std::uint8_t any = to({waiting, accepting, shedding, draining, paused_capacity, paused_backoff, stopped});
    const std::uint8_t resumed = to({accepting, shedding, paused_capacity});
    const std::uint8_t done = to({stopped});
    const cell begin{&begin_burst_rule, to({accepting, shedding, paused_capacity, stopped})};
    const cell serve{&serve_or_shed_rule, next_accept};
    const cell classify{&classify_failure_rule, any};
    const cell ready_serve{&ready_then_serve_rule, next_accept};
    const cell ready_classify{&ready_then_classify_rule, any};
    const cell empty{&queue_empty_rule, to({waiting, stopped})};
    const cell drained{&shed_drained_rule, to({draining, paused_backoff, stopped})};
    const cell drain_end{&end_drain_rule, to({paused_backoff, stopped})};
    const cell late{&resume_then_serve_rule, next_accept};
    const cell room{&resume_if_room_rule, to({accepting, paused_capacity, stopped})};
    const cell halt{&stop_rule, done};
    const cell shed{&shed_late_rule, done};
    const cell late_served{&serve_late_rule, done};
    const cell still{&stay_stopped_rule, done};
    const cell no{&unexpected_rule, done};
    const auto keep = [](state s) { return cell{&keep_rule, to({s})}; };
    const auto retry = [&](state s) { return cell{&retry_if_released_rule, static_cast<std::uint8_t>(resumed | to({s, stopped}))}; };
    const auto timer = [&](state s) { return cell{&backoff_timer_rule, static_cast<std::uint8_t>(resumed | to({s, stopped}))}; };
    return std::array<std::array<cell, events>, states>{{
        //                 ready  accepted  accept_failed  result_accepted  result_failed   parked     release                 timer                   stop
        /* waiting */      {{begin, no,      no,            ready_serve,     ready_classify, no,        keep(waiting),          keep(waiting),          halt}},
        /* accepting */    {{no,    serve,   classify,      serve,           classify,       empty,     keep(accepting),        no,                     halt}},
        /* shedding */     {{no,    serve,   classify,      serve,           classify,       empty,     keep(shedding),         no,                     halt}},
        /* draining */     {{no,    drained, drain_end,     drained,         drain_end,      drain_end, retry(draining),        timer(draining),        halt}},
        /* paused_capacity */ {{no, no,      no,            late,            no,             no,        room,                   no,                     halt}},
        /* paused_backoff */  {{no, no,      no,            late,            no,             no,        retry(paused_backoff),  timer(paused_backoff),  halt}},
        /* stopped */      {{still, shed,    still,         late_served,     still,          still,     still,                  still,                  still}},
    }};
  }();
  // clang-format on

  // The cell of state S and event E, read at compile time: the rule is a direct call that
  // the compiler may inline, not a call through a pointer read from the table at run time.
  template <event E, state S>
  static decision run(accept_policy& p, time_point now, const input& in) noexcept {
    constexpr cell c = table[static_cast<std::size_t>(S)][static_cast<std::size_t>(E)];
    constexpr run_fn rule = c.what->run;
    decision d = rule(p, now, in);
    if ((c.next >> static_cast<unsigned>(p.state_) & 1U) == 0) {
      d = unexpected(p, now, in);  // a rule left the row: the table and the rules disagree
    }
    return d;
  }

  // Every event's one lookup: its column of the table, by the state the event finds.
  template <event E>
  static decision dispatch(accept_policy& p, time_point now, const input& in) noexcept {
    using enum state;
    switch (p.state_) {
      case waiting: return run<E, waiting>(p, now, in);
      case accepting: return run<E, accepting>(p, now, in);
      case shedding: return run<E, shedding>(p, now, in);
      case draining: return run<E, draining>(p, now, in);
      case paused_capacity: return run<E, paused_capacity>(p, now, in);
      case paused_backoff: return run<E, paused_backoff>(p, now, in);
      case stopped: return run<E, stopped>(p, now, in);
    }
    return unexpected(p, now, in);
  }
};

std::vector<policy_transition> detail::policy_transitions() {
  using rules = accept_policy::rules;
  std::vector<policy_transition> rows;
  for (std::size_t s = 0; s < rules::states; ++s) {
    for (std::size_t e = 0; e < rules::events; ++e) {
      const rules::cell& c = rules::table[s][e];
      std::string next;
      for (std::size_t t = 0; t < rules::states; ++t) {
        if ((c.next >> t & 1U) != 0) {
          next += (next.empty() ? "" : ", ") + std::string(rules::state_names[t]);
        }
      }
      rows.push_back({rules::state_names[s], rules::event_names[e], c.what->name, c.what->summary, std::move(next)});
    }
  }
  return rows;
}

// ---- events ---------------------------------------------------------------------------

decision accept_policy::on_ready(time_point now) noexcept { return rules::dispatch<event::ready>(*this, now, {}); }

decision accept_policy::on_accepted(time_point now, permit& out, peer_key peer,
                                    std::chrono::milliseconds waited) noexcept {
  return rules::dispatch<event::accepted>(*this, now, {.out = &out, .peer = peer, .waited = waited});
}

decision accept_policy::on_accept_failed(time_point now, std::error_code ec, bool spare_held) noexcept {
  return rules::dispatch<event::accept_failed>(*this, now, {.ec = &ec, .spare_held = spare_held});
}

decision accept_policy::on_accept_result(time_point now, permit& out, peer_key peer,
                                         std::chrono::milliseconds waited) noexcept {
  return rules::dispatch<event::result_accepted>(*this, now, {.out = &out, .peer = peer, .waited = waited});
}

decision accept_policy::on_accept_result(time_point now, std::error_code ec, bool spare_held) noexcept {
  return rules::dispatch<event::result_failed>(*this, now, {.ec = &ec, .spare_held = spare_held});
}

decision accept_policy::on_accept_parked(time_point now) noexcept {
  return rules::dispatch<event::parked>(*this, now, {});
}

decision accept_policy::on_release(time_point now) noexcept { return rules::dispatch<event::release>(*this, now, {}); }

decision accept_policy::on_timer(time_point now) noexcept { return rules::dispatch<event::timer>(*this, now, {}); }

decision accept_policy::on_stop(time_point now) noexcept {
  request_stop();
  return rules::dispatch<event::stop>(*this, now, {});
}

// ---- the rules' steps -----------------------------------------------------------------

// An accept gave a connection while the policy takes connections: serve it or shed it.
decision accept_policy::accepted(time_point now, permit& out, peer_key peer,
                                 std::chrono::milliseconds waited) noexcept {
  // Any successful accept is progress: the resource is available again.
  if (log_.degraded()) {  // checked first: building the event's figures costs atomic loads
    tick(now);
    healthy(now);
  }
  ++burst_;
  if (waited > watch_above_) [[unlikely]] {  // the waits are measured: one comparison when they are not
    note_wait(now, waited);
    if (waited > config_.max_queue_wait) {
      return shed_stale(now);
    }
  }

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

// An accept failed while the policy takes connections: what classify() says.
decision accept_policy::failed(time_point now, std::error_code ec, bool spare_held) noexcept {
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
      queue_seen_empty(now);
      return waiting();
    case action::back_off:
      ++counters_.failed[index];
      return begin_drain(enter_backoff(now, v.why, ec), v.why, spare_held);
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

// The connection waited over max_queue_wait: shed it, give its place back, and go on
// accepting (the next one may be stale too, or fresh). Never a pause: a stale connection
// holds no place.
decision accept_policy::shed_stale(time_point now) noexcept {
  reservation_.release();
  ++counters_.shed[static_cast<std::size_t>(shed_reason::queue_wait)];
  ++stale_shed_;
  state_ = state::waiting;
  decision next =
      stop_requested_.load(std::memory_order_relaxed) ? finish(now, {}, condition::unclassified) : begin_accept(now);
  next.shed_accepted = true;
  next.shed = config_.stale_shed;
  return next;
}

// A measured wait: into the histogram; the first stale one begins an episode, a fresh one ends it.
void accept_policy::note_wait(time_point now, std::chrono::milliseconds waited) noexcept {
  counters_.record_queue_wait(waited);
  if (waited <= config_.max_queue_wait) {
    end_stale_episode(now);
    return;
  }
  if (stale_shed_ != 0) {
    return;  // the episode goes on, quietly
  }
  stale_since_ = now;
  policy_event e = base_event();
  e.kind = policy_event_kind::stale_shed;
  e.at = now;
  e.queue_wait = waited;
  e.max_queue_wait = config_.max_queue_wait;
  emit(e);
}

// An accept found the queue empty: no connection accepted later waited longer than since now.
void accept_policy::queue_seen_empty(time_point now) noexcept {
  last_empty_ = now;
  empty_seen_ = true;
  end_stale_episode(now);
}

void accept_policy::end_stale_episode(time_point now) noexcept {
  if (stale_shed_ == 0) {
    return;
  }
  policy_event e = base_event();
  e.kind = policy_event_kind::stale_shed_ended;
  e.at = now;
  e.duration = now - stale_since_;
  e.shed = stale_shed_;
  e.max_queue_wait = config_.max_queue_wait;
  stale_shed_ = 0;
  emit(e);
}

// ---- transitions ----------------------------------------------------------------------

decision accept_policy::begin_accept(time_point now) noexcept {
  // The cap on accepts per ready event: wait, and a level-triggered listener reports again. In
  // queue mode only while a place is free (else pause for a release): a completion driver's
  // accept under wait takes the next connection whatever the budget, and one that finds no
  // place is shed.
  const bool capped = burst_ >= config_.accepts_per_ready;
  if (capped && (config_.shed != shed_mode::queue || budget_.live() < budget_.max_connections())) {
    state_ = state::waiting;
    return waiting();
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
  } else if (capped) {  // a place came free since the look above
    reservation_.release();
    state_ = state::waiting;
    return waiting();
  }
  state_ = state::accepting;
  return accepting();
}

decision accept_policy::accepting() const noexcept { return make(step::accept); }

std::uint32_t accept_policy::batch() const noexcept {
  if (state_ != state::accepting && state_ != state::waiting) {
    return 1;  // one connection at a time: shed, drain, or none (paused, stopped)
  }
  if (config_.shed != shed_mode::queue) {
    return unbounded_batch;  // what the budget cannot take is shed anyway
  }
  // Queue mode: the places free beyond one burst, which the completions in flight when the
  // budget fills may take, so that none of them finds the budget full and is shed.
  const std::uint64_t max = budget_.max_connections();
  const std::uint64_t free = max - std::min(budget_.live(), max);
  const std::uint64_t beyond = free > config_.accepts_per_ready ? free - config_.accepts_per_ready : 1;
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(beyond, unbounded_batch));
}

bool accept_policy::serves_late() const noexcept {
  return state_ == state::stopped && budget_.live() < budget_.max_connections();
}

bool accept_policy::paused() const noexcept {
  return state_ == state::paused_capacity || state_ == state::paused_backoff || state_ == state::draining;
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

// After enter_backoff decided the pause on EMFILE or ENFILE: a drain first, when the shed mode
// sheds and the driver holds its spare descriptor (docs/design.md, "The spare descriptor").
decision accept_policy::begin_drain(decision backing_off, condition why, bool spare_held) noexcept {
  const bool no_descriptor = why == condition::process_fd_limit || why == condition::system_fd_limit;
  if (!no_descriptor || !spare_held || config_.shed == shed_mode::queue || backing_off.next != step::pause_until) {
    return backing_off;
  }
  drain_left_ = config_.accepts_per_ready;
  ++counters_.drains;
  state_ = state::draining;
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
  if (drain_left_ == 0) {
    state_ = state::paused_backoff;  // the pause goes on, with the same deadline
  }
  decision d = stop_requested_.load(std::memory_order_relaxed) ? finish(now, {}, condition::unclassified) : current();
  if (accepted) {
    d.shed_accepted = true;
    d.shed = config_.shed;
  }
  return d;
}

decision accept_policy::resume(time_point now) noexcept {
  if (stop_requested_.load(std::memory_order_relaxed)) {
    return finish(now, {}, condition::unclassified);  // a pause that ends after a stop request ends the loop
  }
  leave_pause(now);
  burst_ = 0;
  return begin_accept(now);
}

void accept_policy::leave_pause(time_point now) noexcept {
  drain_left_ = 0;
  if (paused()) {
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
  end_stale_episode(now);
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
    case state::accepting: return accepting();
    case state::shedding: {
      decision d = make(step::shed);
      d.shed = config_.shed;
      return d;
    }
    case state::paused_capacity: return make(step::pause_for_release);
    case state::draining: {
      decision d = make(step::drain);
      d.until = deadline_;
      d.shed = config_.shed;
      return d;
    }
    case state::paused_backoff: {
      decision d = make(step::pause_until);
      d.until = deadline_;
      return d;
    }
    case state::stopped: return stop_;
  }
  return make(step::wait);
}

policy_health accept_policy::health() const noexcept {
  switch (state_) {
    case state::stopped: return {health_state::stopped, stop_.error, stopped_at_};
    case state::draining:
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
