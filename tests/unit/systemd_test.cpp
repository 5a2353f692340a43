// systemd socket activation: a child process receives listeners as descriptors 3, 4, ... with
// LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES set, exactly as systemd hands them over, and
// reports what listeners_from_systemd made of them through a pipe.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <string>

#include "transient/errors/errors.hpp"
#include "transient/sockets/listener.hpp"

namespace {

using transient::endpoint;
using transient::listener;

// Runs `body` in a forked child; returns what it wrote, or a failure text. Bounded: the child
// is killed (by pid) if it has not finished within 10 s.
std::string in_child(const std::function<std::string()>& body) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return "pipe2 failed";
  }
  transient::unique_fd read_end(fds[0]);
  transient::unique_fd write_end(fds[1]);
  const pid_t child = ::fork();
  if (child == 0) {
    ::alarm(10);
    // Keep the result pipe clear of descriptors 3.. that the body hands over.
    const int out = ::fcntl(write_end.get(), F_DUPFD_CLOEXEC, 100);
    std::string text;
    try {
      text = body();
    } catch (const std::exception& e) {
      text = std::string("exception: ") + e.what();
    }
    const bool written = ::write(out, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    ::_exit(written ? 0 : 1);
  }
  write_end.reset();
  if (child < 0) {
    return "fork failed";
  }
  std::string text;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{read_end.get(), POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) {
      continue;
    }
    char buffer[512];
    const ssize_t n = ::read(read_end.get(), buffer, sizeof buffer);
    if (n <= 0) {
      break;
    }
    text.append(buffer, static_cast<std::size_t>(n));
  }
  int status = 0;
  while (::waitpid(child, &status, WNOHANG) == 0) {  // EOF comes before the exit is reapable
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(child, SIGKILL);
      ::waitpid(child, &status, 0);
      return "child timed out: " + text;
    }
    ::usleep(1000);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return "child failed: " + text;
  }
  return text;
}

// In the child: places `fds` at 3, 4, ... without CLOEXEC, as systemd does.
void hand_over(std::initializer_list<int> fds) {
  std::vector<int> high;
  for (const int fd : fds) {
    high.push_back(::fcntl(fd, F_DUPFD_CLOEXEC, 200));  // out of the way of 3, 4, ...
  }
  int target = 3;
  for (const int fd : high) {
    ::dup2(fd, target++);  // dup2 leaves the new descriptor without CLOEXEC
  }
}

void set_environment(const char* pid, const char* count, const char* names) {
  ::setenv("LISTEN_PID", pid, 1);
  ::setenv("LISTEN_FDS", count, 1);
  if (names != nullptr) {
    ::setenv("LISTEN_FDNAMES", names, 1);
  } else {
    ::unsetenv("LISTEN_FDNAMES");
  }
}

// systemd hands over blocking sockets; listen() makes non-blocking ones. O_NONBLOCK belongs to
// the open file description, which the child shares, so clear it before handing over.
void make_blocking(const listener& l) {
  ::fcntl(l.native_handle(), F_SETFL, ::fcntl(l.native_handle(), F_GETFL) & ~O_NONBLOCK);
}

std::string flags_of(int fd) {
  return std::string((::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0 ? "cloexec" : "inheritable") + "," +
         ((::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0 ? "nonblocking" : "blocking");
}

TEST(Systemd, TakesNamedListenersSetsCloexecAndUnsetsTheEnvironment) {
  const listener web = transient::listen(endpoint::loopback_v4(0));
  const listener admin = transient::listen(endpoint::loopback_v6(0));
  make_blocking(web);
  make_blocking(admin);
  const std::string got = in_child([&] {
    hand_over({web.native_handle(), admin.native_handle()});
    set_environment(std::to_string(::getpid()).c_str(), "2", "web:admin");
    const std::string before = flags_of(3) + " " + flags_of(4);
    transient::systemd_options options;
    options.unset_environment = true;
    auto listeners = transient::listeners_from_systemd(options);
    std::string text = "before " + before + " |";
    for (const auto& l : listeners) {
      text += " " + l.name + "=" + l.socket.local_endpoint().to_string() + "@" +
              std::to_string(l.socket.native_handle()) + "(" + flags_of(l.socket.native_handle()) + ")";
    }
    const listener taken = transient::take_listener(listeners, "admin");
    text += " | take admin: " + (taken ? taken.local_endpoint().to_string() : std::string("none"));
    text += " | take nothing: " + std::string(transient::take_listener(listeners, "nothing") ? "found" : "none");
    text += std::string(" | env ") + (std::getenv("LISTEN_FDS") == nullptr && std::getenv("LISTEN_PID") == nullptr &&
                                              std::getenv("LISTEN_FDNAMES") == nullptr
                                          ? "unset"
                                          : "still set");
    return text;
  });
  const std::string expected =
      "before inheritable,blocking inheritable,blocking | web=" + web.local_endpoint().to_string() +
      "@3(cloexec,nonblocking) admin=" + admin.local_endpoint().to_string() +
      "@4(cloexec,nonblocking) | take admin: " + admin.local_endpoint().to_string() +
      " | take nothing: none | env unset";
  EXPECT_EQ(got, expected);
}

TEST(Systemd, UnnamedSocketsAreUnknownAndEnvironmentStaysByDefault) {
  const listener l = transient::listen(endpoint::loopback_v4(0));
  const std::string got = in_child([&] {
    hand_over({l.native_handle()});
    set_environment(std::to_string(::getpid()).c_str(), "1", nullptr);
    const auto listeners = transient::listeners_from_systemd();
    return listeners.at(0).name + " " + listeners.at(0).socket.local_endpoint().to_string() + " " +
           (std::getenv("LISTEN_FDS") != nullptr ? "kept" : "unset");
  });
  EXPECT_EQ(got, "unknown " + l.local_endpoint().to_string() + " kept");
}

TEST(Systemd, SocketsForAnotherProcessAreNotTaken) {
  const listener l = transient::listen(endpoint::loopback_v4(0));
  make_blocking(l);
  const std::string got = in_child([&] {
    hand_over({l.native_handle()});
    set_environment(std::to_string(::getppid()).c_str(), "1", "web");
    std::error_code ec;
    const auto listeners = transient::listeners_from_systemd({}, ec);
    return std::string(ec == transient::error::no_systemd_sockets ? "no_systemd_sockets" : ec.message()) + " " +
           std::to_string(listeners.size()) + " fd3 " + flags_of(3);
  });
  EXPECT_EQ(got, "no_systemd_sockets 0 fd3 inheritable,blocking");
}

TEST(Systemd, MissingOrMalformedVariablesAreErrors) {
  const std::string got = in_child([] {
    std::string text;
    ::unsetenv("LISTEN_PID");
    ::unsetenv("LISTEN_FDS");
    std::error_code ec;
    (void)transient::listeners_from_systemd({}, ec);
    text += ec == transient::error::no_systemd_sockets ? "absent:no_systemd_sockets" : "absent:" + ec.message();
    const std::string pid = std::to_string(::getpid());
    set_environment(pid.c_str(), "0", nullptr);
    (void)transient::listeners_from_systemd({}, ec);
    text += ec == transient::error::no_systemd_sockets ? " zero:no_systemd_sockets" : " zero:" + ec.message();
    set_environment(pid.c_str(), "two", nullptr);
    (void)transient::listeners_from_systemd({}, ec);
    text += ec == std::errc::invalid_argument ? " garbage:einval" : " garbage:" + ec.message();
    set_environment(pid.c_str(), "2", "only-one");
    transient::listen_report report;
    (void)transient::listeners_from_systemd({}, report);
    text += report.error == std::errc::invalid_argument ? " names:einval" : " names:" + report.error.message();
    text +=
        report.message.find("1 names for LISTEN_FDS=2") != std::string::npos ? " (explained)" : " " + report.message;
    return text;
  });
  EXPECT_EQ(got, "absent:no_systemd_sockets zero:no_systemd_sockets garbage:einval names:einval (explained)");
}

TEST(Systemd, ANonListeningSocketFailsVerification) {
  transient::unique_fd bound(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_storage address{};
  const socklen_t length = endpoint::loopback_v4(0).to_sockaddr(address);
  ASSERT_EQ(::bind(bound.get(), reinterpret_cast<const sockaddr*>(&address), length), 0);
  const std::string got = in_child([&] {
    hand_over({bound.get()});
    set_environment(std::to_string(::getpid()).c_str(), "1", "api");
    try {
      (void)transient::listeners_from_systemd();
      return std::string("accepted");
    } catch (const std::system_error& e) {
      const std::string what = e.what();
      return std::string(e.code() == transient::error::not_listening ? "not_listening" : e.code().message()) +
             (what.find("'api'") != std::string::npos && what.find("not listening") != std::string::npos ? " named"
                                                                                                         : " " + what) +
             " fd3 " + (::fcntl(3, F_GETFD) < 0 ? "closed" : "open");
    }
  });
  EXPECT_EQ(got, "not_listening named fd3 closed");
}

TEST(Systemd, ANonSocketIsRefused) {
  const std::string got = in_child([] {
    int p[2];
    if (::pipe(p) != 0) {
      return std::string("pipe failed");
    }
    hand_over({p[0]});
    set_environment(std::to_string(::getpid()).c_str(), "1", nullptr);
    std::error_code ec;
    (void)transient::listeners_from_systemd({}, ec);
    return std::string(ec == std::errc::not_a_socket ? "not_a_socket" : ec.message());
  });
  EXPECT_EQ(got, "not_a_socket");
}

}  // namespace
