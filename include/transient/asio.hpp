// transient/asio.hpp: the accept policy over a standalone Asio acceptor (header-only).
//
// Asio's own HTTP server example re-arms async_accept on every error: under EMFILE the
// kernel fails the accept without consuming the queued client (ERRORS.md), the listener
// stays readable, and the loop burns a core and writes a log line per failure. This
// adapter runs transient's accept_policy instead:
//   - a connection budget taken before accept, with a permit attached to each socket;
//     at the budget, clients wait in the kernel backlog until a permit is released;
//   - on exhaustion (EMFILE, ENFILE, ENOBUFS...) the acceptor is not re-armed: the loop
//     waits on a steady_timer (exponential backoff with jitter) or for a permit release
//     (posted to the loop's strand from whatever thread released it);
//   - shed modes (close, reset, respond) at the budget, and a per-peer cap;
//   - a stall watchdog: exhausted with no progress for stall_timeout, the loop ends with
//     condition::stalled and a diagnosis naming what holds the descriptors;
//   - a clean stop on cancellation (per-operation cancellation slots: co_spawn with a
//     cancellation signal, asio::bind_cancellation_slot) and when the acceptor is closed;
//   - the policy's events do the logging: one line per episode, never one per failure.
//
// Two forms, both completing with (std::error_code, loop_report):
//
//   // C++20 coroutine, where Asio supports them (ASIO_HAS_CO_AWAIT); throws
//   // std::system_error(error, diagnosis) unless the stop is clean:
//   asio::co_spawn(ioc, transient::asio::accept_loop(acceptor, [](transient::asio::accepted_socket c) {
//     std::make_shared<session>(std::move(c))->start();
//   }), asio::detached);
//
//   // Completion handler (any Asio completion token works: use_future, deferred...):
//   transient::asio::async_accept_loop(acceptor, on_connection, {},
//       [](std::error_code ec, transient::asio::loop_report r) { ... });
//
// Requirements and caveats:
//   - The acceptor must be open and listening. The loop sets enable_connection_aborted on it,
//     so ECONNABORTED and EPROTO reach the policy (which skips them) instead of being retried
//     inside Asio out of sight.
//   - All of the loop's work, including calls to the handler, runs on a strand over the
//     acceptor's executor, so an io_context may be run by several threads. If you touch the
//     acceptor yourself while the loop runs (to close it), give it a strand executor
//     (asio::make_strand(ioc)) and do it through that executor.
//   - While paused there is no operation on the acceptor to cancel, so closing it is noticed
//     within loop_options::close_check (500 ms by default); cancellation is immediate.
//   - Asio's async_accept waits for readiness and accepts in one operation, so an idle loop
//     holds one place of the budget (taken for the accept it has in flight). With one budget
//     shared by several acceptors, a client of one may wait while another's idle loop holds
//     the last place; every release wakes them all.
//   - The handler receives sockets on the strand: hand work off, do not block in it. An
//     exception it throws stops the loop (loop_report::handler_exception; the coroutine form
//     rethrows it).
//   - Under EMFILE a shed mode other than queue uses a spare descriptor to accept and shed the
//     waiting clients (loop_options::emfile_reserve), as the epoll server does. It needs an
//     acceptor with non_blocking() and a synchronous accept(socket, endpoint, ec).
//
// Testing seam: the acceptor is a template parameter. The loop calls only get_executor(),
// is_open(), set_option(enable_connection_aborted, ec), local_endpoint(ec) and
// async_accept(executor, endpoint&, handler(std::error_code, asio::ip::tcp::socket)), and,
// where the acceptor has them, non_blocking() and accept(socket, endpoint&, ec) for the
// EMFILE reserve. A type
// derived from asio::ip::tcp::acceptor that hides async_accept can complete some accepts
// with synthesized error codes (EMFILE, ENFILE, EPERM...) the kernel will not produce on
// demand; tests/unit/asio_errors_test.cpp does that for every accept errno of ERRORS.md.
//
// This header needs standalone Asio (Debian: libasio-dev); the transient library itself does
// not depend on Asio. Link transient::transient.
#pragma once

#if !defined(ASIO_STANDALONE) && !defined(ASIO_VERSION)
#define ASIO_STANDALONE 1  // the adapter is for standalone Asio, without Boost
#endif

#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <memory>
#include <string>
#include <system_error>
#include <utility>

#include "transient/asio_types.hpp"
#include "transient/detail/asio_loop.hpp"

namespace transient::asio {

namespace detail {

// The initiation of async_accept_loop: makes the loop's state and starts it.
template <typename Acceptor>
struct initiate_accept_loop {
  Acceptor* acceptor;

  template <typename Completion, typename Handler>
  void operator()(Completion&& completion, Handler&& handler, loop_options options) const {
    using state = loop_state<Acceptor, std::decay_t<Handler>, std::decay_t<Completion>>;
    auto loop = std::make_shared<state>(*acceptor, std::forward<Handler>(handler), std::move(options),
                                        std::forward<Completion>(completion));
    loop->start();
  }
};

inline void check(const loop_options& options) {
  check_driver_options("transient::asio", options.policy, static_cast<bool>(options.refuse));
}

}  // namespace detail

/// Runs the accept policy over `acceptor` (open and listening) until it stops, calling
/// `handler(accepted_socket)` on the loop's strand for each connection. Completes with
/// (std::error_code, loop_report): an empty code for a clean stop (cancellation through
/// the completion's cancellation slot, acceptor closed or cancelled), else the failure
/// (compare with transient::condition: stalled, not_listening, programming_error...) with
/// a diagnosis. Throws std::system_error (invalid_argument) at once for an invalid policy
/// configuration or shed_mode::respond without `refuse`, and the error of
/// default_max_connections() when no budget size is given and RLIMIT_NOFILE leaves no room.
template <typename Acceptor, typename Handler, typename CompletionToken>
auto async_accept_loop(Acceptor& acceptor, Handler&& handler, loop_options options, CompletionToken&& token) {
  detail::check(options);
  return ::asio::async_initiate<CompletionToken, void(std::error_code, loop_report)>(
      detail::initiate_accept_loop<Acceptor>{&acceptor}, token, std::forward<Handler>(handler), std::move(options));
}

#if defined(ASIO_HAS_CO_AWAIT)  // C++20 coroutines (g++ 12; not clang 14 with libstdc++)

/// The coroutine form: `co_await accept_loop(acceptor, handler, options)`. Returns the report
/// of a clean stop; throws std::system_error(error, diagnosis) for a failure, and rethrows
/// what the handler threw. Cancel it through co_spawn's cancellation slot.
template <typename Acceptor, typename Handler>
::asio::awaitable<loop_report> accept_loop(Acceptor& acceptor, Handler handler, loop_options options = {}) {
  std::error_code ec;
  loop_report report = co_await async_accept_loop(acceptor, std::move(handler), std::move(options),
                                                  ::asio::redirect_error(::asio::use_awaitable, ec));
  if (report.handler_exception) {
    std::rethrow_exception(report.handler_exception);
  }
  if (ec) {
    throw std::system_error(ec,
                            report.diagnosis.empty() ? std::string("transient::asio::accept_loop") : report.diagnosis);
  }
  co_return report;
}

/// The coroutine form without exceptions for a failure: sets `ec` (cleared for a clean stop)
/// and returns the report. `ec` must outlive the co_await. What the handler threw is in
/// loop_report::handler_exception (and `ec` is operation_canceled).
template <typename Acceptor, typename Handler>
::asio::awaitable<loop_report> accept_loop(Acceptor& acceptor, Handler handler, loop_options options,
                                           std::error_code& ec) {
  std::error_code result;
  loop_report report = co_await async_accept_loop(acceptor, std::move(handler), std::move(options),
                                                  ::asio::redirect_error(::asio::use_awaitable, result));
  ec = result;
  co_return report;
}

#endif  // ASIO_HAS_CO_AWAIT

}  // namespace transient::asio
