// A `transient serve` child for the tests that run serve end to end, with what they ask of it:
// its addresses, an HTTP exchange on a keep-alive connection, and a stand-in for systemd's
// NOTIFY_SOCKET.
#pragma once

#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "support/loopback.hpp"
#include "support/spawned_process.hpp"
#include "transient/sockets/endpoint.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace transient::test {

/// The address in a line "PREFIX ADDRESS..." (up to the next space or "/").
inline std::optional<endpoint> address_after(const std::string& line, const std::string& prefix) {
  if (line.rfind(prefix, 0) != 0) {
    return std::nullopt;
  }
  const std::size_t end = line.find_first_of(" /", prefix.size());
  std::error_code ec;
  const endpoint at = parse_endpoint(line.substr(prefix.size(), end - prefix.size()), ec);
  return ec ? std::nullopt : std::optional(at);
}

/// A running `transient serve --listen 127.0.0.1:0 ARGS` (killed when destroyed) with its
/// serving, metrics and agent addresses. With the test knobs (--slow-response, --leak-per-connection),
/// `program` is the test fixture, which runs serve's own code with them.
class serve_process : public spawned_process {
 public:
  explicit serve_process(std::vector<std::string> args, const std::string& program = TRANSIENT_CLI_PATH)
      : spawned_process(program, with_serve(std::move(args))) {
    for (int i = 0; i < 3; ++i) {
      const std::string line = read_line(stream::out, std::chrono::seconds(5));
      if (auto m = address_after(line, "metrics on http://")) {
        metrics = m;
      } else if (auto a = address_after(line, "agent on ")) {
        agent = a;
      } else if (auto l = address_after(line, "listening on ")) {
        at = l;
        break;
      }
    }
  }
  std::optional<endpoint> at;       ///< "listening on ADDRESS (verified)"
  std::optional<endpoint> metrics;  ///< "metrics on http://ADDRESS/metrics"
  std::optional<endpoint> agent;    ///< "agent on ADDRESS"

 private:
  static std::vector<std::string> with_serve(std::vector<std::string> args) {
    args.insert(args.begin(), {"serve", "--listen", "127.0.0.1:0"});
    return args;
  }
};

/// Reads until the text holds a complete response (head and Content-Length body), the peer
/// closed, or `timeout` passed.
inline std::string read_response(int fd, std::chrono::milliseconds timeout) {
  std::string all;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    const std::size_t head = all.find("\r\n\r\n");
    if (head != std::string::npos) {
      const std::size_t length_at = all.find("Content-Length: ");
      const std::size_t body = length_at == std::string::npos ? 0 : std::stoul(all.substr(length_at + 16));
      if (all.size() >= head + 4 + body) {
        break;
      }
    }
    const std::string chunk = read_some(fd, std::chrono::milliseconds(20));
    if (chunk.empty() && closed_by_peer(fd, std::chrono::milliseconds(1))) {
      break;
    }
    all += chunk;
  }
  return all;
}

/// GET `path` on the keep-alive connection `fd`: the status code and the body ("" / 0 if none).
inline std::pair<int, std::string> query(int fd, const std::string& path) {
  if (!send_text(fd, "GET " + path + " HTTP/1.1\r\nHost: a\r\n\r\n")) {
    return {0, ""};
  }
  const std::string response = read_response(fd, std::chrono::milliseconds(2000));
  if (response.rfind("HTTP/1.1 ", 0) != 0 || response.find("\r\n\r\n") == std::string::npos) {
    return {0, response};
  }
  return {std::stoi(response.substr(9, 3)), response.substr(response.find("\r\n\r\n") + 4)};
}

/// A unix datagram socket standing in for systemd's NOTIFY_SOCKET, set in the environment
/// of the children started while it lives. `tag` keeps the paths of test programs apart.
class fake_notify_socket {
 public:
  explicit fake_notify_socket(const std::string& tag)
      : path_("/tmp/transient-notify-" + tag + "-" + std::to_string(::getpid())) {
    ::unlink(path_.c_str());
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    path_.copy(address.sun_path, path_.size());
    ok_ =
        static_cast<bool>(socket_) && ::bind(socket_.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
    ::setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  }
  ~fake_notify_socket() {
    ::unsetenv("NOTIFY_SOCKET");
    ::unlink(path_.c_str());
  }
  fake_notify_socket(const fake_notify_socket&) = delete;
  fake_notify_socket& operator=(const fake_notify_socket&) = delete;

  /// True if the socket is bound.
  [[nodiscard]] bool ok() const { return ok_; }

  /// The messages that arrive within `window`.
  std::vector<std::string> read_for(std::chrono::milliseconds window) {
    std::vector<std::string> messages;
    const auto deadline = std::chrono::steady_clock::now() + window;
    for (auto now = std::chrono::steady_clock::now(); now < deadline; now = std::chrono::steady_clock::now()) {
      const std::string m = read_some(socket_.get(), std::chrono::ceil<std::chrono::milliseconds>(deadline - now));
      if (!m.empty()) {
        messages.push_back(m);
      }
    }
    return messages;
  }

  /// The messages already waiting, without waiting for more.
  std::vector<std::string> read_queued() {
    std::vector<std::string> messages;
    for (std::string m = read_some(socket_.get(), std::chrono::milliseconds(0)); !m.empty();
         m = read_some(socket_.get(), std::chrono::milliseconds(0))) {
      messages.push_back(m);
    }
    return messages;
  }

  /// The first message containing `text` within `timeout` ("" if none came).
  std::string wait_for(const std::string& text, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (auto now = std::chrono::steady_clock::now(); now < deadline; now = std::chrono::steady_clock::now()) {
      const std::string m = read_some(socket_.get(), std::chrono::ceil<std::chrono::milliseconds>(deadline - now));
      if (m.find(text) != std::string::npos) {
        return m;
      }
    }
    return {};
  }

 private:
  std::string path_;
  unique_fd socket_{::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
  bool ok_ = false;
};

/// Sets RLIMIT_NOFILE's soft limit for the children started in its lifetime (a serve_process
/// made inside its scope starts with it), and gives the test's own limit back at its end.
class fd_limit_for_children {
 public:
  explicit fd_limit_for_children(rlim_t soft) {
    ::getrlimit(RLIMIT_NOFILE, &saved_);
    rlimit lowered = saved_;
    lowered.rlim_cur = soft;
    ::setrlimit(RLIMIT_NOFILE, &lowered);
  }
  ~fd_limit_for_children() { ::setrlimit(RLIMIT_NOFILE, &saved_); }
  fd_limit_for_children(const fd_limit_for_children&) = delete;
  fd_limit_for_children& operator=(const fd_limit_for_children&) = delete;

 private:
  rlimit saved_{};
};

/// A serve_process started with RLIMIT_NOFILE's soft limit `soft` (give it "--fd-limit keep",
/// or serve raises it); the test's own limit stays as it was.
inline std::unique_ptr<serve_process> serve_under_fd_limit(rlim_t soft, std::vector<std::string> args,
                                                           const std::string& program = TRANSIENT_CLI_PATH) {
  const fd_limit_for_children limit(soft);
  return std::make_unique<serve_process>(std::move(args), program);
}

/// Short connections to a serve started with --leak-per-connection, one after another, until
/// one gets no answer within 300 ms: the leak then holds every free descriptor. Returns that
/// client (empty if a connection failed, or if 100 were all answered).
inline unique_fd exhaust_by_leak(const endpoint& at) {
  for (int i = 0; i < 100; ++i) {
    unique_fd c = connect_to(at);
    if (!c || !send_text(c.get(), "GET / HTTP/1.1\r\nHost: a\r\n\r\n")) {
      return {};
    }
    if (read_response(c.get(), std::chrono::milliseconds(300)).find("\r\n\r\nok") == std::string::npos) {
      return c;
    }
  }
  return {};
}

}  // namespace transient::test
