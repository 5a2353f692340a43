// Loopback HTTP clients of `transient drill` (see drill_client.hpp).
#include "drill_client.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>

#include "serve/serve_http.hpp"

namespace transient::tool {
namespace {

using clock = std::chrono::steady_clock;

constexpr std::string_view request_text = "GET / HTTP/1.1\r\nHost: drill\r\n\r\n";

int wait_ms(clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now()).count();
  return static_cast<int>(std::clamp<std::int64_t>(left, 0, 60000));
}

// Length of the first complete response in `data`, 0 if incomplete.
std::size_t response_length(const std::string& data) {
  const std::size_t head = data.find("\r\n\r\n");
  if (head == std::string::npos) {
    return 0;
  }
  std::size_t body = 0;
  const std::size_t at = data.find("Content-Length: ");
  if (at != std::string::npos && at < head) {
    body = std::stoul(data.substr(at + 16, data.find("\r\n", at) - at - 16));
  }
  return data.size() >= head + 4 + body ? head + 4 + body : 0;
}

std::string request_for(const std::string& path) { return "GET " + path + " HTTP/1.1\r\nHost: drill\r\n\r\n"; }

bool send_text(int fd, std::string_view text) {
  return ::send(fd, text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size());
}

}  // namespace

unique_fd connect_and_request(const endpoint& to) {
  sockaddr_storage address{};
  const socklen_t length = to.to_sockaddr(address);
  unique_fd fd(::socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd || ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), length) != 0 ||
      !send_text(fd.get(), request_text)) {
    return {};
  }
  return fd;
}

bool send_request(int fd) { return send_text(fd, request_text); }

std::string read_response(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  std::string data;
  std::array<char, 4096> buffer{};
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, wait_ms(deadline)) <= 0) {
      return {};
    }
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), MSG_DONTWAIT);
    if (n <= 0) {
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        continue;
      }
      return {};
    }
    data.append(buffer.data(), static_cast<std::size_t>(n));
    if (const std::size_t length = response_length(data); length > 0) {
      return data.substr(0, length);
    }
  }
}

bool wait_closed(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  std::array<char, 4096> buffer{};
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, wait_ms(deadline)) <= 0) {
      return false;
    }
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      return true;
    }
  }
}

bool get_ok(const endpoint& to, std::chrono::milliseconds timeout) {
  const unique_fd fd = connect_and_request(to);
  return fd && read_response(fd.get(), timeout).rfind("HTTP/1.1 200 OK", 0) == 0;
}

namespace {

// A connection to `to` with a GET of `path` sent; empty on failure.
unique_fd request_path(const endpoint& to, const std::string& path) {
  sockaddr_storage address{};
  const socklen_t length = to.to_sockaddr(address);
  unique_fd fd(::socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd || ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), length) != 0 ||
      !send_text(fd.get(), request_for(path))) {
    return {};
  }
  return fd;
}

}  // namespace

int get_status(const endpoint& to, const std::string& path, std::chrono::milliseconds timeout) {
  const unique_fd fd = request_path(to, path);
  const std::string response = fd ? read_response(fd.get(), timeout) : std::string();
  return response.rfind("HTTP/1.1 ", 0) == 0 ? std::atoi(response.c_str() + 9) : 0;
}

std::string get_body(const endpoint& to, const std::string& path, std::chrono::milliseconds timeout) {
  const unique_fd fd = request_path(to, path);
  const std::string response = fd ? read_response(fd.get(), timeout) : std::string();
  if (response.rfind("HTTP/1.1 200 OK", 0) != 0) {
    return {};
  }
  return response.substr(response.find("\r\n\r\n") + 4);
}

}  // namespace transient::tool
