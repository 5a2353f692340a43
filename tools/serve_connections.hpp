// The connection side of `transient serve`: one thread with its own epoll set reads requests,
// writes responses and enforces the idle timeout for the connections the accept loop hands it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "serve_http.hpp"
#include "transient/connection.hpp"
#include "transient/unique_fd.hpp"

namespace transient::tool {

/// Builds the response to one complete request (serve: "ok"; the metrics port: the metrics).
using responder = std::function<std::string(const parsed_request&)>;

/// An HTTP/1.1 keep-alive connection loop: pipelined requests are answered in order, a bad or
/// oversized request gets 400 and a close, a connection idle for `idle_timeout` is closed.
/// add() and stop() are thread-safe; run() runs on one thread.
class connection_io {
 public:
  /// Creates the epoll set and the wake-up eventfd (two descriptors). Throws std::system_error.
  connection_io(std::chrono::milliseconds idle_timeout, responder respond);
  ~connection_io();
  connection_io(const connection_io&) = delete;
  connection_io& operator=(const connection_io&) = delete;

  /// Calls `hook` on the loop thread after each connection is closed (set before run()).
  void set_after_close(std::function<void()> hook) { after_close_ = std::move(hook); }
  /// Hands a connection over (from the accept loop's thread). After stop(), it is closed.
  void add(connection c);
  /// Serves until stop(); closes every connection before returning.
  void run();
  /// Makes run() return soon. Async-signal-safe (an atomic store and a write(2)).
  void stop() noexcept;
  /// Connections open now (approximate while run() is busy).
  [[nodiscard]] std::size_t open_connections() const noexcept { return open_.load(std::memory_order_relaxed); }

 private:
  using clock = std::chrono::steady_clock;
  struct client {
    connection conn;
    std::string in;
    std::string out;
    bool close_after_write = false;
    bool draining = false;  // response sent and write side shut: discard input until EOF or deadline
    bool writing = false;   // EPOLLOUT in the interest set
    bool reading = true;    // EPOLLIN in the interest set
    clock::time_point last{};
    std::list<int>::iterator age;  // position in idle_order_
  };

  void take_pending(clock::time_point now);
  void on_event(int fd, unsigned events, clock::time_point now);
  void read_from(client& c, clock::time_point now);
  void answer(client& c);
  void flush(client& c);
  void update_interest(client& c);
  void touch(client& c, clock::time_point now);
  void close_client(int fd);
  int next_timeout(clock::time_point now) const;
  void expire(clock::time_point now);

  std::chrono::milliseconds idle_timeout_;
  responder respond_;
  std::function<void()> after_close_;
  unique_fd epoll_;
  unique_fd wake_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> open_{0};
  std::mutex mutex_;  // guards pending_ and stopped_
  std::vector<connection> pending_;
  bool stopped_ = false;
  std::unordered_map<int, std::unique_ptr<client>> clients_;
  std::list<int> idle_order_;  // least recently active first
};

}  // namespace transient::tool
