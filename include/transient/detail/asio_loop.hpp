// transient/detail/asio_loop.hpp: the state of one Asio accept loop, and how it maps the
// accept policy's decisions to Asio operations. Written once for both flavours of Asio:
// <transient/asio.hpp> and <transient/boost_asio.hpp> include it once each, with the macros
// of asio_flavour_types.hpp defined and also
//   TRANSIENT_ASIO_HAS_CANCELLATION  1 where the Asio has per-operation cancellation
//                                    (cancellation slots: Asio 1.19+, Boost 1.77+), else 0
// and that Asio's headers included. No include guard on purpose (one copy per flavour).
//
// A completion driver (accept_policy.hpp): accept, shed and wait start acceptor.async_accept
// (Asio tries accept(2) at once and, on EAGAIN, waits for readiness inside the same
// operation), wait after a turn given to the other handlers; its completion is
// on_accept_result, which implies readiness. The pauses run a steady_timer (on_timer, or
// for a capacity pause a check that the acceptor is still open), a permit release posts
// on_release; a drain accepts synchronously (on_accepted, on_accept_failed). What each state
// expects is the policy's table (docs/acceptor.md).
//
// At most one operation of ours is outstanding at a time (an accept, the timer, or a posted
// turn), plus posted release wake-ups and stop requests. All state lives on one strand
// over the acceptor's executor, so an io_context run by several threads is safe.
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
#include <utility>

#include "transient/detail/driver_kit.hpp"
#include "transient/diagnosis/diagnostics.hpp"
#include "transient/errors/classify.hpp"
#include "transient/policy/accept_policy.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace transient::TRANSIENT_ASIO_FLAVOUR {

namespace detail {

/// The state of one running loop. Owned by std::shared_ptr: each outstanding operation's
/// completion handler holds a reference, so the state lives exactly as long as something
/// of the loop is pending.
template <typename Acceptor, typename Handler, typename Completion>
class loop_state final : public release_observer,
                         public std::enable_shared_from_this<loop_state<Acceptor, Handler, Completion>> {
  using clock = std::chrono::steady_clock;
  using strand_type = net::strand<net::any_io_executor>;
  using completion_executor = net::associated_executor_t<Completion, strand_type>;
  // Outstanding work on the completion's executor while the loop runs (as Asio's own
  // operations do), so that its io_context does not run out of work under us.
  using work_executor = std::decay_t<decltype(net::prefer(std::declval<completion_executor>(),
                                                          net::execution::outstanding_work.tracked))>;

  enum class pending : unsigned char { none, accept, timer, turn };

 public:
  loop_state(Acceptor& acceptor, Handler handler, loop_options options, Completion completion)
      : acceptor_(acceptor),
        shared_(options.budget ? std::move(options.budget) : shared_budget::create(options.max_connections)),
        strand_(net::make_strand(net::any_io_executor(acceptor.get_executor()))),
        timer_(strand_),
        policy_(shared_->budget(), with_default_sink(options.policy)),
        handler_(std::move(handler)),
        completion_(std::move(completion)),
        executor_(net::get_associated_executor(completion_, strand_)),
        work_(net::prefer(executor_, net::execution::outstanding_work.tracked)),
        options_(std::move(options)) {
    if (!setting_in_range(options_.close_check)) {
      throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                              "accept loop: close_check must be from 0 to longest_setting");
    }
    if (options_.diagnosis_fds) {
      std::error_code ignored;  // without it the census degrades (and says so)
      diagnosis_fds_ = diagnosis_fds::open(ignored);
    }
    reserve_ = spare_fd(options_.spare_fd && options_.policy.shed != shed_mode::queue && can_drain);
    shared_->check_fit_once(options_.policy.sink);
  }
  loop_state(const loop_state&) = delete;
  loop_state& operator=(const loop_state&) = delete;
  ~loop_state() override { shared_->remove(this); }

  /// Starts the loop: never completes inline (the first step is posted to the strand).
  void start() {
    // Asio retries accept on ECONNABORTED and EPROTO internally, out of sight, unless this
    // is set; with it set they reach the policy, which skips them (docs/design.md: the pending
    // connection died, the listener is fine) and counts them.
    open_at_start_ = acceptor_.is_open();
    error_code ignored;  // a closed acceptor fails the first step instead
    acceptor_.set_option(net::socket_base::enable_connection_aborted(true), ignored);
    shared_->add(this, this->weak_from_this());
#if TRANSIENT_ASIO_HAS_CANCELLATION
    auto slot = net::get_associated_cancellation_slot(completion_);
    if (slot.is_connected()) {
      slot.template emplace<cancel_handler>(this->weak_from_this());
    }
#endif
    net::post(strand_, [self = this->shared_from_this()] { self->begin(); });
  }

  void on_permit_released() noexcept override {
    if (wake_posted_.exchange(true, std::memory_order_acq_rel)) {
      return;  // a wake-up is already on its way; it will see this release too
    }
    try {
      net::post(strand_, [self = this->shared_from_this()] { self->released(); });
    } catch (...) {
      // No memory for the wake-up (or the context is gone): the pause timer still fires.
      wake_posted_.store(false, std::memory_order_release);
    }
  }

 private:
#if TRANSIENT_ASIO_HAS_CANCELLATION
  // Installed in the completion handler's cancellation slot (co_spawn with a cancellation
  // signal, asio::bind_cancellation_slot...). Runs wherever the signal is emitted.
  struct cancel_handler {
    explicit cancel_handler(std::weak_ptr<loop_state> l) noexcept : loop(std::move(l)) {}
    std::weak_ptr<loop_state> loop;
    void operator()(net::cancellation_type type) const {
      if (type == net::cancellation_type::none) {
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
    net::post(strand_, [self = this->shared_from_this()] { self->cancel_pending(); });
  }

  // Cancels our outstanding operation; its completion (operation_aborted) ends the loop.
  void cancel_pending() {
    if (done_) {
      return;
    }
    switch (pending_) {
      case pending::accept: accept_cancel_.emit(net::cancellation_type::terminal); break;
      case pending::timer: timer_.cancel(); break;
      case pending::turn:  // the posted turn sees the request
      case pending::none: break;
    }
  }
#endif  // TRANSIENT_ASIO_HAS_CANCELLATION

  [[nodiscard]] bool stopping() const noexcept { return stop_requested_.load(std::memory_order_acquire); }

  void begin() {
    const auto now = clock::now();
    if (stopping()) {
      apply(policy_.on_stop(now));
    } else if (!acceptor_.is_open() && open_at_start_) {
      policy_.request_stop();  // closed right after the start: a clean stop
      apply(policy_.on_stop(now));
    } else {
      // wait: the accept starts. On an acceptor never opened it fails at once (EBADF), a bug
      // the policy fails the loop for.
      apply(policy_.current());
    }
  }

  // A turn given to the other handlers is over: the accept that step::wait asked for starts.
  void turn_over() {
    pending_ = pending::none;
    if (done_) {
      return;
    }
    if (stopping()) {
      apply(policy_.on_stop(clock::now()));
    } else {
      start_accept();
    }
  }

  void accepted(const error_code& ec, net::ip::tcp::socket socket) {
    pending_ = pending::none;
    if (done_) {
      return;
    }
    const auto now = clock::now();
    // operation_aborted: our own cancellation, acceptor.cancel() or acceptor.close(); all
    // mean "stop". A connection accepted just as a stop was requested is closed unserved.
    if (stopping() || ec == net::error::operation_aborted || (open_at_start_ && !acceptor_.is_open())) {
      error_code ignored;
      socket.close(ignored);
      policy_.request_stop();
      apply(policy_.on_stop(now));
      return;
    }
    if (ec) {
      last_error_ = ec;
      apply(policy_.on_accept_result(now, ec, reserve_.held()));
      return;
    }
    if (options_.cloexec) {
      ::fcntl(socket.native_handle(), F_SETFD, FD_CLOEXEC);
    }
    permit place;
    const decision d = policy_.on_accept_result(now, place, peer_key_of(peer_.data(), peer_.size()));
    if (d.shed_accepted) {
      shed(socket, d.shed);
    } else {
      try {
        handler_(accepted_socket{std::move(place), std::move(socket), peer_});
      } catch (...) {
        exception_ = std::current_exception();
        policy_.request_stop();
        apply(policy_.on_stop(now));
        return;
      }
    }
    apply(d);
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
      reserve_.take();  // a no-op unless a drain gave it up or another thread took its number
    }
    switch (d.next) {
      case step::drain: drain(d); return;
      case step::accept:
      case step::shed: start_accept(); return;
      case step::wait:
        // Asio's async_accept waits for readiness itself; a wait is a turn given to the
        // other handlers (after accepts_per_ready accepts), then the accept.
        pending_ = pending::turn;
        net::post(strand_, [self = this->shared_from_this()] { self->turn_over(); });
        return;
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

  void start_accept() {
    pending_ = pending::accept;
    auto on_accepted = net::bind_executor(
        strand_, [self = this->shared_from_this()](const error_code& ec, net::ip::tcp::socket socket) {
          self->accepted(ec, std::move(socket));
        });
    auto executor =
        options_.socket_executor ? options_.socket_executor() : net::any_io_executor(acceptor_.get_executor());
#if TRANSIENT_ASIO_HAS_CANCELLATION
    // Per-operation cancellation (reactor sockets support it): stopping cancels this accept
    // only, not other operations the user may have on the acceptor.
    acceptor_.async_accept(executor, peer_, net::bind_cancellation_slot(accept_cancel_.slot(), std::move(on_accepted)));
#else
    acceptor_.async_accept(executor, peer_, std::move(on_accepted));
#endif
  }

  void arm_timer(clock::time_point when) {
    pending_ = pending::timer;
    const std::uint64_t sequence = ++timer_sequence_;
    timer_.expires_at(when);
    timer_.async_wait(net::bind_executor(strand_, [self = this->shared_from_this(), sequence](
                                                      const error_code& /*ec*/) { self->timer_fired(sequence); }));
  }

  void shed(net::ip::tcp::socket& socket, shed_mode mode) {
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
  static constexpr bool can_drain =
      requires(Acceptor & a, net::ip::tcp::socket& s, net::ip::tcp::endpoint& e, error_code& ec) {
    a.non_blocking(true, ec);
    a.accept(s, e, ec);
  };

  // The policy's drain (descriptors exhausted, the spare held): give the spare descriptor up and
  // accept synchronously while the policy says so, reporting each result. Non-blocking, so
  // an empty backlog ends it (would_block) instead of blocking the strand; the acceptor's own
  // mode is restored after.
  void drain(decision d) {
    const auto now = clock::now();
    if constexpr (can_drain) {
      error_code ec;
      const bool was_non_blocking = acceptor_.non_blocking();
      acceptor_.non_blocking(true, ec);
      reserve_.give_up();
      while (!ec && d.next == step::drain) {
        net::ip::tcp::socket socket(acceptor_.get_executor());
        acceptor_.accept(socket, peer_, ec);
        if (ec) {
          d = policy_.on_accept_failed(now, ec);
          break;
        }
        permit place;
        d = policy_.on_accepted(now, place, peer_key_of(peer_.data(), peer_.size()));
        shed(socket, d.shed_accepted ? d.shed : shed_mode::close);  // a drained connection is never served
      }
      if (d.next == step::drain) {
        d = policy_.on_accept_failed(now, ec);  // non_blocking(true) failed: the drain ends
      }
      error_code ignored;
      acceptor_.non_blocking(was_non_blocking, ignored);
    } else {
      d = policy_.on_accept_failed(now, std::make_error_code(std::errc::operation_not_supported));
    }
    apply(d);
  }

  [[nodiscard]] failure_context context_of_failure() const {
    error_code ignored;
    const auto where = acceptor_.local_endpoint(ignored);
    return failure_context_of(where.address().to_string() + ":" + std::to_string(where.port()),
                              "the acceptor is not listening (accept: EINVAL; call listen() before the loop)",
                              last_error_, shared_->budget(), options_.policy.stall_timeout);
  }

  void finish(const decision& d) {
    done_ = true;
    pending_ = pending::none;
    shared_->remove(this);
#if TRANSIENT_ASIO_HAS_CANCELLATION
    net::get_associated_cancellation_slot(completion_).clear();
#endif
    loop_report report;
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
    const std::error_code ec = report.error;
    // The completion may run inline (dispatch on its own executor) and destroy the
    // acceptor: nothing after this line touches it.
    net::dispatch(executor_, [completion = std::move(completion_), work = std::move(work_), ec,
                              report = std::move(report)]() mutable { std::move(completion)(ec, std::move(report)); });
  }

  // The members below are used on the strand only, except where noted.
  Acceptor& acceptor_;
  std::shared_ptr<shared_budget> shared_;  // before policy_: the policy refers to its budget
  strand_type strand_;
  net::steady_timer timer_;
  accept_policy policy_;
  Handler handler_;
  Completion completion_;
  completion_executor executor_;
  work_executor work_;
  loop_options options_;
  diagnosis_fds diagnosis_fds_;
  spare_fd reserve_;  // for the policy's drains (loop_options::spare_fd)
  std::uint64_t refusals_failed_ = 0;
#if TRANSIENT_ASIO_HAS_CANCELLATION
  net::cancellation_signal accept_cancel_;
#endif
  net::ip::tcp::endpoint peer_;              // filled by the accept in flight
  std::atomic<bool> wake_posted_{false};     // any thread
  std::atomic<bool> stop_requested_{false};  // any thread
  pending pending_ = pending::none;
  std::uint64_t timer_sequence_ = 0;
  bool done_ = false;
  bool open_at_start_ = false;
  std::error_code last_error_;  // what exhausted us, for the diagnosis
  std::exception_ptr exception_;
};

}  // namespace detail
}  // namespace transient::TRANSIENT_ASIO_FLAVOUR
