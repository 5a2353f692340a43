// transient/boost_asio.hpp: the accept policy over a Boost.Asio acceptor (header-only).
//
// The same adapter as <transient/asio.hpp>, from the same source, in namespace
// transient::boost_asio with the same names: async_accept_loop, accept_loop, loop_options,
// accepted_socket, loop_report, refusal_writer, shared_budget. Read asio.hpp for what it does
// and its caveats. What differs:
//   - The acceptor is a boost::asio::ip::tcp::acceptor (or a type with the same calls), and
//     the Asio operations complete with boost::system::error_code; the loop itself completes
//     with (std::error_code, loop_report), as the standalone adapter does. A
//     boost::system::error_code converted to std::error_code compares equal to
//     transient::condition values (`std::error_code(ec) == transient::condition::fd_exhausted`).
//   - Cancellation through the completion's cancellation slot needs per-operation
//     cancellation, which Boost.Asio has from Boost 1.77 (Asio 1.19). With an older Boost
//     (Debian 12's libboost-dev is 1.74) closing or cancelling the acceptor is the way to
//     stop the loop: acceptor.cancel() on the acceptor's executor stops it at once, close()
//     too, and a paused loop notices within loop_options::close_check.
//   - Beast: accept with this loop instead of Beast's own acceptor class; see
//     examples/beast_server.cpp.
//
//   boost::asio::io_context ioc;
//   boost::asio::ip::tcp::acceptor acceptor(boost::asio::make_strand(ioc), {address, port});
//   transient::boost_asio::async_accept_loop(acceptor,
//       [](transient::boost_asio::accepted_socket c) { std::make_shared<session>(std::move(c))->run(); }, {},
//       [](std::error_code ec, transient::boost_asio::loop_report r) { ... });
//
// This header needs Boost (Debian: libboost-dev; Asio and System are header-only there); the
// transient library itself does not depend on Boost. Link transient::transient.
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

#include "transient/boost_asio_types.hpp"

#if BOOST_ASIO_VERSION >= 101900  // Boost 1.77: per-operation cancellation
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#define TRANSIENT_ASIO_HAS_CANCELLATION 1
#else
#define TRANSIENT_ASIO_HAS_CANCELLATION 0
#endif
#if defined(BOOST_ASIO_HAS_CO_AWAIT)
#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>
#define TRANSIENT_ASIO_HAS_CO_AWAIT 1
#else
#define TRANSIENT_ASIO_HAS_CO_AWAIT 0
#endif

#define TRANSIENT_ASIO_FLAVOUR boost_asio
#define TRANSIENT_ASIO_NET ::boost::asio
#define TRANSIENT_ASIO_ERROR_CODE ::boost::system::error_code
#define TRANSIENT_ASIO_NAME "transient::boost_asio"
#include "transient/detail/asio_loop.hpp"  // IWYU pragma: export
// After the loop, which it starts:
#include "transient/asio_flavour.hpp"  // IWYU pragma: export
#undef TRANSIENT_ASIO_FLAVOUR
#undef TRANSIENT_ASIO_NET
#undef TRANSIENT_ASIO_ERROR_CODE
#undef TRANSIENT_ASIO_NAME
#undef TRANSIENT_ASIO_HAS_CANCELLATION
#undef TRANSIENT_ASIO_HAS_CO_AWAIT
