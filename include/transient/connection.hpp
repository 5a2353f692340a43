// transient/connection.hpp: one accepted connection, as a server hands it to its handler.
#pragma once

#include <memory>
#include <utility>

#include "transient/connection_budget.hpp"
#include "transient/endpoint.hpp"
#include "transient/unique_fd.hpp"

namespace transient {

/// An accepted TCP connection: the descriptor (CLOEXEC, non-blocking), the permit that holds
/// its place in the server's budget, and the peer's address. Move-only. Destroying it, on
/// any thread, closes the descriptor and then releases the permit; that order matters: a
/// server paused on EMFILE resumes at the release, and the descriptor must be free by then.
class connection {
 public:
  /// An empty connection.
  connection() noexcept = default;
  /// Owns `fd` and `place` for a connection from `peer`. `owner` keeps alive whatever the
  /// permit's budget lives in (the server passes its shared state, so a connection may
  /// outlive the server).
  connection(unique_fd fd, permit place, const endpoint& peer, std::shared_ptr<const void> owner = {}) noexcept
      : owner_(std::move(owner)), place_(std::move(place)), fd_(std::move(fd)), peer_(peer) {}
  connection(connection&& other) noexcept = default;
  connection& operator=(connection&& other) noexcept {
    if (this != &other) {
      close();
      owner_ = std::move(other.owner_);
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
  /// Closes the descriptor, then gives the place back (a paused server may resume).
  void close() noexcept {
    fd_.reset();
    place_.release();
    owner_.reset();
  }

 private:
  // Destruction runs in reverse order: the descriptor is closed, then the place released,
  // then the budget's owner let go.
  std::shared_ptr<const void> owner_;
  permit place_;
  unique_fd fd_;
  endpoint peer_;
};

}  // namespace transient
