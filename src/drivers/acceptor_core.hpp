// What the epoll acceptor (acceptor.cpp) and the io_uring acceptor (uring/uring_acceptor.cpp)
// keep and do the same way, written once: one listener's policy, budget, spare descriptor and
// wake-up eventfd; handing an accepted connection to the handler or shedding it as the policy
// says; the timers; stopping, with or without a failure and its diagnosis. A driver derives
// its state from acceptor_core<its state> and gives two steps: apply(decision, now), which
// does what the policy decided with its I/O API, and finish(decision, now), which calls
// conclude() and then gives up its I/O (the listener leaves the epoll set, the ring's accept
// is cancelled).
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "detail/seam.hpp"
#include "transient/detail/throw_error.hpp"
#include "transient/drivers/acceptor.hpp"
#include "transient/drivers/server.hpp"
#include "transient/testing/syscalls.hpp"

namespace transient::detail {

/// Milliseconds from `now` until `when`, rounded up so that a loop never wakes a little early
/// and spins; 0 if it is due.
[[nodiscard]] inline int ms_until(std::chrono::steady_clock::time_point now,
                                  std::chrono::steady_clock::time_point when) noexcept {
  if (when <= now) {
    return 0;
  }
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(when - now).count();
  return static_cast<int>(std::min<std::int64_t>(ms, std::numeric_limits<int>::max()));
}

/// The policy's settings for the listener at `where`: its lines name the listener first, then
/// what the driver adds ("loop 2/3"), and go to stderr unless a sink is given.
[[nodiscard]] inline accept_policy_config labelled(accept_policy_config config, const endpoint& where) {
  config.label = config.label.empty() ? where.to_string() : where.to_string() + " " + config.label;
  return with_default_sink(std::move(config));
}

/// The listener an acceptor owns; throws invalid_argument naming `driver` if it is closed.
[[nodiscard]] inline std::shared_ptr<const listener> owned(std::string_view driver, listener source) {
  if (!source.is_open()) {
    throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                            std::string(driver) + " needs an open listener");
  }
  return std::make_shared<const listener>(std::move(source));
}

/// The checks every acceptor makes first: an open listener and a handler (invalid_argument
/// naming `driver`).
inline void check_acceptor(std::string_view driver, const std::shared_ptr<const listener>& source,
                           const connection_handler& handler) {
  const auto invalid = std::make_error_code(std::errc::invalid_argument);
  if (!source || !source->is_open()) {
    throw std::system_error(invalid, std::string(driver) + " needs an open listener");
  }
  if (!handler) {
    throw std::system_error(invalid, std::string(driver) + " needs a connection handler");
  }
}

/// The state both acceptors share; `Driver` is the driver's state, derived from it (see the
/// file comment). It is shared: the budget's wake-up registry holds it weakly and, while it
/// wakes it, strongly, possibly on another thread. The wake-up eventfd therefore closes with
/// the state, never before, so such a write cannot reach a reused descriptor number.
template <typename Driver>
struct acceptor_core : release_observer {
  /// The clock of every `now`.
  using clock = std::chrono::steady_clock;
  /// A moment on that clock.
  using time_point = clock::time_point;

  acceptor_core(std::shared_ptr<const listener> l, connection_handler h, acceptor_options o)
      : source(std::move(l)),
        where(source->local_endpoint()),
        handler(std::move(h)),
        options(std::move(o)),
        sys(seam_of(options.sys)),
        budget(options.budget ? options.budget : shared_budget::create(options.max_connections)),
        policy(budget->budget(), labelled(options.policy, where)),
        spare(options.spare_fd && options.policy.shed != shed_mode::queue) {
    options.sys = &sys;  // the caller's table need not outlive the constructor
  }

  acceptor_core(const acceptor_core&) = delete;
  acceptor_core& operator=(const acceptor_core&) = delete;
  ~acceptor_core() override = default;

  std::shared_ptr<const listener> source;  // empty once the acceptor has let go (let_go)
  endpoint where;                          // the listener's local endpoint, kept after let_go
  connection_handler handler;
  loop_handler* loop_target = nullptr;  // if set, takes the connections instead of `handler`
  acceptor_options options;
  syscalls sys;                           // a copy of *options.sys (or the real calls), read on every accept
  std::shared_ptr<shared_budget> budget;  // before policy: the policy refers to its budget
  accept_policy policy;
  spare_fd spare;
  std::shared_ptr<const diagnosis_fds> diagnostics;
  unique_fd wake;
  std::atomic<bool> wake_pending{false};    // any thread: a wake-up is written and not yet taken
  std::atomic<bool> stop_requested{false};  // any thread
  bool timed = false;                       // the driver's timer() is due at `until`
  bool done = false;
  bool quiet = false;  // a stop that calls no handler: a failure of the driver's own, the destructor
  time_point until{};
  std::error_code last_accept_error;  // what exhausted us, for a stall diagnosis
  std::uint64_t refusals_failed = 0;
  stop_info result;

  /// Opens the diagnosis descriptors (unless given or not wanted) and the wake-up eventfd;
  /// throws the eventfd's error naming `driver`.
  void open(std::string_view driver) {
    if (options.diagnostics) {
      diagnostics = options.diagnostics;
    } else if (options.open_diagnosis_fds) {
      std::error_code ignored;  // without it the census degrades, and says so
      diagnostics = std::make_shared<const diagnosis_fds>(diagnosis_fds::open(ignored));
    }
    wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake) {
      throw std::system_error(last_error(), std::string(driver) + ": eventfd");
    }
  }

  // ---- any thread, a signal handler -----------------------------------------------------

  /// At most one eventfd write until the loop takes it (see take_wake for why the flag cannot
  /// lose a wake-up).
  void signal() noexcept {
    if (!wake_pending.exchange(true, std::memory_order_acq_rel)) {
      const std::uint64_t one = 1;
      // Fails only if the counter would overflow: then it is readable already.
      [[maybe_unused]] const ssize_t n = ::write(wake.get(), &one, sizeof one);
    }
  }
  void on_permit_released() noexcept override { signal(); }

  /// The first half of stop(): the acceptor stops at its next event. The policy hears it at
  /// once, so that an accept failing on a listener shut down meanwhile is a clean stop.
  void request_stop() noexcept {
    stop_requested.store(true, std::memory_order_release);
    policy.request_stop();
  }

  // ---- the loop thread ------------------------------------------------------------------

  /// Takes a wake-up. The eventfd is read here rather than edge-triggered and never read
  /// (mio's way): an edge is lost for good if the counter ever fills or the loop misses it,
  /// and wake-ups come only while paused, so the read costs nothing on a busy server. Read
  /// first, then clear the flag with an exchange: a signal() in between is either after the
  /// exchange (it writes again: readable again) or before it (the exchange reads its store,
  /// so what it published is visible to the handling that follows).
  void take_wake() noexcept {
    std::uint64_t count = 0;
    [[maybe_unused]] const ssize_t r = ::read(wake.get(), &count, sizeof count);
    wake_pending.exchange(false, std::memory_order_acq_rel);
  }

  /// True (and the acceptor stopped) once stop() was called.
  bool stopping() {
    if (!stop_requested.load(std::memory_order_acquire)) {
      return false;
    }
    if (!done) {
      policy.request_stop();
      driver().apply(policy.on_stop(clock::now()), clock::now());
    }
    return true;
  }

  /// Runs the timer if it fell due by `now` (a pause ends, a quiet period ends, the stall watchdog).
  void timer(time_point now) {
    if (!stopping() && !done && timed && until <= now) {
      driver().apply(policy.on_timer(now), now);
    }
  }

  /// When the timer falls due (time_point::max(): none).
  [[nodiscard]] time_point next_timer() const noexcept { return timed && !done ? until : time_point::max(); }

  /// Milliseconds until next_timer(), rounded up; -1 if there is no timer.
  [[nodiscard]] int timeout_ms(time_point now) const noexcept {
    const time_point when = next_timer();
    return when == time_point::max() ? -1 : ms_until(now, when);
  }

  /// True if each accepted client's address is read: asked for, or needed by a per-peer cap.
  [[nodiscard]] bool reads_peer_addresses() const noexcept {
    return options.peer_addresses || options.policy.peers != nullptr;
  }

  /// Keeps an accept's error for a stall diagnosis (an empty queue exhausts nothing). The
  /// system's EAGAIN, which ends nearly every burst, is told apart first: matching the
  /// condition asks both categories, through calls that cost more than the rest of the event.
  void note_accept_error(const std::error_code& ec) noexcept {
    const bool system_eagain = ec.value() == EAGAIN && ec.category() == std::system_category();
    if (!system_eagain && ec != condition::would_block) {
      last_accept_error = ec;
    }
  }

  /// Reports an accepted connection and its wait in the accept queue (the kit's queue_wait:
  /// nothing measured without max_queue_wait) to the policy (on_accepted, or for a completion
  /// driver `completed`, on_accept_result), then sheds it (as the decision's shed mode says) or
  /// hands it with its permit to the loop handler, if set, or the handler. Returns the policy's
  /// decision.
  decision deliver(time_point now, unique_fd fd, const endpoint& peer, peer_key key, bool completed = false) {
    permit place;
    const std::chrono::milliseconds waited = queue_wait(policy, fd.get(), sys);
    const decision d =
        completed ? policy.on_accept_result(now, place, key, waited) : policy.on_accepted(now, place, key, waited);
    if (d.shed_accepted) {
      if (!shed(std::move(fd), peer, d.shed, options.refuse, sys)) {
        ++refusals_failed;
      }
    } else if (loop_target != nullptr) {
      loop_target->on_connection(connection(std::move(fd), std::move(place), peer, waited));
    } else {
      handler(connection(std::move(fd), std::move(place), peer, waited));
    }
    return d;
  }

  /// The first half of the driver's finish(): false if the acceptor was done already;
  /// otherwise marks it done, leaves the budget's wake-up registry, gives the spare descriptor back and,
  /// for a fail decision, writes the result and its diagnosis.
  bool conclude(const decision& d) {
    if (done) {
      return false;
    }
    done = true;
    timed = false;
    budget->remove(this);
    spare.clear();
    if (d.next == step::fail) {
      const std::string state = d.error == condition::not_listening ? verify(*source).message : std::string();
      const diagnosis_fds none;
      result = stop_info_of(policy, d,
                            failure_context_of(where.to_string(), state, last_accept_error, budget->budget(),
                                               options.policy.stall_timeout, source->native_handle()),
                            diagnostics ? *diagnostics : none);
    }
    return true;
  }

  /// Stops the acceptor for a reason of the driver's own (its I/O failed, the handler threw)
  /// and reports `info`. Throws nothing: a stopping acceptor calls no handler, and what else
  /// fails on the way out is said by `info` already.
  void stop_with(stop_info info) noexcept {
    if (done) {
      return;
    }
    quiet = true;
    try {
      policy.request_stop();
      driver().finish(policy.on_stop(clock::now()), clock::now());
    } catch (...) {
    }
    result = std::move(info);
  }

  /// The last step of the driver's finish(): a stopped acceptor lets go of its listener, so
  /// that the socket closes with its last holder. A server that drains closes it at once that
  /// way: clients still arriving are refused and retry elsewhere instead of waiting in a queue
  /// nobody accepts from, while another holder of the same socket (systemd's socket unit, a
  /// successor) keeps it listening, queue and all.
  void let_go() noexcept { source.reset(); }

  /// stop_with() for a failed system call `what`.
  void fail(const std::error_code& ec, std::string_view what) noexcept {
    stop_with({stop_reason_of(ec), ec, std::string(what) + " failed: " + ec.message()});
  }

  /// The handler threw: stop, and let the exception go on to the user's loop.
  void abandon() noexcept {
    stop_with({stop_reason::other_error, std::make_error_code(std::errc::operation_canceled),
               std::string(handler_threw_text())});
  }

  /// Runs `step` (an event's handling, which may call the handler); an exception stops the
  /// acceptor (abandon()) and propagates.
  template <typename Step>
  void guarded(Step&& step) {
    try {
      std::forward<Step>(step)();
    } catch (...) {
      abandon();
      throw;
    }
  }

  /// The policy's counters, with the driver's own.
  [[nodiscard]] policy_metrics metrics() const noexcept {
    policy_metrics m = policy.metrics();
    m.refusals_failed += refusals_failed;
    return m;
  }

 private:
  Driver& driver() noexcept { return static_cast<Driver&>(*this); }
};

}  // namespace transient::detail
