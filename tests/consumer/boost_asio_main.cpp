// Uses the Boost.Asio adapter as a user would, with nothing but the adapter's header and
// Boost's (listener.hpp and unique_fd.hpp are for the verified listener, which the adapter
// does not need): opens a verified listener on 127.0.0.1 (any free port), hands it to a
// boost::asio::ip::tcp::acceptor, runs transient::boost_asio::async_accept_loop with a budget
// of 4, connects to itself once, and exits 0 only if that connection was accepted with a
// permit, the loop then stopped cleanly and the policy counted one connection. A timer fails
// the run after 10 s, so it never hangs.
//
// <transient/adapters/boost_asio.hpp> comes first, before any Boost.Asio header, and this file
// includes no <utility> of its own: under g++ 12 in C++20, Boost 1.74's <boost/asio.hpp>
// alone does not compile (awaitable.hpp uses std::exchange without including <utility>), so
// this program builds only if the adapter's header is enough.
#include <transient/adapters/boost_asio.hpp>

#include <boost/asio.hpp>
#include <transient/sockets/listener.hpp>
#include <transient/sockets/unique_fd.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <system_error>

namespace {

namespace net = boost::asio;

// What the run saw, checked at the end.
struct outcome {
  bool accepted = false;            // the handler got a connection
  bool with_permit = false;         // ... holding a place in the budget
  bool loop_done = false;           // the loop completed
  bool timed_out = false;           // the 10 s timer fired first
  std::error_code loop_error;       // the loop's completion code
  std::string diagnosis;            // ... and its diagnosis, for a failure
  std::uint64_t counted = 0;        // policy_metrics::accepted at the end
  std::uint64_t budget = 0;         // policy_metrics::max_connections at the end
  net::ip::tcp::endpoint peer{};    // accepted_socket::peer
  net::ip::tcp::endpoint client{};  // the client's local endpoint
};

bool check(bool ok, const char* what) {
  if (!ok) {
    std::printf("boost_asio consumer: FAILED: %s\n", what);
  }
  return ok;
}

}  // namespace

int main() {
  std::error_code ec;
  transient::listener verified = transient::listen(transient::parse_endpoint("127.0.0.1:0"), {}, ec);
  if (ec) {
    std::printf("boost_asio consumer: listen failed: %s\n", ec.message().c_str());
    return 1;
  }
  const unsigned short port = verified.local_endpoint().port();

  net::io_context io;
  // A strand: the loop, the timer and the handler all touch the acceptor.
  net::ip::tcp::acceptor acceptor(net::make_strand(io));
  transient::unique_fd fd = verified.release();
  boost::system::error_code assign_error;
  acceptor.assign(net::ip::tcp::v4(), fd.get(), assign_error);
  if (assign_error) {
    std::printf("boost_asio consumer: assign failed: %s\n", assign_error.message().c_str());
    return 1;  // `fd` still owns the descriptor and closes it
  }
  (void)fd.release();  // the acceptor owns it now

  outcome seen;
  net::steady_timer deadline(acceptor.get_executor(), std::chrono::seconds(10));
  deadline.async_wait([&](boost::system::error_code wait_error) {
    if (!wait_error) {
      seen.timed_out = true;
      boost::system::error_code ignored;
      acceptor.close(ignored);  // ends the loop, if it is still running
      io.stop();
    }
  });

  transient::boost_asio::loop_options options;
  options.max_connections = 4;
  transient::boost_asio::async_accept_loop(
      acceptor,
      [&](transient::boost_asio::accepted_socket c) {
        seen.accepted = true;
        seen.with_permit = static_cast<bool>(c.place);
        seen.peer = c.peer;
        boost::system::error_code ignored;
        acceptor.close(ignored);  // one connection is all this program wants: a clean stop
      },
      options,
      [&](std::error_code loop_error, const transient::boost_asio::loop_report& report) {
        seen.loop_done = true;
        seen.loop_error = loop_error;
        seen.diagnosis = report.diagnosis;
        seen.counted = report.metrics.accepted;
        seen.budget = report.metrics.max_connections;
        deadline.cancel();
      });

  net::ip::tcp::socket client(io);
  client.async_connect({net::ip::make_address_v4("127.0.0.1"), port}, [&](boost::system::error_code connect_error) {
    if (connect_error) {
      std::printf("boost_asio consumer: connect failed: %s\n", connect_error.message().c_str());
      return;
    }
    seen.client = client.local_endpoint();
  });

  io.run_for(std::chrono::seconds(15));  // the deadline fires at 10 s: a second bound, never reached

  std::printf(
      "boost_asio consumer: Boost %d.%d, port %u, accepted %d (permit %d), loop %s, counted %llu of %llu\n",
      BOOST_VERSION / 100000, BOOST_VERSION / 100 % 1000, static_cast<unsigned>(port), static_cast<int>(seen.accepted),
      static_cast<int>(seen.with_permit),
      seen.loop_done ? (seen.loop_error ? seen.loop_error.message().c_str() : "stopped cleanly") : "still running",
      static_cast<unsigned long long>(seen.counted), static_cast<unsigned long long>(seen.budget));
  if (!seen.diagnosis.empty()) {
    std::printf("%s\n", seen.diagnosis.c_str());
  }
  const bool ok =
      check(!seen.timed_out, "no connection within 10 s") && check(seen.accepted, "the handler was not called") &&
      check(seen.with_permit, "the connection came without a permit") &&
      check(seen.peer == seen.client, "accepted_socket::peer is not the client's address") &&
      check(seen.loop_done, "the loop did not complete") && check(!seen.loop_error, "the loop did not stop cleanly") &&
      check(seen.counted == 1, "policy_metrics::accepted is not 1") &&
      check(seen.budget == 4, "the budget is not the 4 asked for");
  return ok ? 0 : 1;
}
