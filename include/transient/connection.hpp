// transient/connection.hpp: one accepted connection, as a server hands it to its handler.
#pragma once

#include <utility>

#include "transient/connection_budget.hpp"
#include "transient/endpoint.hpp"
#include "transient/unique_fd.hpp"

namespace transient {

/// An accepted TCP connection: the descriptor (CLOEXEC, non-blocking), the permit that holds
/// its place in the server's budget, and the peer's address. Move-only. It may outlive the
/// server (the permit keeps the budget alive). Destroying it, on any thread, closes it.
class connection {
 public:
  /// An empty connection.
  connection() noexcept = default;
  /// Owns `fd` and `place` for a connection from `peer`.
  connection(unique_fd fd, permit place, const endpoint& peer) noexcept
      : place_(std::move(place)), fd_(std::move(fd)), peer_(peer) {}
  connection(connection&& other) noexcept = default;
  connection& operator=(connection&& other) noexcept {
    if (this != &other) {
      close();
      place_ = std::move(other.place_);
      fd_ = std::move(other.fd_);
      peer_ = other.peer_;
    }
    return *this;
  }
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection() { close(); }

  /// The descriptor (still owned), -1 if closed.
  [[nodiscard]] int native_handle() const noexcept { return fd_.get(); }
  /// The client's address and port.
  [[nodiscard]] const endpoint& peer() const noexcept { return peer_; }
  /// True while the connection is open.
  [[nodiscard]] bool is_open() const noexcept { return static_cast<bool>(fd_); }
  /// True while the connection is open.
  explicit operator bool() const noexcept { return is_open(); }
  /// Closes the descriptor, then gives the place back: a server paused on EMFILE resumes at
  /// the release and finds the descriptor free.
  void close() noexcept {
    fd_.reset();
    place_.release();
  }

 private:
  permit place_;
  unique_fd fd_;
  endpoint peer_;
};

}  // namespace transient
