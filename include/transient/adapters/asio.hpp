// transient/adapters/asio.hpp: the accept policy over a standalone Asio acceptor (header-only;
// needs standalone Asio 1.19+, Debian: libasio-dev; link transient::transient).
//
//   // C++20 coroutine (where ASIO_HAS_CO_AWAIT); throws std::system_error unless the stop is clean:
//   asio::co_spawn(ioc, transient::asio::accept_loop(acceptor, [](transient::asio::accepted_socket c) {
//     std::make_shared<session>(std::move(c))->start();
//   }), asio::detached);
//
//   // Any completion token (a handler, use_future, deferred...):
//   transient::asio::async_accept_loop(acceptor, on_connection, {},
//       [](std::error_code ec, transient::asio::loop_report r) { ... });
//
// The contract is async_accept_loop's (detail/asio_adapter.hpp); the design is in
// docs/design.md ("The Asio adapter"). <transient/adapters/boost_asio.hpp> is the same for
// Boost.Asio.
#pragma once

#if !defined(ASIO_STANDALONE) && !defined(ASIO_VERSION)
#define ASIO_STANDALONE 1  // the adapter is for standalone Asio, without Boost
#endif

#include <asio/any_io_executor.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
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
#include <system_error>
#include <utility>
#if defined(ASIO_HAS_CO_AWAIT)
#include <asio/awaitable.hpp>
#include <asio/use_awaitable.hpp>
#endif

#include "transient/detail/asio_adapter.hpp"  // IWYU pragma: export

namespace transient::detail {

/// Standalone Asio, as the adapter's flavour (the members are listed in detail/asio_adapter.hpp).
struct standalone_asio {
  static constexpr const char* name = "transient::asio";
  static constexpr bool has_cancellation = true;  // Asio 1.19+
#if defined(ASIO_HAS_CO_AWAIT)
  static constexpr bool has_co_await = true;
  template <typename T>
  using awaitable = ::asio::awaitable<T>;
  using use_awaitable_t = ::asio::use_awaitable_t<>;
#else
  static constexpr bool has_co_await = false;
#endif
  using error_code = std::error_code;
  using executor = ::asio::any_io_executor;
  using strand = ::asio::strand<executor>;
  using steady_timer = ::asio::steady_timer;
  using socket = ::asio::ip::tcp::socket;
  using endpoint = ::asio::ip::tcp::endpoint;
  using enable_connection_aborted = ::asio::socket_base::enable_connection_aborted;
  using cancellation_signal = ::asio::cancellation_signal;
  using cancellation_type = ::asio::cancellation_type;
  template <typename T, typename E>
  using associated_executor_t = ::asio::associated_executor_t<T, E>;
  static constexpr auto operation_aborted = ::asio::error::operation_aborted;

  template <typename... A>
  static auto post(A&&... a) {
    return ::asio::post(std::forward<A>(a)...);
  }
  template <typename... A>
  static auto dispatch(A&&... a) {
    return ::asio::dispatch(std::forward<A>(a)...);
  }
  template <typename... A>
  static auto bind_executor(A&&... a) {
    return ::asio::bind_executor(std::forward<A>(a)...);
  }
  template <typename E>
  static auto track_work(const E& e) {
    return ::asio::prefer(e, ::asio::execution::outstanding_work.tracked);
  }
  template <typename... A>
  static auto associated_executor(const A&... a) {
    return ::asio::get_associated_executor(a...);
  }
  template <typename T>
  static auto cancellation_slot_of(const T& t) {
    return ::asio::get_associated_cancellation_slot(t);
  }
  template <typename S, typename T>
  static auto bind_cancellation_slot(const S& slot, T&& t) {
    return ::asio::bind_cancellation_slot(slot, std::forward<T>(t));
  }
  template <typename Token, typename Signature, typename Initiation, typename... A>
  static auto initiate(Initiation&& initiation, Token& token, A&&... a) {
    return ::asio::async_initiate<Token, Signature>(std::forward<Initiation>(initiation), token, std::forward<A>(a)...);
  }
};

}  // namespace transient::detail

/// The accept policy over standalone Asio acceptors.
namespace transient::asio {

/// The Asio this adapter is for.
namespace net = ::asio;

/// The error code of standalone Asio's operations.
using error_code = std::error_code;

/// The budget loops share: the one every driver uses (budget.hpp).
using shared_budget = transient::shared_budget;

/// One accepted connection: the socket, its permit (keep it while the connection lasts) and the peer.
using accepted_socket = detail::asio_accepted_socket<detail::standalone_asio>;

/// Writes a refusal on a connection shed with shed_mode::respond (write what fits, do not wait).
using refusal_writer = detail::asio_refusal_writer<detail::standalone_asio>;

/// Settings of an accept loop.
using loop_options = detail::asio_loop_options<detail::standalone_asio>;

/// How an accept loop ended: error (empty for a clean stop), diagnosis, metrics, handler_exception.
using loop_report = detail::asio_loop_report;

/// `async_accept_loop(acceptor, handler, options, token)`: the accept loop, completing with
/// (std::error_code, loop_report).
inline constexpr detail::asio_async_accept_loop_fn<detail::standalone_asio> async_accept_loop{};

/// `co_await accept_loop(acceptor, handler[, options[, ec]])`: the accept loop as a coroutine
/// (where ASIO_HAS_CO_AWAIT).
inline constexpr detail::asio_accept_loop_fn<detail::standalone_asio> accept_loop{};

}  // namespace transient::asio
