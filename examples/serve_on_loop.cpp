// examples/serve_on_loop.cpp: an echo server whose connections are served on the loop that
// accepted them (transient/drivers/server.hpp), by transient::server's threads: no hand-over, no lock.
//
//   transient_example_serve_on_loop [PORT [THREADS [MAX_CONNECTIONS [ADDRESS]]]]   (defaults:
//   8080, 2, the RLIMIT_NOFILE default, 127.0.0.1). SIGTERM or SIGINT stops accepting; each
//   loop then closes its connections, and the program exits with status 0.
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "transient/drivers/server.hpp"

namespace {

// One loop's connections: each gets back what it sends. (A short send closes the connection:
// a real server keeps the rest and watches EPOLLOUT, as tools/serve/serve_connections.cpp does.)
class echo final : public transient::loop_handler, public transient::io_watcher {
 public:
  explicit echo(transient::loop& l) : loop_(l) {}
  ~echo() override { on_accepting_end(); }
  echo(const echo&) = delete;
  echo& operator=(const echo&) = delete;

  void on_connection(transient::connection c) override {
    loop_.watch(c.native_handle(), EPOLLIN, *this);  // throws: `c` closes, the server stops
    open_.emplace(c.native_handle(), std::move(c));
  }
  void on_ready(int fd, std::uint32_t /*events*/) override {
    std::array<char, 4096> buffer{};
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    const bool echoed = n > 0 && ::send(fd, buffer.data(), static_cast<std::size_t>(n), MSG_NOSIGNAL) == n;
    if (!echoed && !(n < 0 && errno == EAGAIN)) {
      close(fd);  // end of stream, an error, or a short send
    }
  }
  void on_accepting_end() override {
    while (!open_.empty()) {
      close(open_.begin()->first);
    }
  }

 private:
  void close(int fd) {
    loop_.forget(fd);  // no more events of it: the close takes it out of the epoll set
    open_.erase(fd);   // closes it, then gives its place in the budget back
  }

  transient::loop& loop_;
  std::map<int, transient::connection> open_;
};

transient::server* running = nullptr;
extern "C" void on_signal(int /*signal*/) { running->stop(); }  // async-signal-safe; set before the handlers

}  // namespace

int main(int argc, char** argv) {
  const auto argument = [&](int i, const char* fallback) { return std::string(argc > i ? argv[i] : fallback); };
  try {
    transient::server_options options;
    options.threads = static_cast<unsigned>(std::stoul(argument(2, "2")));
    options.max_connections = std::stoull(argument(3, "0"));
    std::vector<transient::listener> listeners;
    listeners.push_back(
        transient::listen(transient::parse_endpoint(argument(4, "127.0.0.1") + ":" + argument(1, "8080"))));
    transient::server server(
        std::move(listeners), [](transient::loop& l) { return std::make_unique<echo>(l); }, options);
    running = &server;
    struct sigaction action {};
    action.sa_handler = on_signal;
    ::sigaction(SIGTERM, &action, nullptr);
    ::sigaction(SIGINT, &action, nullptr);
    std::fprintf(stderr, "serve_on_loop: listening on %s with %u thread(s)\n",
                 server.local_endpoints().front().to_string().c_str(), options.threads);
    server.run();  // throws unless the stop was clean
    std::fprintf(stderr, "serve_on_loop: stopped cleanly\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "serve_on_loop: %s\n", e.what());
    return 1;
  }
}
