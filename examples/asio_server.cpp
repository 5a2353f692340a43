// A minimal HTTP/1.1 keep-alive responder on standalone Asio, accepting through
// transient::asio::async_accept_loop: the accept policy instead of a loop that re-arms
// async_accept on every error (and spins under EMFILE).
//
//   asio_server [PORT] [THREADS] [MAX_CONNECTIONS] [ADDRESS]
//                      (defaults: 8080, 1, from RLIMIT_NOFILE, 0.0.0.0; port 0: any free port)
//   curl -v http://127.0.0.1:8080/  ->  HTTP/1.1 200 OK, Content-Length: 2, "ok"
//
// Each request is read up to the blank line (CRLFCRLF) and answered "ok"; the connection
// stays open for further requests until the client closes it or sends "Connection: close".
// Request bodies are not read: this responder is for GET-style requests only. SIGINT or
// SIGTERM cancels the accept loop (a clean stop) and then stops the io_context, which closes
// the connections still open (a keep-alive client could otherwise hold the process forever).
#ifndef ASIO_STANDALONE
#define ASIO_STANDALONE 1
#endif

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/io_context.hpp>
#include <asio/read_until.hpp>
#include <asio/signal_set.hpp>
#include <asio/strand.hpp>
#include <asio/write.hpp>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "transient/adapters/asio.hpp"

namespace {

constexpr std::string_view response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";
constexpr std::size_t max_request = 8192;

// True if the request head asks to close the connection after the response.
bool asks_to_close(std::string_view head) {
  std::string lower(head);
  for (char& c : lower) {
    c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  }
  return lower.find("\r\nconnection: close") != std::string::npos;
}

// One connection: answer each request until the client leaves. The accepted_socket keeps
// its permit for as long as the session lives, so the budget counts it. Completion
// handlers rather than coroutines, so that it builds wherever Asio does.
class session : public std::enable_shared_from_this<session> {
 public:
  explicit session(transient::asio::accepted_socket connection) : connection_(std::move(connection)) {}

  void read_request() {
    asio::async_read_until(connection_.socket, asio::dynamic_buffer(buffer_, max_request), "\r\n\r\n",
                           [self = shared_from_this()](std::error_code ec, std::size_t head) {
                             if (!ec) {  // else the client left, or sent an oversized head
                               self->answer(head);
                             }
                           });
  }

 private:
  void answer(std::size_t head) {
    const bool close = asks_to_close(std::string_view(buffer_).substr(0, head));
    buffer_.erase(0, head);
    asio::async_write(connection_.socket, asio::buffer(response),
                      [self = shared_from_this(), close](std::error_code ec, std::size_t) {
                        if (!ec && !close) {
                          self->read_request();
                        }
                      });
  }

  transient::asio::accepted_socket connection_;
  std::string buffer_;
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
    asio::io_context io(static_cast<int>(threads));
    // A strand executor: the loop and our signal handler both touch the acceptor's state.
    asio::ip::tcp::acceptor acceptor(asio::make_strand(io), {asio::ip::make_address(address), port});

    transient::asio::loop_options options;
    options.max_connections = argument(argc, argv, 3, 0);  // 0: RLIMIT_NOFILE minus a headroom
    options.socket_executor = [&io] { return asio::make_strand(io); };

    auto on_connection = [](transient::asio::accepted_socket connection) {
      std::make_shared<session>(std::move(connection))->read_request();
    };

    asio::cancellation_signal stop;
    asio::signal_set signals(acceptor.get_executor(), SIGINT, SIGTERM);
    signals.async_wait([&](std::error_code ec, int) {
      if (!ec) {
        stop.emit(asio::cancellation_type::terminal);
      }
    });

    int status = 0;
    transient::asio::async_accept_loop(
        acceptor, on_connection, options,
        asio::bind_cancellation_slot(stop.slot(), [&](std::error_code ec, const transient::asio::loop_report& r) {
          signals.cancel();
          io.stop();  // the accept loop is over: end the sessions too
          if (ec) {   // stalled, not listening...: say why and what to change
            std::fprintf(stderr, "asio_server: %s\n%s\n", ec.message().c_str(), r.diagnosis.c_str());
            status = 1;
          }
        }));
    const auto bound = acceptor.local_endpoint();
    const std::string host =
        bound.address().is_v6() ? "[" + bound.address().to_string() + "]" : bound.address().to_string();
    std::fprintf(stderr, "asio_server: listening on %s:%u with %u thread(s)\n", host.c_str(),
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
    std::fprintf(stderr, "asio_server: %s\n", e.what());
    return 1;
  }
}
