// `transient serve --fd-store`: the listeners go into systemd's file descriptor store at start-up
// (FDSTORE=1 with FDNAME=, each with its descriptor, to NOTIFY_SOCKET), and a start with
// LISTEN_FDS from the store takes them back by name instead of opening them.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "support/agent_check.hpp"
#include "support/loopback.hpp"
#include "support/serve_process.hpp"
#include "transient/sockets/listener.hpp"

namespace {

using namespace std::chrono_literals;
using testing::HasSubstr;
using transient::endpoint;
using transient::unique_fd;
using transient::test::spawned_process;

// A stand-in for systemd's NOTIFY_SOCKET that keeps the descriptors sent with each message.
class fd_store_socket {
 public:
  fd_store_socket() : path_("/tmp/transient-fdstore-" + std::to_string(::getpid())) {
    ::unlink(path_.c_str());
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    path_.copy(address.sun_path, path_.size());
    ok_ = ::bind(socket_.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
    ::setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  }
  ~fd_store_socket() {
    ::unsetenv("NOTIFY_SOCKET");
    ::unlink(path_.c_str());
  }
  fd_store_socket(const fd_store_socket&) = delete;
  fd_store_socket& operator=(const fd_store_socket&) = delete;

  [[nodiscard]] bool ok() const { return ok_; }

  // The next message containing `text` within `timeout`, and the descriptor it carried.
  std::pair<std::string, unique_fd> wait_for(const std::string& text, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{socket_.get(), POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) {
        continue;
      }
      std::array<char, 4096> data{};
      alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int))> control{};
      iovec io{data.data(), data.size()};
      msghdr m{};
      m.msg_iov = &io;
      m.msg_iovlen = 1;
      m.msg_control = control.data();
      m.msg_controllen = control.size();
      const ssize_t n = ::recvmsg(socket_.get(), &m, MSG_CMSG_CLOEXEC);
      unique_fd passed;
      if (const cmsghdr* c = CMSG_FIRSTHDR(&m); c != nullptr && c->cmsg_type == SCM_RIGHTS) {
        int fd = -1;
        std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
        passed = unique_fd(fd);
      }
      const std::string message(data.data(), n > 0 ? static_cast<std::size_t>(n) : 0);
      if (message.find(text) != std::string::npos) {
        return {message, std::move(passed)};
      }
    }
    return {};
  }

 private:
  std::string path_;
  unique_fd socket_{::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
  bool ok_ = false;
};

// The local address of the socket `fd` (nullopt if none).
std::optional<endpoint> local_of(int fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return std::nullopt;
  }
  std::error_code ec;
  const endpoint at = endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&address), length, ec);
  return ec ? std::nullopt : std::optional(at);
}

TEST(ServeFdStore, StoresItsListenersByNameWhenNotifySocketIsSet) {
  fd_store_socket store;
  ASSERT_TRUE(store.ok());
  transient::test::serve_process serve({"--fd-store", "--metrics", "127.0.0.1:0", "--agent", "127.0.0.1:0"});
  ASSERT_TRUE(serve.at && serve.metrics && serve.agent) << serve.stderr_text();
  for (const auto& [name, at] :
       {std::pair{"http", *serve.at}, std::pair{"metrics", *serve.metrics}, std::pair{"agent", *serve.agent}}) {
    const auto [message, fd] = store.wait_for(std::string("FDNAME=") + name, 2000ms);
    EXPECT_THAT(message, HasSubstr("FDSTORE=1")) << name;
    ASSERT_TRUE(fd) << name << ": no descriptor came with the message";
    EXPECT_EQ(local_of(fd.get()), at) << name << ": the descriptor stored is not the listener";
  }
}

// serve started as systemd starts it from the store: the listeners at descriptors 3, 4 (and 5
// with an agent listener), LISTEN_FDS=2 (3), LISTEN_FDNAMES=http:metrics(:agent), LISTEN_PID
// its own.
class from_store {
 public:
  from_store(const transient::listener& http, const transient::listener& metrics, std::vector<std::string> args,
             const transient::listener* agent = nullptr) {
    std::vector<const transient::listener*> stored{&http, &metrics};
    if (agent != nullptr) {
      stored.push_back(agent);
    }
    std::string command = "exec";
    for (std::size_t i = 0; i < stored.size(); ++i) {
      // without CLOEXEC: bash passes them on (dash takes one digit)
      copies_.emplace_back(::fcntl(stored[i]->native_handle(), F_DUPFD, 10));
      command += " " + std::to_string(3 + i) + "<&" + std::to_string(copies_.back().get());
    }
    command += " && export LISTEN_PID=$$ LISTEN_FDS=" + std::to_string(stored.size()) + " LISTEN_FDNAMES=http:metrics" +
               (agent != nullptr ? ":agent" : "") + " && exec \"$0\" serve";
    for (const std::string& a : args) {
      command += " " + a;
    }
    process.emplace("/bin/bash", std::vector<std::string>{"-c", command, TRANSIENT_CLI_PATH});
  }
  std::optional<spawned_process> process;

 private:
  std::vector<unique_fd> copies_;
};

TEST(ServeFdStore, TakesTheStoredListenersByNameInsteadOfOpeningThem) {
  const transient::listener http = transient::listen(endpoint::loopback_v4(0));
  const transient::listener metrics = transient::listen(endpoint::loopback_v4(0));
  from_store serve(http, metrics,
                   {"--fd-store", "--listen", http.local_endpoint().to_string(), "--metrics", "127.0.0.1:0"});
  EXPECT_EQ(serve.process->read_line(spawned_process::stream::out, 5s),
            "metrics on http://" + metrics.local_endpoint().to_string() + "/metrics");
  EXPECT_EQ(serve.process->read_line(spawned_process::stream::out, 5s),
            "listening on " + http.local_endpoint().to_string() + " (verified)")
      << serve.process->stderr_text();
  unique_fd c = transient::test::connect_to(http.local_endpoint());
  ASSERT_TRUE(c);
  const std::pair<int, std::string> ok{200, "ok"};
  EXPECT_EQ(transient::test::query(c.get(), "/"), ok);
  const unique_fd probe = transient::test::connect_to(metrics.local_endpoint());
  EXPECT_EQ(transient::test::query(probe.get(), "/healthz").first, 200);
  c.reset();  // the drain would wait for its next request
  serve.process->signal(SIGTERM);
  EXPECT_EQ(serve.process->wait(5s), 0);
}

// The agent port's listener comes back by name too, and answers.
TEST(ServeFdStore, TakesTheStoredAgentListenerByName) {
  const transient::listener http = transient::listen(endpoint::loopback_v4(0));
  const transient::listener metrics = transient::listen(endpoint::loopback_v4(0));
  const transient::listener agent = transient::listen(endpoint::loopback_v4(0));
  from_store serve(http, metrics,
                   {"--fd-store", "--listen", http.local_endpoint().to_string(), "--metrics", "127.0.0.1:0", "--agent",
                    agent.local_endpoint().to_string()},
                   &agent);
  EXPECT_EQ(serve.process->read_line(spawned_process::stream::out, 5s),
            "metrics on http://" + metrics.local_endpoint().to_string() + "/metrics");
  EXPECT_EQ(serve.process->read_line(spawned_process::stream::out, 5s),
            "agent on " + agent.local_endpoint().to_string());
  EXPECT_EQ(serve.process->read_line(spawned_process::stream::out, 5s),
            "listening on " + http.local_endpoint().to_string() + " (verified)")
      << serve.process->stderr_text();
  EXPECT_EQ(transient::test::agent_check(agent.local_endpoint()).text, "up ready 100%\n");
  serve.process->signal(SIGTERM);
  EXPECT_EQ(serve.process->wait(5s), 0);
}

TEST(ServeFdStore, AStoredListenerOnAnotherAddressThanListenIsAnError) {
  const transient::listener http = transient::listen(endpoint::loopback_v4(0));
  const transient::listener metrics = transient::listen(endpoint::loopback_v4(0));
  const transient::listener other = transient::listen(endpoint::loopback_v4(0));  // its port, not http's
  from_store serve(http, metrics, {"--fd-store", "--listen", other.local_endpoint().to_string()});
  EXPECT_NE(serve.process->wait(5s).value_or(0), 0);
  const std::string err = serve.process->stderr_text();
  EXPECT_THAT(err, HasSubstr("the listener \"http\" systemd passed from its store is on " +
                             http.local_endpoint().to_string() + ", not on " + other.local_endpoint().to_string()));
}

}  // namespace
