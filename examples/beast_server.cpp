// An HTTP/1.1 keep-alive server on Boost.Beast, accepting through
// transient::boost_asio::async_accept_loop: Beast's own async HTTP server example with its
// listener (a do_accept/on_accept loop that re-arms async_accept on every error, and so
// spins under EMFILE) replaced by the accept policy and a connection budget.
//
//   beast_server [PORT] [THREADS] [MAX_CONNECTIONS] [ADDRESS]
//                       (defaults: 8080, 1, from RLIMIT_NOFILE, 0.0.0.0; port 0: any free port)
//   curl -v http://127.0.0.1:8080/  ->  HTTP/1.1 200 OK, Content-Type: text/plain, "ok"
//
// Each request is answered "ok"; the connection stays open while the client asks for
// keep-alive. SIGINT or SIGTERM closes the acceptor (Boost 1.74 has no per-operation
// cancellation: closing the acceptor is the clean stop), and once the accept loop has ended
// the io_context stops, which closes the connections still open (a keep-alive client could
// otherwise hold the process forever).
#include "transient/adapters/boost_asio.hpp"  // first: it includes <utility> before Boost.Asio (g++ 12, C++20)

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;

// Beast's session, unchanged but for its constructor: it keeps the connection's place in
// the budget for as long as it lives.
class session : public std::enable_shared_from_this<session> {
 public:
  explicit session(transient::boost_asio::accepted_socket connection)
      : place_(std::move(connection.place)), stream_(std::move(connection.socket)) {}

  void run() { read_request(); }

 private:
  void read_request() {
    request_ = {};
    http::async_read(stream_, buffer_, request_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (!ec) {  // else the client left, or sent a bad request
        self->answer();
      }
    });
  }

  void answer() {
    auto response = std::make_shared<http::response<http::string_body>>(http::status::ok, request_.version());
    response->set(http::field::content_type, "text/plain");
    response->keep_alive(request_.keep_alive());
    response->body() = "ok";
    response->prepare_payload();
    http::async_write(stream_, *response, [self = shared_from_this(), response](beast::error_code ec, std::size_t) {
      if (!ec && response->keep_alive()) {
        self->read_request();
      }
    });
  }

  transient::permit place_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
};

unsigned long argument(int argc, char** argv, int index, unsigned long fallback) {
  return argc > index ? std::strtoul(argv[index], nullptr, 10) : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const auto port = static_cast<unsigned short>(argument(argc, argv, 1, 8080));
  const auto threads = static_cast<unsigned>(std::max(1UL, argument(argc, argv, 2, 1)));
  const char* address = argc > 4 ? argv[4] : "0.0.0.0";
  try {
    net::io_context io(static_cast<int>(threads));
    // A strand executor: the loop and our signal handler both touch the acceptor.
    net::ip::tcp::acceptor acceptor(net::make_strand(io), {net::ip::make_address(address), port});

    transient::boost_asio::loop_options options;
    options.max_connections = argument(argc, argv, 3, 0);  // 0: RLIMIT_NOFILE minus a headroom
    options.socket_executor = [&io] { return net::make_strand(io); };

    net::signal_set signals(acceptor.get_executor(), SIGINT, SIGTERM);
    signals.async_wait([&acceptor](beast::error_code ec, int) {
      if (!ec) {
        beast::error_code ignored;
        acceptor.close(ignored);  // on the acceptor's strand: the loop ends cleanly
      }
    });

    int status = 0;
    transient::boost_asio::async_accept_loop(
        acceptor, [](transient::boost_asio::accepted_socket c) { std::make_shared<session>(std::move(c))->run(); },
        options,
        [&](std::error_code ec, const transient::boost_asio::loop_report& r) {
          signals.cancel();
          io.stop();  // the accept loop is over: end the sessions too
          if (ec) {   // stalled, not listening...: say why and what to change
            std::fprintf(stderr, "beast_server: %s\n%s\n", ec.message().c_str(), r.diagnosis.c_str());
            status = 1;
          }
        });
    const auto bound = acceptor.local_endpoint();
    const std::string host =
        bound.address().is_v6() ? "[" + bound.address().to_string() + "]" : bound.address().to_string();
    std::fprintf(stderr, "beast_server: listening on %s:%u with %u thread(s)\n", host.c_str(),
                 static_cast<unsigned>(bound.port()), threads);

    std::vector<std::thread> pool;
    for (unsigned i = 1; i < threads; ++i) {
      pool.emplace_back([&io] { io.run(); });
    }
    io.run();
    for (auto& t : pool) {
      t.join();
    }
    return status;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "beast_server: %s\n", e.what());
    return 1;
  }
}
