// transient/detail/asio_adapter.hpp: the Asio adapter, written once as templates over a
// flavour of Asio. Not included directly: <transient/adapters/asio.hpp> (standalone Asio) and
// <transient/adapters/boost_asio.hpp> (Boost.Asio) each define a flavour and name its
// instances. The design is in docs/design.md ("The Asio adapter").
//
// A flavour F is a traits type naming what the adapter uses of one Asio:
//   F::name                       the adapter's namespace as text ("transient::asio"), for messages
//   F::has_cancellation           per-operation cancellation (cancellation slots) exists
//   F::has_co_await               C++20 coroutines (awaitable, use_awaitable) exist
//   F::error_code                 the error code of its operations
//   F::executor (any_io_executor), F::strand (over it), F::steady_timer, F::socket,
//   F::endpoint, F::enable_connection_aborted, F::associated_executor_t<T, E>
//   F::cancellation_signal        with cancellation that type, else asio_no_cancellation
//   F::cancellation_type          with cancellation
//   F::awaitable<T>, F::use_awaitable_t    with coroutines
//   F::operation_aborted          the error::operation_aborted enumerator
//   static functions forwarding to the namespace's own: post, dispatch, bind_executor,
//   track_work (prefer outstanding_work.tracked), associated_executor, cancellation_slot_of,
//   bind_cancellation_slot, initiate<Token, Signature> (async_initiate).
// This header includes no Asio header: each flavour's public header includes its Asio's.
#pragma once

#include <fcntl.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>

#include "transient/detail/driver_kit.hpp"
#include "transient/diagnosis/diagnostics.hpp"
#include "transient/errors/classify.hpp"
#include "transient/policy/accept_policy.hpp"
#include "transient/policy/budget.hpp"
#include "transient/policy/events.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace transient::detail {

/// The cancellation signal of a flavour without per-operation cancellation (never used).
struct asio_no_cancellation {};

/// One accepted connection, as the loop hands it to the handler: the socket, the permit that
/// holds its place in the budget, and the peer's address. Keep the permit as long as the
/// connection lasts (the budget counts it); it keeps the budget alive, so it may outlive the
/// loop, and the socket and the permit may be moved apart and dropped in any order.
template <typename F>
struct asio_accepted_socket {
  permit place;               ///< The connection's place in the budget.
  typename F::socket socket;  ///< The connection (FD_CLOEXEC set unless disabled).
  typename F::endpoint peer;  ///< The client's address and port.
  /// How long it waited in the accept queue (queue_wait_of), measured only when the policy
  /// bounds the wait (accept_policy_config::max_queue_wait > 0); 0 otherwise.
  std::chrono::milliseconds queue_wait{};
};

/// Writes a refusal (e.g. "HTTP/1.1 503 ...") on a connection shed with shed_mode::respond.
/// The socket is non-blocking and closed right after: write what fits, do not wait. An
/// exception it throws is caught, as for every driver (transient::refusal_writer): the
/// connection is shed anyway and counted in policy_metrics::refusals_failed.
template <typename F>
using asio_refusal_writer = std::function<void(typename F::socket& socket, const typename F::endpoint& peer)>;

/// Settings of an accept loop.
template <typename F>
struct asio_loop_options {
  /// The budget to draw from (share one between loops). Empty: a budget of max_connections.
  std::shared_ptr<shared_budget> budget;
  /// The size of the budget made when `budget` is empty. 0: default_max_connections().
  std::uint64_t max_connections = 0;
  /// The accept policy's settings (backoff, stall timeout, shed mode, per-peer cap, event sink...).
  accept_policy_config policy{};
  /// Called for connections shed with shed_mode::respond (required for that mode).
  asio_refusal_writer<F> refuse{};
  /// The executor of each accepted socket (e.g. [&] { return asio::make_strand(ioc); }).
  /// Empty: the acceptor's executor.
  std::function<typename F::executor()> socket_executor{};
  /// While paused, how often the loop checks that the acceptor is still open (closing it is
  /// a clean stop, but a paused loop has no operation on it to be cancelled). 0: never.
  /// At most longest_setting (accept_policy.hpp); the loop throws invalid_argument otherwise.
  std::chrono::milliseconds close_check = std::chrono::milliseconds(500);
  /// Keep /proc/self/fd and /proc/sys/fs/file-nr open (two descriptors) so that a stall
  /// diagnosis can be written when no descriptor is free.
  bool diagnosis_fds = true;
  /// Set FD_CLOEXEC on accepted sockets (Asio accepts with accept(2), without SOCK_CLOEXEC;
  /// a fork+exec on another thread in between can still inherit one).
  bool cloexec = true;
  /// Keep a spare descriptor to shed waiting clients under EMFILE, when the shed mode is not
  /// `queue` and the acceptor can accept synchronously (docs/design.md, "The spare descriptor").
  bool spare_fd = true;
};

/// How an accept loop ended (the operation's second completion argument).
struct asio_loop_report {
  std::error_code error;                 ///< Empty for a clean stop; else why (compare with transient::condition).
  std::string diagnosis;                 ///< For a failure: what was found and what to change.
  policy_metrics metrics;                ///< The policy's counters at the end.
  std::exception_ptr handler_exception;  ///< What the connection handler threw, if it did (it stops the loop).
};

// The state of one running loop, and how it maps the policy's decisions to Asio operations.
// A completion driver (accept_policy.hpp): accept and shed start acceptor.async_accept, whose
// completion is on_accept_result; wait starts acceptor.async_wait(wait_read), whose completion
// is the kernel's readiness (on_ready), so every accept starts with the place the policy took
// for it. The pauses run a steady_timer (for a capacity pause, a check that the acceptor is
// still open); a permit release posts released(); a drain accepts synchronously. At most one
// operation of ours is outstanding at a time (an accept, a wait, or the timer), plus posted
// wake-ups and stop requests. All state
// lives on one strand over the acceptor's executor. Owned by std::shared_ptr: each pending
// completion holds a reference, so the state lives as long as something of the loop is pending.
template <typename F, typename Acceptor, typename Handler, typename Completion>
class asio_loop final : public release_observer,
                        public std::enable_shared_from_this<asio_loop<F, Acceptor, Handler, Completion>> {
  using clock = std::chrono::steady_clock;
  using error_code = typename F::error_code;
  using socket_type = typename F::socket;
  using strand_type = typename F::strand;
  using completion_executor = typename F::template associated_executor_t<Completion, strand_type>;
  // Outstanding work on the completion's executor while the loop runs (as Asio's own
  // operations do), so that its io_context does not run out of work under us.
  using work_executor = decltype(F::track_work(std::declval<completion_executor>()));

  enum class pending : unsigned char { none, accept, wait, timer };

 public:
  asio_loop(Acceptor& acceptor, Handler handler, asio_loop_options<F> options, Completion completion)
      : acceptor_(acceptor),
        shared_(options.budget ? std::move(options.budget) : shared_budget::create(options.max_connections)),
        strand_(typename F::executor(acceptor.get_executor())),
        timer_(strand_),
        policy_(shared_->budget(), with_default_sink(options.policy)),
        handler_(std::move(handler)),
        completion_(std::move(completion)),
        executor_(F::associated_executor(completion_, strand_)),
        work_(F::track_work(executor_)),
        options_(std::move(options)) {
    if (!setting_in_range(options_.close_check)) {
      throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                              "accept loop: close_check must be from 0 to longest_setting");
    }
    if (options_.diagnosis_fds) {
      std::error_code ignored;  // without it the census degrades (and says so)
      diagnosis_fds_ = diagnosis_fds::open(ignored);
    }
    spare_fd_ = spare_fd(options_.spare_fd && options_.policy.shed != shed_mode::queue && can_drain);
    shared_->check_fit_once(options_.policy.sink);
  }
  asio_loop(const asio_loop&) = delete;
  asio_loop& operator=(const asio_loop&) = delete;
  ~asio_loop() override { shared_->remove(this); }

  /// Starts the loop: never completes inline (the first step is posted to the strand).
  void start() {
    // Asio retries accept on ECONNABORTED and EPROTO internally, out of sight, unless this
    // is set; with it set they reach the policy, which skips them (docs/design.md: the pending
    // connection died, the listener is fine) and counts them.
    open_at_start_ = acceptor_.is_open();
    error_code ignored;  // a closed acceptor fails the first step instead
    acceptor_.set_option(typename F::enable_connection_aborted(true), ignored);
    shared_->add(this, this->weak_from_this());
    if constexpr (F::has_cancellation) {
      auto slot = F::cancellation_slot_of(completion_);
      if (slot.is_connected()) {
        slot.template emplace<cancel_handler>(this->weak_from_this());
      }
    }
    F::post(strand_, [self = this->shared_from_this()] { self->begin(); });
  }

  void on_permit_released() noexcept override {
    if (wake_posted_.exchange(true, std::memory_order_acq_rel)) {
      return;  // a wake-up is already on its way; it will see this release too
    }
    try {
      F::post(strand_, [self = this->shared_from_this()] { self->released(); });
    } catch (...) {
      // No memory for the wake-up (or the context is gone): the pause timer still fires.
      wake_posted_.store(false, std::memory_order_release);
    }
  }

 private:
  // Installed in the completion handler's cancellation slot (co_spawn with a cancellation
  // signal, bind_cancellation_slot...). Runs wherever the signal is emitted.
  struct cancel_handler {
    explicit cancel_handler(std::weak_ptr<asio_loop> l) noexcept : loop(std::move(l)) {}
    std::weak_ptr<asio_loop> loop;
    void operator()(typename F::cancellation_type type) const {
      if (type == F::cancellation_type::none) {
        return;
      }
      if (auto self = loop.lock()) {
        self->request_stop();
      }
    }
  };

  // Any thread: the policy's flag is atomic; the rest happens on the strand.
  void request_stop() {
    stop_requested_.store(true, std::memory_order_release);
    policy_.request_stop();
    F::post(strand_, [self = this->shared_from_this()] { self->cancel_pending(); });
  }

  // Cancels our outstanding operation; its completion (operation_aborted) ends the loop.
  void cancel_pending() {
    if (done_) {
      return;
    }
    switch (pending_) {
      case pending::accept:
      case pending::wait: accept_cancel_.emit(F::cancellation_type::terminal); break;
      case pending::timer: timer_.cancel(); break;
      case pending::none: break;
    }
  }

  [[nodiscard]] bool stopping() const noexcept { return stop_requested_.load(std::memory_order_acquire); }

  void begin() {
    const auto now = clock::now();
    if (stopping()) {
      apply(policy_.on_stop(now));
    } else if (!acceptor_.is_open() && open_at_start_) {
      policy_.request_stop();  // closed right after the start: a clean stop
      apply(policy_.on_stop(now));
    } else {
      // wait: for readiness. On an acceptor never opened the wait fails, and so does the
      // accept that reports it (EBADF), a bug the policy fails the loop for.
      apply(policy_.current());
    }
  }

  // The listener is readable (the kernel says so), or the wait failed.
  void readable(const error_code& ec) {
    pending_ = pending::none;
    if (done_) {
      return;
    }
    const auto now = clock::now();
    if (stopping() || ec == F::operation_aborted || (open_at_start_ && !acceptor_.is_open())) {
      policy_.request_stop();
      apply(policy_.on_stop(now));
    } else if (ec) {
      start_accept();  // the accept reports the listener's error, which the policy classifies
    } else {
      apply(policy_.on_ready(now));
    }
  }

  void accepted(const error_code& ec, socket_type socket) {
    pending_ = pending::none;
    if (done_) {
      return;
    }
    const auto now = clock::now();
    // operation_aborted: our own cancellation, acceptor.cancel() or acceptor.close(); all
    // mean "stop". A connection accepted just as a stop was requested is closed unserved.
    if (stopping() || ec == F::operation_aborted || (open_at_start_ && !acceptor_.is_open())) {
      error_code ignored;
      socket.close(ignored);
      policy_.request_stop();
      apply(policy_.on_stop(now));
      return;
    }
    if (ec) {
      last_error_ = ec;
      apply(policy_.on_accept_result(now, ec, spare_fd_.held()));
      return;
    }
    if (options_.cloexec) {
      ::fcntl(socket.native_handle(), F_SETFD, FD_CLOEXEC);
    }
    permit place;
    // Asio's accept never reports the queue empty (it waits inside the operation), so the
    // policy has no bound from it: with max_queue_wait set, each wait is one getsockopt.
    const std::chrono::milliseconds waited = queue_wait(policy_, socket.native_handle());
    const decision d = policy_.on_accept_result(now, place, peer_key_of(peer_.data(), peer_.size()), waited);
    if (d.shed_accepted) {
      shed(socket, d.shed);
    } else if (!serve(std::move(place), std::move(socket), waited, now)) {
      return;
    }
    apply(d);
  }

  // Hands a connection to the handler; false if it threw, which stops the loop.
  bool serve(permit place, socket_type socket, std::chrono::milliseconds waited, clock::time_point now) {
    try {
      handler_(asio_accepted_socket<F>{std::move(place), std::move(socket), peer_, waited});
      return true;
    } catch (...) {
      exception_ = std::current_exception();
      policy_.request_stop();
      apply(policy_.on_stop(now));
      return false;
    }
  }

  void timer_fired(std::uint64_t sequence) {
    if (done_ || sequence != timer_sequence_) {
      return;  // a timer we cancelled after a release resumed the loop
    }
    pending_ = pending::none;
    const auto now = clock::now();
    if (stopping() || !acceptor_.is_open()) {
      policy_.request_stop();
      apply(policy_.on_stop(now));
      return;
    }
    // A capacity pause has no deadline: the timer is the close check, and asking on_release
    // also recovers a wake-up that could not be posted.
    const bool capacity = policy_.current().next == step::pause_for_release;
    apply(capacity ? policy_.on_release(now) : policy_.on_timer(now));
  }

  void released() {
    wake_posted_.store(false, std::memory_order_release);
    if (done_ || pending_ != pending::timer) {
      return;  // not paused: the policy is not waiting for a release
    }
    const decision d = policy_.on_release(clock::now());
    if (d.next == step::pause_for_release || d.next == step::pause_until) {
      return;  // the release was for another loop, or there is still no room: keep waiting
    }
    ++timer_sequence_;  // the cancelled wait completes later and is ignored
    timer_.cancel();
    pending_ = pending::none;
    apply(d);
  }

  void apply(const decision& d) {
    const auto now = clock::now();
    if (d.next != step::drain) {
      spare_fd_.take();  // a no-op unless a drain gave it up or another thread took its number
    }
    switch (d.next) {
      case step::drain: drain(d); return;
      case step::accept:
      case step::shed: start_accept(); return;
      case step::wait: start_wait(); return;
      case step::pause_for_release: arm_timer(close_check_after(now, clock::time_point::max())); return;
      case step::pause_until: arm_timer(close_check_after(now, d.until)); return;
      case step::stop:
      case step::fail: finish(d); return;
    }
  }

  [[nodiscard]] clock::time_point close_check_after(clock::time_point now, clock::time_point until) const {
    if (options_.close_check.count() <= 0 || until - now <= options_.close_check) {
      return until;
    }
    return now + options_.close_check;
  }

  void start_wait() {
    pending_ = pending::wait;
    auto on_readable =
        F::bind_executor(strand_, [self = this->shared_from_this()](const error_code& ec) { self->readable(ec); });
    if constexpr (F::has_cancellation) {
      acceptor_.async_wait(Acceptor::wait_read,
                           F::bind_cancellation_slot(accept_cancel_.slot(), std::move(on_readable)));
    } else {
      acceptor_.async_wait(Acceptor::wait_read, std::move(on_readable));
    }
  }

  void start_accept() {
    pending_ = pending::accept;
    auto on_accepted =
        F::bind_executor(strand_, [self = this->shared_from_this()](const error_code& ec, socket_type socket) {
          self->accepted(ec, std::move(socket));
        });
    auto executor =
        options_.socket_executor ? options_.socket_executor() : typename F::executor(acceptor_.get_executor());
    if constexpr (F::has_cancellation) {
      // Per-operation cancellation (reactor sockets support it): stopping cancels this accept
      // only, not other operations the user may have on the acceptor.
      acceptor_.async_accept(executor, peer_, F::bind_cancellation_slot(accept_cancel_.slot(), std::move(on_accepted)));
    } else {
      acceptor_.async_accept(executor, peer_, std::move(on_accepted));
    }
  }

  void arm_timer(clock::time_point when) {
    pending_ = pending::timer;
    const std::uint64_t sequence = ++timer_sequence_;
    timer_.expires_at(when);
    timer_.async_wait(F::bind_executor(strand_, [self = this->shared_from_this(), sequence](const error_code& /*ec*/) {
      self->timer_fired(sequence);
    }));
  }

  void shed(socket_type& socket, shed_mode mode) {
    error_code ignored;
    const auto write = [&] {
      socket.non_blocking(true, ignored);  // the refusal writes what fits and does not wait
      options_.refuse(socket, peer_);
    };
    // std::ref: the std::function holds a reference, which fits in it without an allocation.
    if (!shed_as(mode, socket.native_handle(), options_.refuse ? std::function<void()>(std::ref(write)) : nullptr)) {
      ++refusals_failed_;  // the kit's rule: the connection is shed anyway
    }
    socket.close(ignored);
  }

  // Whether the acceptor can accept synchronously without blocking, which a drain needs.
  static constexpr bool can_drain = requires(Acceptor & a, socket_type& s, typename F::endpoint& e, error_code& ec) {
    a.non_blocking(true, ec);
    a.accept(s, e, ec);
  };

  // The policy's drain (descriptors exhausted, the spare held): give the spare up and accept
  // synchronously while the policy says so, reporting each result. Non-blocking, so an empty
  // backlog ends it (would_block) instead of blocking the strand; the acceptor's own mode is
  // restored after.
  void drain(decision d) {
    if constexpr (can_drain) {
      error_code ec;
      const bool was_non_blocking = acceptor_.non_blocking();
      acceptor_.non_blocking(true, ec);
      spare_fd_.give_up();
      d = drain_while_asked(d, ec);
      error_code ignored;
      acceptor_.non_blocking(was_non_blocking, ignored);
    } else {
      d = policy_.on_accept_failed(clock::now(), std::make_error_code(std::errc::operation_not_supported));
    }
    apply(d);
  }

  // The drain's accepts, each shed (a drained connection is never served); `ec` is the
  // outcome of making the acceptor non-blocking, which ends the drain if it failed.
  decision drain_while_asked(decision d, error_code& ec) {
    const auto now = clock::now();
    while (!ec && d.next == step::drain) {
      socket_type socket(acceptor_.get_executor());
      acceptor_.accept(socket, peer_, ec);
      if (ec) {
        d = policy_.on_accept_failed(now, ec);
        break;
      }
      permit place;
      d = policy_.on_accepted(now, place, peer_key_of(peer_.data(), peer_.size()));
      shed(socket, d.shed_accepted ? d.shed : shed_mode::close);
    }
    return d.next == step::drain ? policy_.on_accept_failed(now, ec) : d;
  }

  [[nodiscard]] failure_context context_of_failure() const {
    error_code ignored;
    const auto where = acceptor_.local_endpoint(ignored);
    return failure_context_of(where.address().to_string() + ":" + std::to_string(where.port()),
                              "the acceptor is not listening (accept: EINVAL; call listen() before the loop)",
                              last_error_, shared_->budget(), options_.policy.stall_timeout, acceptor_.native_handle());
  }

  [[nodiscard]] asio_loop_report report_of(const decision& d) {
    asio_loop_report report;
    report.error = d.error;
    if (d.next == step::fail) {
      report.diagnosis = stop_info_of(policy_, d, context_of_failure(), diagnosis_fds_).diagnosis;
    }
    if (exception_) {
      report.error = std::make_error_code(std::errc::operation_canceled);
      report.diagnosis = std::string(handler_threw_text());
      report.handler_exception = exception_;
    }
    report.metrics = policy_.metrics();
    report.metrics.refusals_failed += refusals_failed_;
    return report;
  }

  void finish(const decision& d) {
    done_ = true;
    pending_ = pending::none;
    shared_->remove(this);
    if constexpr (F::has_cancellation) {
      F::cancellation_slot_of(completion_).clear();
    }
    asio_loop_report report = report_of(d);
    const std::error_code ec = report.error;
    // The completion may run inline (dispatch on its own executor) and destroy the
    // acceptor: nothing after this line touches it.
    F::dispatch(executor_, [completion = std::move(completion_), work = std::move(work_), ec,
                            report = std::move(report)]() mutable { std::move(completion)(ec, std::move(report)); });
  }

  // The members below are used on the strand only, except where noted.
  Acceptor& acceptor_;
  std::shared_ptr<shared_budget> shared_;  // before policy_: the policy refers to its budget
  strand_type strand_;
  typename F::steady_timer timer_;
  accept_policy policy_;
  Handler handler_;
  Completion completion_;
  completion_executor executor_;
  work_executor work_;
  asio_loop_options<F> options_;
  diagnosis_fds diagnosis_fds_;  // kept open to write a stall's diagnosis with no descriptor free
  spare_fd spare_fd_;            // for the policy's drains (asio_loop_options::spare_fd)
  std::uint64_t refusals_failed_ = 0;
  [[no_unique_address]] typename F::cancellation_signal accept_cancel_;
  typename F::endpoint peer_;                // filled by the accept in flight
  std::atomic<bool> wake_posted_{false};     // any thread
  std::atomic<bool> stop_requested_{false};  // any thread
  pending pending_ = pending::none;
  std::uint64_t timer_sequence_ = 0;
  bool done_ = false;
  bool open_at_start_ = false;
  std::error_code last_error_;  // what exhausted us, for the diagnosis
  std::exception_ptr exception_;
};

// The initiation of async_accept_loop: makes the loop's state and starts it.
template <typename F, typename Acceptor>
struct asio_initiate_loop {
  Acceptor* acceptor;

  template <typename Completion, typename Handler>
  void operator()(Completion&& completion, Handler&& handler, asio_loop_options<F> options) const {
    using state = asio_loop<F, Acceptor, std::decay_t<Handler>, std::decay_t<Completion>>;
    auto loop = std::make_shared<state>(*acceptor, std::forward<Handler>(handler), std::move(options),
                                        std::forward<Completion>(completion));
    loop->start();
  }
};

/// The completion form of the accept loop (async_accept_loop in each flavour's namespace).
template <typename F>
struct asio_async_accept_loop_fn {
  /// Runs the accept policy over `acceptor` (open and listening) until it stops, calling
  /// `handler(accepted_socket)` on the loop's strand for each connection. Completes with
  /// (std::error_code, loop_report): an empty code for a clean stop (cancellation through
  /// the completion's cancellation slot, acceptor closed or cancelled), else the failure
  /// (compare with transient::condition: stalled, not_listening, programming_error...) with
  /// a diagnosis. Any completion token works (a handler, use_future, deferred...).
  ///
  /// Contract:
  ///   - The loop sets enable_connection_aborted on the acceptor, so that ECONNABORTED and
  ///     EPROTO reach the policy instead of being retried inside Asio.
  ///   - The loop's work and the handler's calls run on a strand over the acceptor's
  ///     executor. Touch the acceptor yourself (to close it) only through a strand executor
  ///     given to the acceptor (make_strand(ioc)).
  ///   - The handler must not block; an exception it throws stops the loop
  ///     (loop_report::handler_exception).
  ///   - An idle loop holds one place of the budget, for its accept in flight.
  ///   - A paused loop has no operation to cancel: it notices a closed acceptor within
  ///     loop_options::close_check. Cancellation is immediate.
  ///   - `acceptor` needs get_executor(), is_open(), set_option(), local_endpoint(ec) and
  ///     async_wait(wait_read, handler), async_accept(executor, endpoint&, handler);
  ///     non_blocking() and accept(socket,
  ///     endpoint&, ec), where it has them, serve the spare descriptor's drain.
  /// Throws std::system_error (invalid_argument) at once for an invalid policy configuration
  /// or shed_mode::respond without `refuse`, and the error of default_max_connections() when
  /// no budget size is given and RLIMIT_NOFILE leaves no room.
  template <typename Acceptor, typename Handler, typename CompletionToken>
  auto operator()(Acceptor& acceptor, Handler&& handler, asio_loop_options<F> options, CompletionToken&& token) const {
    check_driver_options(F::name, options.policy, static_cast<bool>(options.refuse));
    return F::template initiate<CompletionToken, void(std::error_code, asio_loop_report)>(
        asio_initiate_loop<F, Acceptor>{&acceptor}, token, std::forward<Handler>(handler), std::move(options));
  }
};

// A completion of the loop that passes (error, report) on to `done` as one tuple, on `executor`.
template <typename F, typename Executor, typename Done>
auto asio_tuple_completion(const Executor& executor, Done done) {
  return F::bind_executor(executor, [done = std::move(done)](std::error_code ec, asio_loop_report report) mutable {
    std::move(done)(std::make_tuple(ec, std::move(report)));
  });
}

// The loop as an awaitable of one tuple (error, report): use_awaitable would throw on the
// error and lose the report, and redirect_error wants Boost's error code from Boost.Asio.
// The coroutine's executor and, where the Asio has them, its cancellation slot pass through
// (both read before `done` moves into the completion).
template <typename F, typename Acceptor, typename Handler>
typename F::template awaitable<std::tuple<std::error_code, asio_loop_report>> asio_await_loop(
    Acceptor& acceptor, Handler handler, asio_loop_options<F> options) {
  typename F::use_awaitable_t token;
  return F::template initiate<typename F::use_awaitable_t, void(std::tuple<std::error_code, asio_loop_report>)>(
      [&acceptor](auto done, Handler h, asio_loop_options<F> o) {
        const auto executor = F::associated_executor(done);
        if constexpr (F::has_cancellation) {
          const auto slot = F::cancellation_slot_of(done);
          asio_async_accept_loop_fn<F>{}(
              acceptor, std::move(h), std::move(o),
              F::bind_cancellation_slot(slot, asio_tuple_completion<F>(executor, std::move(done))));
        } else {
          asio_async_accept_loop_fn<F>{}(acceptor, std::move(h), std::move(o),
                                         asio_tuple_completion<F>(executor, std::move(done)));
        }
      },
      token, std::move(handler), std::move(options));
}

// The coroutine form's body: the report of a clean stop, else throws (or rethrows what the
// handler threw).
template <typename F, typename Acceptor, typename Handler>
typename F::template awaitable<asio_loop_report> asio_accept_loop_or_throw(Acceptor& acceptor, Handler handler,
                                                                           asio_loop_options<F> options) {
  auto [ec, report] = co_await asio_await_loop<F>(acceptor, std::move(handler), std::move(options));
  if (report.handler_exception) {
    std::rethrow_exception(report.handler_exception);
  }
  if (ec) {
    throw std::system_error(ec, report.diagnosis.empty() ? std::string(F::name) + "::accept_loop" : report.diagnosis);
  }
  co_return report;
}

// The coroutine form's body without exceptions: the report, and the error in `ec`.
template <typename F, typename Acceptor, typename Handler>
typename F::template awaitable<asio_loop_report> asio_accept_loop_into(Acceptor& acceptor, Handler handler,
                                                                       asio_loop_options<F> options,
                                                                       std::error_code& ec) {
  auto [result, report] = co_await asio_await_loop<F>(acceptor, std::move(handler), std::move(options));
  ec = result;
  co_return report;
}

/// The coroutine form of the accept loop (accept_loop in each flavour's namespace), where
/// the flavour has C++20 coroutines.
template <typename F>
struct asio_accept_loop_fn {
  /// `co_await accept_loop(acceptor, handler, options)`: the loop of async_accept_loop (read
  /// its contract). Returns the report of a clean stop; throws std::system_error(error,
  /// diagnosis) for a failure, and rethrows what the handler threw. Cancel it through
  /// co_spawn's cancellation slot (where the Asio has per-operation cancellation), or close
  /// the acceptor.
  template <typename Acceptor, typename Handler>
  requires F::has_co_await auto operator()(Acceptor& acceptor, Handler handler,
                                           asio_loop_options<F> options = {}) const {
    return asio_accept_loop_or_throw<F>(acceptor, std::move(handler), std::move(options));
  }

  /// The same without exceptions for a failure: sets `ec` (cleared for a clean stop) and
  /// returns the report. `ec` must outlive the co_await. What the handler threw is in
  /// loop_report::handler_exception (and `ec` is operation_canceled).
  template <typename Acceptor, typename Handler>
  requires F::has_co_await auto operator()(Acceptor& acceptor, Handler handler, asio_loop_options<F> options,
                                           std::error_code& ec) const {
    return asio_accept_loop_into<F>(acceptor, std::move(handler), std::move(options), ec);
  }
};

}  // namespace transient::detail
