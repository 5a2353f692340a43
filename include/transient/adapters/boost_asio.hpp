// transient/adapters/boost_asio.hpp: the accept policy over a Boost.Asio acceptor (header-only;
// needs Boost 1.74+, Debian: libboost-dev; link transient::transient). The adapter of
// <transient/adapters/asio.hpp>, with the same names in namespace transient::boost_asio:
//
//   boost::asio::ip::tcp::acceptor acceptor(boost::asio::make_strand(ioc), {address, port});
//   transient::boost_asio::async_accept_loop(acceptor,
//       [](transient::boost_asio::accepted_socket c) { std::make_shared<session>(std::move(c))->run(); }, {},
//       [](std::error_code ec, transient::boost_asio::loop_report r) { ... });
//
// The loop completes with std::error_code (a boost::system::error_code converted to it
// compares equal to transient::condition values). Before Boost 1.77 there is no
// per-operation cancellation: close or cancel the acceptor to stop the loop. Include this
// header before any Boost.Asio header (it includes <utility> first, which Boost 1.74 needs
// under g++ 12 in C++20). Beast: examples/beast_server.cpp. Design: docs/design.md, "The Asio
// adapter".
#pragma once

#include <utility>  // first: Boost 1.74's awaitable.hpp uses std::exchange without including it (C++20)

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/version.hpp>
#include <boost/system/error_code.hpp>
#include <system_error>
#if BOOST_ASIO_VERSION >= 101900  // Boost 1.77: per-operation cancellation
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#endif
#if defined(BOOST_ASIO_HAS_CO_AWAIT)
#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>
#endif

#include "transient/detail/asio_adapter.hpp"  // IWYU pragma: export

namespace transient::detail {

/// Boost.Asio, as the adapter's flavour (the members are listed in detail/asio_adapter.hpp).
struct boost_asio_flavour {
  static constexpr const char* name = "transient::boost_asio";
#if BOOST_ASIO_VERSION >= 101900
  static constexpr bool has_cancellation = true;
  using cancellation_signal = ::boost::asio::cancellation_signal;
  using cancellation_type = ::boost::asio::cancellation_type;
#else
  static constexpr bool has_cancellation = false;
  using cancellation_signal = asio_no_cancellation;
#endif
#if defined(BOOST_ASIO_HAS_CO_AWAIT)
  static constexpr bool has_co_await = true;
  template <typename T>
  using awaitable = ::boost::asio::awaitable<T>;
  using use_awaitable_t = ::boost::asio::use_awaitable_t<>;
#else
  static constexpr bool has_co_await = false;
#endif
  using error_code = ::boost::system::error_code;
  using executor = ::boost::asio::any_io_executor;
  using strand = ::boost::asio::strand<executor>;
  using steady_timer = ::boost::asio::steady_timer;
  using socket = ::boost::asio::ip::tcp::socket;
  using endpoint = ::boost::asio::ip::tcp::endpoint;
  using enable_connection_aborted = ::boost::asio::socket_base::enable_connection_aborted;
  template <typename T, typename E>
  using associated_executor_t = ::boost::asio::associated_executor_t<T, E>;
  static constexpr auto operation_aborted = ::boost::asio::error::operation_aborted;

  template <typename... A>
  static auto post(A&&... a) {
    return ::boost::asio::post(std::forward<A>(a)...);
  }
  template <typename... A>
  static auto dispatch(A&&... a) {
    return ::boost::asio::dispatch(std::forward<A>(a)...);
  }
  template <typename... A>
  static auto bind_executor(A&&... a) {
    return ::boost::asio::bind_executor(std::forward<A>(a)...);
  }
  template <typename E>
  static auto track_work(const E& e) {
    return ::boost::asio::prefer(e, ::boost::asio::execution::outstanding_work.tracked);
  }
  template <typename... A>
  static auto associated_executor(const A&... a) {
    return ::boost::asio::get_associated_executor(a...);
  }
#if BOOST_ASIO_VERSION >= 101900
  template <typename T>
  static auto cancellation_slot_of(const T& t) {
    return ::boost::asio::get_associated_cancellation_slot(t);
  }
  template <typename S, typename T>
  static auto bind_cancellation_slot(const S& slot, T&& t) {
    return ::boost::asio::bind_cancellation_slot(slot, std::forward<T>(t));
  }
#endif
  template <typename Token, typename Signature, typename Initiation, typename... A>
  static auto initiate(Initiation&& initiation, Token& token, A&&... a) {
    return ::boost::asio::async_initiate<Token, Signature>(std::forward<Initiation>(initiation), token,
                                                           std::forward<A>(a)...);
  }
};

}  // namespace transient::detail

/// The accept policy over Boost.Asio acceptors.
namespace transient::boost_asio {

/// The Asio this adapter is for.
namespace net = ::boost::asio;

/// The error code of Boost.Asio's operations (converts to std::error_code).
using error_code = ::boost::system::error_code;

/// The budget loops share: the one every driver uses (budget.hpp).
using shared_budget = transient::shared_budget;

/// One accepted connection: the socket, its permit (keep it while the connection lasts) and the peer.
using accepted_socket = detail::asio_accepted_socket<detail::boost_asio_flavour>;

/// Writes a refusal on a connection shed with shed_mode::respond (write what fits, do not wait).
using refusal_writer = detail::asio_refusal_writer<detail::boost_asio_flavour>;

/// Settings of an accept loop.
using loop_options = detail::asio_loop_options<detail::boost_asio_flavour>;

/// How an accept loop ended: error (empty for a clean stop), diagnosis, metrics, handler_exception.
using loop_report = detail::asio_loop_report;

/// `async_accept_loop(acceptor, handler, options, token)`: the accept loop, completing with
/// (std::error_code, loop_report).
inline constexpr detail::asio_async_accept_loop_fn<detail::boost_asio_flavour> async_accept_loop{};

/// `co_await accept_loop(acceptor, handler[, options[, ec]])`: the accept loop as a coroutine
/// (where BOOST_ASIO_HAS_CO_AWAIT).
inline constexpr detail::asio_accept_loop_fn<detail::boost_asio_flavour> accept_loop{};

}  // namespace transient::boost_asio
