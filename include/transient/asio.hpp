// transient/asio.hpp: the accept policy over a standalone Asio acceptor (header-only).
//
// Asio's own HTTP server example re-arms async_accept on every error: under EMFILE the
// kernel fails the accept without consuming the queued client (docs/errors.md), the listener
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
//     waiting clients (loop_options::spare_fd), as the epoll server does. It needs an
//     acceptor with non_blocking() and a synchronous accept(socket, endpoint, ec).
//
// Testing seam: the acceptor is a template parameter. The loop calls only get_executor(),
// is_open(), set_option(enable_connection_aborted, ec), local_endpoint(ec) and
// async_accept(executor, endpoint&, handler(std::error_code, asio::ip::tcp::socket)), and,
// where the acceptor has them, non_blocking() and accept(socket, endpoint&, ec) for the
// spare descriptor. A type
// derived from asio::ip::tcp::acceptor that hides async_accept can complete some accepts
// with synthesized error codes (EMFILE, ENFILE, EPERM...) the kernel will not produce on
// demand; tests/unit/asio_errors_test.cpp does that for every accept errno of docs/errors.md.
//
// The adapter is written once (asio_flavour_types.hpp, detail/asio_loop.hpp,
// asio_flavour.hpp) for both flavours of Asio: this header instantiates it for standalone
// Asio, <transient/boost_asio.hpp> for Boost.Asio (namespace transient::boost_asio, the same
// names). This header needs standalone Asio (Debian: libasio-dev); the transient library
// itself does not depend on Asio. Link transient::transient.
#pragma once

#include "transient/asio_types.hpp"  // defines ASIO_STANDALONE unless Asio was configured already

#include <asio/any_io_executor.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
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
#include <asio/use_awaitable.hpp>
#include <system_error>

#define TRANSIENT_ASIO_FLAVOUR asio
#define TRANSIENT_ASIO_NET ::asio
#define TRANSIENT_ASIO_ERROR_CODE std::error_code
#define TRANSIENT_ASIO_NAME "transient::asio"
#define TRANSIENT_ASIO_HAS_CANCELLATION 1  // Asio 1.19+; Debian 12 has 1.22
#if defined(ASIO_HAS_CO_AWAIT)
#define TRANSIENT_ASIO_HAS_CO_AWAIT 1
#else
#define TRANSIENT_ASIO_HAS_CO_AWAIT 0
#endif
#include "transient/detail/asio_loop.hpp"  // IWYU pragma: export
// After the loop, which it starts:
#include "transient/asio_flavour.hpp"  // IWYU pragma: export
#undef TRANSIENT_ASIO_FLAVOUR
#undef TRANSIENT_ASIO_NET
#undef TRANSIENT_ASIO_ERROR_CODE
#undef TRANSIENT_ASIO_NAME
#undef TRANSIENT_ASIO_HAS_CANCELLATION
#undef TRANSIENT_ASIO_HAS_CO_AWAIT
