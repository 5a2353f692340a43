// transient/sockets/unique_fd.hpp: the owner of one file descriptor, as the library hands out
// listeners and connections. Included by the other headers; include it alone to own a descriptor
// the RAII way. Design: docs/design.md, "Layers".
#pragma once

#include <unistd.h>

#include <utility>

namespace transient {

/// Move-only owner of a file descriptor: closes it on destruction. -1 means "none".
/// Every descriptor transient opens lives in one of these from the moment it exists.
class unique_fd {
 public:
  /// Owns nothing.
  unique_fd() noexcept = default;
  /// Takes ownership of `fd` (may be -1).
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& other) noexcept : fd_(other.release()) {}
  unique_fd& operator=(unique_fd&& other) noexcept {
    reset(other.release());
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }

  /// The descriptor, still owned (-1 if none).
  [[nodiscard]] int get() const noexcept { return fd_; }
  /// True if a descriptor is owned.
  explicit operator bool() const noexcept { return fd_ >= 0; }
  /// Gives up ownership without closing; returns the descriptor.
  [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }
  /// Closes the owned descriptor (if any) and owns `fd` instead. close() errors are
  /// ignored: on Linux the descriptor is released even when close() reports an error,
  /// so retrying would close someone else's descriptor.
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0 && fd_ != fd) {
      ::close(fd_);
    }
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace transient
