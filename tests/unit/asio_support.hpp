// Helpers for the Asio adapter's tests: a listening acceptor on loopback, a bounded way to
// run an io_context until something holds, and a record of how a loop completed.
#pragma once

#include <gtest/gtest.h>

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <chrono>
#include <string>
#include <system_error>

#include "transient/asio.hpp"
#include "transient/endpoint.hpp"

namespace transient::test {

/// An acceptor listening on 127.0.0.1 at a free port.
inline ::asio::ip::tcp::acceptor loopback_acceptor(::asio::io_context& io) {
  return ::asio::ip::tcp::acceptor(io, ::asio::ip::tcp::endpoint(::asio::ip::make_address("127.0.0.1"), 0));
}

/// Where clients reach `acceptor`.
inline endpoint address_of(const ::asio::ip::tcp::acceptor& acceptor) {
  return parse_endpoint("127.0.0.1:" + std::to_string(acceptor.local_endpoint().port()));
}

/// Runs `io` on this thread until `done()` holds or `limit` passes; returns done().
template <typename Predicate>
bool run_until(::asio::io_context& io, Predicate done, std::chrono::milliseconds limit = std::chrono::seconds(3)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_for(std::chrono::milliseconds(2));
  }
  return done();
}

/// Runs `io` for `period` (the loop may do what it wants meanwhile).
inline void run_for(::asio::io_context& io, std::chrono::milliseconds period) {
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
  transient::asio::loop_report report;
};

/// A completion handler that records into `out`.
inline auto completion_into(loop_outcome& out) {
  return [&out](std::error_code ec, transient::asio::loop_report report) {
    out.done = true;
    out.error = ec;
    out.report = std::move(report);
  };
}

}  // namespace transient::test
