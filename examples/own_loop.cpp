// examples/own_loop.cpp: transient::acceptor in an epoll loop the program owns. Each
// connection is served run-to-completion on the thread that accepted it (an echo server):
// no handoff, no other thread. The acceptor decides when to accept, pause (budget full,
// descriptors exhausted) and resume; the loop only passes it its events and its timeout.
//
//   transient_example_own_loop [PORT [MAX_CONNECTIONS [ADDRESS]]]   (defaults: 8080, the
//   RLIMIT_NOFILE default, 127.0.0.1). SIGTERM or SIGINT stops it cleanly (exit status 0).
#include <signal.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <unordered_map>

#include "transient/drivers/acceptor.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

// The acceptor's two epoll tags; every other tag is a connection's descriptor.
constexpr transient::acceptor_tags acceptor_tags{~std::uint64_t{0}, ~std::uint64_t{0} - 1};

std::atomic<transient::acceptor*> running{nullptr};

// acceptor::stop() is async-signal-safe: an atomic store and an eventfd write.
extern "C" void on_signal(int /*signal*/) {
  if (transient::acceptor* a = running.load()) {
    a->stop();
  }
}

// A readable connection: echo what arrived. False when it is finished: end of stream, an
// error, or a reply that does not fit the socket buffer (this example queues no output).
bool echo(int fd) {
  std::array<char, 4096> buffer{};
  for (;;) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0) {
      return errno == EAGAIN || errno == EINTR;
    }
    if (n == 0 || ::write(fd, buffer.data(), static_cast<std::size_t>(n)) != n) {
      return false;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string port = argc > 1 ? argv[1] : "8080";
  const std::uint64_t max_connections = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 0;
  const std::string address = argc > 3 ? argv[3] : "127.0.0.1";
  try {
    const transient::unique_fd epoll(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll) {
      throw std::system_error(errno, std::system_category(), "epoll_create1");
    }
    // The loop's connections. Erasing one closes it, then releases its permit: a paused
    // acceptor resumes at that release.
    std::unordered_map<int, transient::connection> open;
    auto on_connection = [&](transient::connection c) {
      epoll_event event{};
      event.events = EPOLLIN;
      event.data.u64 = static_cast<std::uint64_t>(c.native_handle());
      if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, c.native_handle(), &event) == 0) {
        open.emplace(c.native_handle(), std::move(c));
      }  // else `c` closes here
    };
    transient::acceptor_options options;
    options.max_connections = max_connections;
    transient::acceptor acceptor(epoll.get(), transient::listen(transient::parse_endpoint(address + ":" + port)),
                                 acceptor_tags, on_connection, options);
    running.store(&acceptor);
    struct sigaction action {};
    action.sa_handler = on_signal;
    ::sigaction(SIGTERM, &action, nullptr);
    ::sigaction(SIGINT, &action, nullptr);
    std::fprintf(stderr, "own_loop: listening on %s\n", acceptor.local_endpoint().to_string().c_str());

    std::array<epoll_event, 64> events{};
    while (!acceptor.done()) {
      const int n = ::epoll_wait(epoll.get(), events.data(), static_cast<int>(events.size()),
                                 acceptor.timeout_ms(clock_type::now()));
      const auto now = clock_type::now();
      for (int i = 0; i < n; ++i) {
        const epoll_event& event = events[static_cast<std::size_t>(i)];
        if (acceptor.handle(event, now)) {
          continue;
        }
        const int fd = static_cast<int>(event.data.u64);
        if (open.contains(fd) && !echo(fd)) {
          open.erase(fd);  // closing removes it from the epoll set
        }
      }
      acceptor.on_time(now);
    }
    running.store(nullptr);
    if (const transient::stop_info& result = acceptor.result(); !result.ok()) {
      std::fprintf(stderr, "own_loop: stopped: %s\n", result.diagnosis.c_str());
      return 1;
    }
    std::fprintf(stderr, "own_loop: stopped cleanly with %zu connection(s) open\n", open.size());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "own_loop: %s\n", e.what());
    return 1;
  }
}
