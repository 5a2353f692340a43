// transient/asio_flavour.hpp: the functions of an Asio adapter (async_accept_loop,
// accept_loop), written once for both flavours of Asio. Not included directly:
// <transient/asio.hpp> and <transient/boost_asio.hpp> include it once each, with the macros
// of asio_flavour_types.hpp and detail/asio_loop.hpp defined and also
//   TRANSIENT_ASIO_HAS_CO_AWAIT  1 where that Asio supports C++20 coroutines, else 0
//   TRANSIENT_ASIO_NAME          the namespace as a string ("transient::asio"), for messages
// No include guard on purpose (one copy per flavour).

#include <memory>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>

namespace transient::TRANSIENT_ASIO_FLAVOUR {

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
  check_driver_options(TRANSIENT_ASIO_NAME, options.policy, static_cast<bool>(options.refuse));
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
  return net::async_initiate<CompletionToken, void(std::error_code, loop_report)>(
      detail::initiate_accept_loop<Acceptor>{&acceptor}, token, std::forward<Handler>(handler), std::move(options));
}

#if TRANSIENT_ASIO_HAS_CO_AWAIT  // C++20 coroutines (g++ 12; not clang 14 with libstdc++)

namespace detail {

// The loop as an awaitable of one tuple (error, report): use_awaitable would throw on the
// error and lose the report, and redirect_error wants Boost's error code from Boost.Asio.
// The coroutine's executor and, where the Asio has them, its cancellation slot pass through.
template <typename Acceptor, typename Handler>
net::awaitable<std::tuple<std::error_code, loop_report>> await_loop(Acceptor& acceptor, Handler handler,
                                                                    loop_options options) {
  return net::async_initiate<decltype(net::use_awaitable), void(std::tuple<std::error_code, loop_report>)>(
      [&acceptor](auto done, Handler h, loop_options o) {
        auto executor = net::get_associated_executor(done);
#if TRANSIENT_ASIO_HAS_CANCELLATION
        auto slot = net::get_associated_cancellation_slot(done);
#endif
        auto complete =
            net::bind_executor(executor, [done = std::move(done)](std::error_code ec, loop_report report) mutable {
              std::move(done)(std::make_tuple(ec, std::move(report)));
            });
#if TRANSIENT_ASIO_HAS_CANCELLATION
        async_accept_loop(acceptor, std::move(h), std::move(o), net::bind_cancellation_slot(slot, std::move(complete)));
#else
        async_accept_loop(acceptor, std::move(h), std::move(o), std::move(complete));
#endif
      },
      net::use_awaitable, std::move(handler), std::move(options));
}

}  // namespace detail

/// The coroutine form: `co_await accept_loop(acceptor, handler, options)`. Returns the report
/// of a clean stop; throws std::system_error(error, diagnosis) for a failure, and rethrows
/// what the handler threw. Cancel it through co_spawn's cancellation slot (where the Asio has
/// per-operation cancellation), or close the acceptor.
template <typename Acceptor, typename Handler>
net::awaitable<loop_report> accept_loop(Acceptor& acceptor, Handler handler, loop_options options = {}) {
  auto [ec, report] = co_await detail::await_loop(acceptor, std::move(handler), std::move(options));
  if (report.handler_exception) {
    std::rethrow_exception(report.handler_exception);
  }
  if (ec) {
    throw std::system_error(
        ec, report.diagnosis.empty() ? std::string(TRANSIENT_ASIO_NAME "::accept_loop") : report.diagnosis);
  }
  co_return report;
}

/// The coroutine form without exceptions for a failure: sets `ec` (cleared for a clean stop)
/// and returns the report. `ec` must outlive the co_await. What the handler threw is in
/// loop_report::handler_exception (and `ec` is operation_canceled).
template <typename Acceptor, typename Handler>
net::awaitable<loop_report> accept_loop(Acceptor& acceptor, Handler handler, loop_options options,
                                        std::error_code& ec) {
  auto [result, report] = co_await detail::await_loop(acceptor, std::move(handler), std::move(options));
  ec = result;
  co_return report;
}

#endif  // TRANSIENT_ASIO_HAS_CO_AWAIT

}  // namespace transient::TRANSIENT_ASIO_FLAVOUR
