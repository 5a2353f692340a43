// transient/detail/asio_loop.hpp: the state of one Asio accept loop, and how it maps the
// accept policy's decisions to Asio operations. Included by transient/asio.hpp.
//
//   decision            what the loop does
//   accept / shed       acceptor.async_accept (Asio tries accept(2) at once and, on EAGAIN,
//                       waits for readiness inside the same operation); its completion is
//                       on_accepted / on_accept_failed
//   wait                post on_ready to the strand (after accepts_per_ready accepts: lets
//                       other handlers run; async_accept does the waiting itself)
//   pause_for_release   no operation on the acceptor; a steady_timer wakes only to check
//                       that the acceptor is still open; a permit release posts on_release
//   pause_until         no operation on the acceptor; the steady_timer fires at `until`
//                       (on_timer), or a release posts on_release
//   stop / fail         complete the operation (fail: with a diagnosis)
//
// At most one operation of ours is outstanding at a time (an accept, the timer, or a posted
// on_ready), plus posted release wake-ups and stop requests. All state lives on one strand
// over the acceptor's executor, so an io_context run by several threads is safe.
#pragma once

#include <fcntl.h>

#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/bind_executor.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/dispatch.hpp>
#include <asio/execution/outstanding_work.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/prefer.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>

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

#include "transient/accept_policy.hpp"
#include "transient/classify.hpp"
#include "transient/detail/asio_budget.hpp"
#include "transient/diagnostics.hpp"
#include "transient/unique_fd.hpp"

namespace transient::asio {

/// One accepted connection, as the loop hands it to the handler: the socket, the permit that
/// holds its place in the budget, and the peer's address. Destroying it closes the socket,
/// then releases the permit, then lets go of the budget (members are destroyed in reverse
/// order of declaration). That order matters: a loop paused on EMFILE resumes at the
/// release, and the descriptor must be free by then. If you move `socket` out, keep `place`
/// alive at least as long as the socket.
struct accepted_socket {
  std::shared_ptr<const void> budget_owner;  ///< Keeps the budget alive while `place` holds a place in it.
  permit place;                              ///< The connection's place in the budget.
  ::asio::ip::tcp::socket socket;            ///< The connection (FD_CLOEXEC set unless disabled).
  ::asio::ip::tcp::endpoint peer;            ///< The client's address and port.
};

/// Writes a refusal (e.g. "HTTP/1.1 503 ...") on a connection shed with shed_mode::respond.
/// The socket is non-blocking and closed right after: write what fits, do not wait.
using refusal_writer = std::function<void(::asio::ip::tcp::socket& socket, const ::asio::ip::tcp::endpoint& peer)>;

/// Settings of an accept loop.
struct loop_options {
  /// The budget to draw from (share one between loops). Empty: a budget of max_connections.
  std::shared_ptr<shared_budget> budget;
  /// The size of the budget made when `budget` is empty. 0: default_max_connections().
  std::uint64_t max_connections = 0;
  /// The accept policy's settings (backoff, stall timeout, shed mode, per-peer cap, event sink...).
  accept_policy_config policy{};
  /// Called for connections shed with shed_mode::respond (required for that mode).
  refusal_writer refuse{};
  /// The executor of each accepted socket (e.g. [&] { return asio::make_strand(ioc); }).
  /// Empty: the acceptor's executor.
  std::function<::asio::any_io_executor()> socket_executor{};
  /// While paused, how often the loop checks that the acceptor is still open (closing it is
  /// a clean stop, but a paused loop has no operation on it to be cancelled). 0: never.
  std::chrono::milliseconds close_check = std::chrono::milliseconds(500);
  /// Keep /proc/self/fd and /proc/sys/fs/file-nr open (two descriptors) so that a stall
  /// diagnosis can be written when no descriptor is free.
  bool diagnostics_reserve = true;
  /// Set FD_CLOEXEC on accepted sockets (Asio 1.22 accepts with accept(2), without
  /// SOCK_CLOEXEC; a fork+exec on another thread in between can still inherit one).
  bool cloexec = true;
  /// Keep one spare descriptor (/dev/null) so that, under EMFILE, waiting clients can still be
  /// accepted and shed, up to accepts_per_ready at a time (libuv's trick), as the epoll server
  /// does: used only when the shed mode is not `queue` and the acceptor can accept
  /// synchronously. Another thread may take the number freed for a moment; the loop then
  /// takes its spare back before its next accept.
  bool emfile_reserve = true;
};

/// How an accept loop ended (the operation's second completion argument).
struct loop_report {
  std::error_code error;                 ///< Empty for a clean stop; else why (compare with transient::condition).
  std::string diagnosis;                 ///< For a failure: what was found and what to change.
  policy_metrics metrics;                ///< The policy's counters at the end.
  std::exception_ptr handler_exception;  ///< What the connection handler threw, if it did (it stops the loop).
};

namespace detail {

/// The state of one running loop. Owned by std::shared_ptr: each outstanding operation's
/// completion handler holds a reference, so the state lives exactly as long as something
/// of the loop is pending.
template <typename Acceptor, typename Handler, typename Completion>
class loop_state final : public release_listener,
                         public std::enable_shared_from_this<loop_state<Acceptor, Handler, Completion>> {
  using clock = std::chrono::steady_clock;
  using strand_type = ::asio::strand<::asio::any_io_executor>;
  using completion_executor = ::asio::associated_executor_t<Completion, strand_type>;
  // Outstanding work on the completion's executor while the loop runs (as Asio's own
  // operations do), so that its io_context does not run out of work under us.
  using work_executor = std::decay_t<decltype(::asio::prefer(std::declval<completion_executor>(),
                                                             ::asio::execution::outstanding_work.tracked))>;

  enum class pending : unsigned char { none, accept, timer, ready };

 public:
  loop_state(Acceptor& acceptor, Handler handler, loop_options options, Completion completion)
      : acceptor_(acceptor),
        shared_(options.budget ? std::move(options.budget) : shared_budget::create(options.max_connections)),
        strand_(::asio::make_strand(::asio::any_io_executor(acceptor.get_executor()))),
        timer_(strand_),
        policy_(shared_->budget(), options.policy),
        handler_(std::move(handler)),
        completion_(std::move(completion)),
        executor_(::asio::get_associated_executor(completion_, strand_)),
        work_(::asio::prefer(executor_, ::asio::execution::outstanding_work.tracked)),
        options_(std::move(options)) {
    if (options_.diagnostics_reserve) {
      std::error_code ignored;  // without it the census degrades (and says so)
      reserve_ = diagnostics_reserve::open(ignored);
    }
    wants_spare_ = options_.emfile_reserve && options_.policy.shed != shed_mode::queue;
    take_spare();
  }
  loop_state(const loop_state&) = delete;
  loop_state& operator=(const loop_state&) = delete;
  ~loop_state() { shared_->remove(this); }

  /// Starts the loop: never completes inline (the first step is posted to the strand).
  void start() {
    // Asio retries accept on ECONNABORTED and EPROTO internally, out of sight, unless this
    // is set; with it set they reach the policy, which skips them (ERRORS.md: the pending
    // connection died, the listener is fine) and counts them.
    open_at_start_ = acceptor_.is_open();
    std::error_code ignored;  // a closed acceptor fails the first step instead
    acceptor_.set_option(::asio::socket_base::enable_connection_aborted(true), ignored);
    shared_->add(this, this->weak_from_this());
    auto slot = ::asio::get_associated_cancellation_slot(completion_);
    if (slot.is_connected()) {
      slot.template emplace<cancel_handler>(this->weak_from_this());
    }
    ::asio::post(strand_, [self = this->shared_from_this()] { self->begin(); });
  }

  void on_permit_released() noexcept override {
    if (wake_posted_.exchange(true, std::memory_order_acq_rel)) {
      return;  // a wake-up is already on its way; it will see this release too
    }
    try {
      ::asio::post(strand_, [self = this->shared_from_this()] { self->released(); });
    } catch (...) {
      // No memory for the wake-up (or the context is gone): the pause timer still fires.
      wake_posted_.store(false, std::memory_order_release);
    }
  }

 private:
  // Installed in the completion handler's cancellation slot (co_spawn with a cancellation
  // signal, asio::bind_cancellation_slot...). Runs wherever the signal is emitted.
  struct cancel_handler {
    explicit cancel_handler(std::weak_ptr<loop_state> l) noexcept : loop(std::move(l)) {}
    std::weak_ptr<loop_state> loop;
    void operator()(::asio::cancellation_type type) const {
      if (type == ::asio::cancellation_type::none) {
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
    ::asio::post(strand_, [self = this->shared_from_this()] { self->cancel_pending(); });
  }

  // Cancels our outstanding operation; its completion (operation_aborted) ends the loop.
  void cancel_pending() {
    if (done_) {
      return;
    }
    switch (pending_) {
      case pending::accept: accept_cancel_.emit(::asio::cancellation_type::terminal); break;
      case pending::timer: timer_.cancel(); break;
      case pending::ready:  // the posted on_ready sees the request
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
    } else if (!acceptor_.is_open()) {
      // A loop started on a closed acceptor is a bug (EBADF): the policy fails it.
      apply(policy_.on_accept_failed(now, ::asio::error::bad_descriptor));
    } else {
      apply(policy_.on_ready(now));
    }
  }

  void ready() {
    pending_ = pending::none;
    if (done_) {
      return;
    }
    const auto now = clock::now();
    apply(stopping() ? policy_.on_stop(now) : policy_.on_ready(now));
  }

  void accepted(const std::error_code& ec, ::asio::ip::tcp::socket socket) {
    pending_ = pending::none;
    if (done_) {
      return;
    }
    const auto now = clock::now();
    // operation_aborted: our own cancellation, acceptor.cancel() or acceptor.close(); all
    // mean "stop". A connection accepted just as a stop was requested is closed unserved.
    if (stopping() || ec == ::asio::error::operation_aborted || !acceptor_.is_open()) {
      std::error_code ignored;
      socket.close(ignored);
      policy_.request_stop();
      apply(policy_.on_stop(now));
      return;
    }
    if (ec) {
      last_error_ = ec;
      if (ec == ::asio::error::no_descriptors && spare_) {
        shed_with_spare();
      }
      apply(policy_.on_accept_failed(now, ec));
      return;
    }
    if (options_.cloexec) {
      ::fcntl(socket.native_handle(), F_SETFD, FD_CLOEXEC);
    }
    permit place;
    const decision d = policy_.on_accepted(now, place, peer_key_of(peer_.data(), peer_.size()));
    if (d.shed_accepted) {
      shed(socket, d.shed);
    } else {
      try {
        handler_(accepted_socket{shared_, std::move(place), std::move(socket), peer_});
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
    switch (d.next) {
      case step::accept:
      case step::shed:
      case step::drain: start_accept(); return;
      case step::wait:
        // Asio's async_accept waits for readiness itself; a wait is only a turn given to
        // the other handlers (after accepts_per_ready accepts) or the first step.
        pending_ = pending::ready;
        ::asio::post(strand_, [self = this->shared_from_this()] { self->ready(); });
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
    take_spare();  // a no-op unless a shed under EMFILE lost it
    pending_ = pending::accept;
    // Per-operation cancellation (Asio 1.22 reactor sockets support it): stopping cancels
    // this accept only, not other operations the user may have on the acceptor.
    acceptor_.async_accept(
        options_.socket_executor ? options_.socket_executor() : ::asio::any_io_executor(acceptor_.get_executor()),
        peer_,
        ::asio::bind_cancellation_slot(
            accept_cancel_.slot(),
            ::asio::bind_executor(
                strand_, [self = this->shared_from_this()](const std::error_code& ec, ::asio::ip::tcp::socket socket) {
                  self->accepted(ec, std::move(socket));
                })));
  }

  void arm_timer(clock::time_point when) {
    pending_ = pending::timer;
    const std::uint64_t sequence = ++timer_sequence_;
    timer_.expires_at(when);
    timer_.async_wait(::asio::bind_executor(
        strand_,
        [self = this->shared_from_this(), sequence](const std::error_code& /*ec*/) { self->timer_fired(sequence); }));
  }

  void shed(::asio::ip::tcp::socket& socket, shed_mode mode) {
    std::error_code ignored;
    if (mode == shed_mode::reset) {
      // SO_LINGER {on, 0 s}: close() sends a reset instead of a FIN.
      socket.set_option(::asio::socket_base::linger(true, 0), ignored);
    } else if (mode == shed_mode::respond && options_.refuse) {
      socket.non_blocking(true, ignored);
      try {
        options_.refuse(socket, peer_);
      } catch (...) {  // a refusal that failed changes nothing: the connection is shed anyway
      }
    }
    socket.close(ignored);
  }

  // The spare descriptor for shedding under EMFILE (see loop_options::emfile_reserve). A
  // failure other than a descriptor shortage (no /dev/null in a chroot) will not pass: stop
  // asking rather than pay a failing open() before every accept.
  void take_spare() {
    if (wants_spare_ && !spare_) {
      spare_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
      if (!spare_ && errno != EMFILE && errno != ENFILE) {
        wants_spare_ = false;
      }
    }
  }

  // libuv's trick, as in the epoll server: give up the spare for a moment, accept and shed the
  // waiting clients (each shed frees the number the next accept takes), then take the spare
  // again. Synchronous accepts in non-blocking mode, so an empty queue ends it (would_block)
  // instead of blocking the strand; the acceptor's own mode is restored after.
  void shed_with_spare() {
    if constexpr (requires(::asio::ip::tcp::socket & s, std::error_code & e) {
                    acceptor_.non_blocking(true, e);
                    acceptor_.accept(s, peer_, e);
                  }) {
      std::error_code ec;
      const bool was_non_blocking = acceptor_.non_blocking();
      acceptor_.non_blocking(true, ec);
      if (ec) {
        return;
      }
      spare_.reset();
      for (std::uint32_t i = 0; i < options_.policy.accepts_per_ready; ++i) {
        ::asio::ip::tcp::socket socket(acceptor_.get_executor());
        acceptor_.accept(socket, peer_, ec);
        if (ec) {
          break;  // would_block (the queue is empty), or EMFILE: the freed number was taken
        }
        shed(socket, options_.policy.shed);
        ++spare_sheds_;
      }
      acceptor_.non_blocking(was_non_blocking, ec);
      take_spare();
    }
  }

  [[nodiscard]] std::string diagnose_failure(const std::error_code& ec) const {
    if (ec == condition::stalled) {
      const connection_budget& b = shared_->budget();
      return diagnose({last_error_, b.live(), b.max_connections(), options_.policy.stall_timeout}, reserve_).text;
    }
    std::error_code ignored;
    const auto where = acceptor_.local_endpoint(ignored);
    std::string text = "accept on " + where.address().to_string() + ":" + std::to_string(where.port());
    if (ec == condition::not_listening) {
      return text + " failed: the acceptor is not listening (accept: EINVAL; call listen() before the loop)";
    }
    return text + " failed: " + ec.message() + " (" + std::string(classify(operation::accept, ec).advice) + ")";
  }

  void finish(const decision& d) {
    done_ = true;
    pending_ = pending::none;
    shared_->remove(this);
    ::asio::get_associated_cancellation_slot(completion_).clear();
    loop_report report;
    report.error = d.error;
    if (d.next == step::fail) {
      report.diagnosis = diagnose_failure(d.error);
      policy_.attach_diagnosis(report.diagnosis);
    }
    if (exception_) {
      report.error = std::make_error_code(std::errc::operation_canceled);
      report.diagnosis = "the connection handler threw";
      report.handler_exception = exception_;
    }
    report.metrics = policy_.metrics();
    report.metrics.shed[static_cast<std::size_t>(shed_reason::budget)] += spare_sheds_;
    const std::error_code ec = report.error;
    // The completion may run inline (dispatch on its own executor) and destroy the
    // acceptor: nothing after this line touches it.
    ::asio::dispatch(executor_,
                     [completion = std::move(completion_), work = std::move(work_), ec,
                      report = std::move(report)]() mutable { std::move(completion)(ec, std::move(report)); });
  }

  // The members below are used on the strand only, except where noted.
  Acceptor& acceptor_;
  std::shared_ptr<shared_budget> shared_;  // before policy_: the policy refers to its budget
  strand_type strand_;
  ::asio::steady_timer timer_;
  accept_policy policy_;
  Handler handler_;
  Completion completion_;
  completion_executor executor_;
  work_executor work_;
  loop_options options_;
  diagnostics_reserve reserve_;
  bool wants_spare_ = false;  // emfile_reserve, for a shed mode that is not queue
  unique_fd spare_;           // the EMFILE reserve descriptor
  std::uint64_t spare_sheds_ = 0;
  ::asio::cancellation_signal accept_cancel_;
  ::asio::ip::tcp::endpoint peer_;           // filled by the accept in flight
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
}  // namespace transient::asio
