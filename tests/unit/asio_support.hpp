// Helpers for the Asio adapter's tests: a listening acceptor on loopback, a bounded way to
// run an io_context until something holds, and a record of how a loop completed.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <system_error>
#include <utility>  // before Boost.Asio: Boost 1.74's awaitable.hpp needs it (C++20)

#include "transient/sockets/endpoint.hpp"

// The adapter's suites run against both flavours of Asio: the same test sources, compiled once
// for standalone Asio and once with TRANSIENT_TEST_BOOST_ASIO for Boost.Asio (tests/CMakeLists.txt).
#if TRANSIENT_TEST_BOOST_ASIO
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>

#include "transient/adapters/boost_asio.hpp"
#if BOOST_ASIO_VERSION >= 101900  // per-operation cancellation (Boost 1.77)
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#define TRANSIENT_TEST_HAS_CANCELLATION 1
#else
#define TRANSIENT_TEST_HAS_CANCELLATION 0
#endif
#if defined(BOOST_ASIO_HAS_CO_AWAIT)
#define TRANSIENT_TEST_HAS_CO_AWAIT 1
#else
#define TRANSIENT_TEST_HAS_CO_AWAIT 0
#endif
namespace transient::test {
namespace net = ::boost::asio;              ///< The Asio under test.
namespace adapter = transient::boost_asio;  ///< The adapter under test.
}  // namespace transient::test
#else
#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/post.hpp>
#include <asio/read.hpp>
#include <asio/strand.hpp>
#include <asio/write.hpp>

#include "transient/adapters/asio.hpp"
#if defined(ASIO_HAS_CO_AWAIT)
#define TRANSIENT_TEST_HAS_CO_AWAIT 1
#else
#define TRANSIENT_TEST_HAS_CO_AWAIT 0
#endif
#define TRANSIENT_TEST_HAS_CANCELLATION 1
namespace transient::test {
namespace net = ::asio;               ///< The Asio under test.
namespace adapter = transient::asio;  ///< The adapter under test.
}  // namespace transient::test
#endif

namespace transient::test {

/// The error code of the Asio under test's operations.
using net_error_code = adapter::error_code;

/// The generic category of the Asio under test's error codes.
inline const auto& generic_category() {
#if TRANSIENT_TEST_BOOST_ASIO
  return ::boost::system::generic_category();
#else
  return std::generic_category();
#endif
}

/// Stops a loop from the test: through the completion's cancellation slot where the Asio has
/// per-operation cancellation, else by closing the acceptor (the adapter's other clean stop;
/// a paused loop notices within loop_options::close_check). emit() runs where the acceptor's
/// operations run (its executor, or the io_context's only thread).
class stop_signal {
 public:
  /// `completion`, bound to this signal.
  template <typename Completion>
  auto bind(Completion completion) {
#if TRANSIENT_TEST_HAS_CANCELLATION
    return net::bind_cancellation_slot(signal_.slot(), std::move(completion));
#else
    return completion;
#endif
  }

  /// Requests the stop of the loop bound to this signal, which runs on `acceptor`.
  template <typename Acceptor>
  void emit(Acceptor& acceptor) {
#if TRANSIENT_TEST_HAS_CANCELLATION
    (void)acceptor;
    signal_.emit(net::cancellation_type::terminal);
#else
    net_error_code ignored;
    acceptor.close(ignored);
#endif
  }

 private:
#if TRANSIENT_TEST_HAS_CANCELLATION
  net::cancellation_signal signal_;
#endif
};

/// An acceptor listening on 127.0.0.1 at a free port.
inline net::ip::tcp::acceptor loopback_acceptor(net::io_context& io) {
  return net::ip::tcp::acceptor(io, net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
}

/// Where clients reach `acceptor`.
inline endpoint address_of(const net::ip::tcp::acceptor& acceptor) {
  return parse_endpoint("127.0.0.1:" + std::to_string(acceptor.local_endpoint().port()));
}

/// Runs `io` on this thread until `done()` holds or `limit` passes; returns done().
template <typename Predicate>
bool run_until(net::io_context& io, Predicate done, std::chrono::milliseconds limit = std::chrono::seconds(3)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_for(std::chrono::milliseconds(2));
  }
  return done();
}

/// Runs `io` for `period` (the loop may do what it wants meanwhile).
inline void run_for(net::io_context& io, std::chrono::milliseconds period) {
  const auto deadline = std::chrono::steady_clock::now() + period;
  while (std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_until(deadline);
  }
}

/// How a loop completed (filled by the completion handler completion_into() returns).
struct loop_outcome {
  bool done = false;
  std::error_code error;
  adapter::loop_report report;
};

/// A completion handler that records into `out`.
inline auto completion_into(loop_outcome& out) {
  return [&out](std::error_code ec, adapter::loop_report report) {
    out.done = true;
    out.error = ec;
    out.report = std::move(report);
  };
}

}  // namespace transient::test
