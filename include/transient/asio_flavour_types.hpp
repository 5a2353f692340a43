// transient/asio_flavour_types.hpp: the public types of an Asio adapter, written once for
// both flavours of Asio. Not included directly: <transient/asio_types.hpp> (standalone Asio)
// and <transient/boost_asio_types.hpp> (Boost.Asio) include it once each, after defining
//   TRANSIENT_ASIO_FLAVOUR     the namespace inside transient: asio or boost_asio
//   TRANSIENT_ASIO_NET         the Asio namespace: ::asio or ::boost::asio
//   TRANSIENT_ASIO_ERROR_CODE  its error code: std::error_code or ::boost::system::error_code
// and including that Asio's <ip/tcp.hpp> and <any_io_executor.hpp>. No include guard on
// purpose: each flavour's wrapper has one, and each flavour needs its own copy of the names.

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <system_error>

#include "transient/policy/accept_policy.hpp"
#include "transient/policy/budget.hpp"
#include "transient/policy/events.hpp"

namespace transient::TRANSIENT_ASIO_FLAVOUR {

/// The Asio this adapter is for: `::asio` (standalone) or `::boost::asio`.
namespace net = TRANSIENT_ASIO_NET;

/// The error code of this Asio's operations: std::error_code (standalone) or
/// boost::system::error_code (which converts to std::error_code, and then compares equal to
/// transient::condition values).
using error_code = TRANSIENT_ASIO_ERROR_CODE;

/// The budget Asio loops share: the one every driver uses (shared_budget.hpp).
using shared_budget = transient::shared_budget;

/// One accepted connection, as the loop hands it to the handler: the socket, the permit that
/// holds its place in the budget, and the peer's address. Keep the permit as long as the
/// connection lasts (the budget counts it); it keeps the budget alive, so it may outlive the
/// loop, and the socket and the permit may be moved apart and dropped in any order.
struct accepted_socket {
  permit place;                 ///< The connection's place in the budget.
  net::ip::tcp::socket socket;  ///< The connection (FD_CLOEXEC set unless disabled).
  net::ip::tcp::endpoint peer;  ///< The client's address and port.
};

/// Writes a refusal (e.g. "HTTP/1.1 503 ...") on a connection shed with shed_mode::respond.
/// The socket is non-blocking and closed right after: write what fits, do not wait. An
/// exception it throws is caught, as for every driver (transient::refusal_writer): the
/// connection is shed anyway and counted in policy_metrics::refusals_failed.
using refusal_writer = std::function<void(net::ip::tcp::socket& socket, const net::ip::tcp::endpoint& peer)>;

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
  std::function<net::any_io_executor()> socket_executor{};
  /// While paused, how often the loop checks that the acceptor is still open (closing it is
  /// a clean stop, but a paused loop has no operation on it to be cancelled). 0: never.
  /// At most longest_setting (backoff.hpp); the loop throws invalid_argument otherwise.
  std::chrono::milliseconds close_check = std::chrono::milliseconds(500);
  /// Keep /proc/self/fd and /proc/sys/fs/file-nr open (two descriptors) so that a stall
  /// diagnosis can be written when no descriptor is free.
  bool diagnosis_fds = true;
  /// Set FD_CLOEXEC on accepted sockets (Asio 1.22 accepts with accept(2), without
  /// SOCK_CLOEXEC; a fork+exec on another thread in between can still inherit one).
  bool cloexec = true;
  /// Keep one spare descriptor (/dev/null) so that, under EMFILE, waiting clients can still be
  /// accepted and shed, up to accepts_per_ready at a time (libuv's trick), as the epoll server
  /// does: used only when the shed mode is not `queue` and the acceptor can accept
  /// synchronously. Another thread may take the number freed for a moment; the loop then
  /// takes its spare back before its next accept.
  bool spare_fd = true;
};

/// How an accept loop ended (the operation's second completion argument).
struct loop_report {
  std::error_code error;                 ///< Empty for a clean stop; else why (compare with transient::condition).
  std::string diagnosis;                 ///< For a failure: what was found and what to change.
  policy_metrics metrics;                ///< The policy's counters at the end.
  std::exception_ptr handler_exception;  ///< What the connection handler threw, if it did (it stops the loop).
};

}  // namespace transient::TRANSIENT_ASIO_FLAVOUR
