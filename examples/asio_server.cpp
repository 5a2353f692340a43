// A minimal HTTP/1.1 keep-alive responder on standalone Asio, accepting through
// transient::asio::accept_loop: the accept policy instead of a loop that re-arms
// async_accept on every error (and spins under EMFILE).
//
//   asio_server [PORT] [THREADS] [MAX_CONNECTIONS]     (defaults: 8080, 1, from RLIMIT_NOFILE)
//   curl -v http://127.0.0.1:8080/  ->  HTTP/1.1 200 OK, Content-Length: 2, "ok"
//
// Each request is read up to the blank line (CRLFCRLF) and answered "ok"; the connection
// stays open for further requests until the client closes it or sends "Connection: close".
// Request bodies are not read: this responder is for GET-style requests only. SIGINT or
// SIGTERM cancels the accept loop (a clean stop); connections end with their clients.
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 reports Asio's coroutine frame allocator as a new/delete mismatch (a false positive).
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#ifndef ASIO_STANDALONE
#define ASIO_STANDALONE 1
#endif

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/read_until.hpp>
#include <asio/signal_set.hpp>
#include <asio/strand.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "transient/asio.hpp"

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
// its permit for as long as the session lives, so the budget counts it.
asio::awaitable<void> session(transient::asio::accepted_socket connection) {
  std::string buffer;
  try {
    for (;;) {
      const std::size_t head = co_await asio::async_read_until(
          connection.socket, asio::dynamic_buffer(buffer, max_request), "\r\n\r\n", asio::use_awaitable);
      const bool close = asks_to_close(std::string_view(buffer).substr(0, head));
      buffer.erase(0, head);
      co_await asio::async_write(connection.socket, asio::buffer(response), asio::use_awaitable);
      if (close) {
        break;
      }
    }
  } catch (const std::system_error&) {
    // The client left (end of stream, reset) or sent more than max_request bytes of head.
  }
}

unsigned long argument(int argc, char** argv, int index, unsigned long fallback) {
  return argc > index ? std::strtoul(argv[index], nullptr, 10) : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const auto port = static_cast<unsigned short>(argument(argc, argv, 1, 8080));
  const auto threads = static_cast<unsigned>(std::max(1UL, argument(argc, argv, 2, 1)));
  try {
    asio::io_context io(static_cast<int>(threads));
    // A strand executor: the loop and our signal handler both touch the acceptor's state.
    asio::ip::tcp::acceptor acceptor(asio::make_strand(io), {asio::ip::make_address("0.0.0.0"), port});

    transient::asio::loop_options options;
    options.max_connections = argument(argc, argv, 3, 0);  // 0: RLIMIT_NOFILE minus a reserve
    options.socket_executor = [&io] { return asio::make_strand(io); };

    auto on_connection = [](transient::asio::accepted_socket connection) {
      const auto executor = connection.socket.get_executor();
      asio::co_spawn(executor, session(std::move(connection)), asio::detached);
    };

    asio::cancellation_signal stop;
    asio::signal_set signals(acceptor.get_executor(), SIGINT, SIGTERM);
    signals.async_wait([&](std::error_code ec, int) {
      if (!ec) {
        stop.emit(asio::cancellation_type::terminal);
      }
    });

    int status = 0;
    asio::co_spawn(acceptor.get_executor(), transient::asio::accept_loop(acceptor, on_connection, options),
                   asio::bind_cancellation_slot(stop.slot(), [&](std::exception_ptr e, transient::asio::loop_report) {
                     signals.cancel();
                     if (e) {
                       try {
                         std::rethrow_exception(e);
                       } catch (const std::exception& failure) {
                         std::fprintf(stderr, "asio_server: %s\n", failure.what());
                       }
                       status = 1;
                     }
                   }));
    std::fprintf(stderr, "asio_server: listening on 0.0.0.0:%u with %u thread(s)\n",
                 static_cast<unsigned>(acceptor.local_endpoint().port()), threads);

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
