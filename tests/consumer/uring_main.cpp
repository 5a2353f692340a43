// Uses the io_uring driver (transient::uring) as a user would: links it, which needs liburing
// found on this machine, not where transient was built. Where io_uring is available it accepts
// one connection from itself on 127.0.0.1 through a uring_acceptor (bounded: 50 waits of
// 100 ms) and checks that the connection holds one place in the budget while it is open and
// gives it back when closed. Where io_uring is not available (an old kernel,
// io_uring_disabled, a seccomp filter) only the link is under test: uring_available() must
// then say why. Exits 0 only if everything is as expected.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <transient/drivers/uring.hpp>
#include <transient/sockets/listener.hpp>
#include <transient/sockets/unique_fd.hpp>

int main() {
  std::string why;
  if (!transient::uring_available(why)) {
    std::printf("uring consumer: linked; io_uring is not available here: %s\n", why.c_str());
    return why.empty() ? 1 : 0;
  }
  std::error_code ec;
  transient::listener verified = transient::listen(transient::parse_endpoint("127.0.0.1:0"), {}, ec);
  if (ec) {
    std::printf("uring consumer: listen failed: %s\n", ec.message().c_str());
    return 1;
  }
  const unsigned short port = verified.local_endpoint().port();
  std::vector<transient::connection> held;  // kept open, so its place stays taken
  transient::uring_acceptor acceptor(std::move(verified),
                                     [&held](transient::connection c) { held.push_back(std::move(c)); });

  const transient::unique_fd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (!client || ::connect(client.get(), reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0) {
    std::printf("uring consumer: connect failed\n");
    return 1;
  }
  for (int i = 0; i < 50 && held.empty(); ++i) {
    acceptor.wait(std::chrono::milliseconds(100));
  }
  const std::size_t accepted = held.size();
  const bool open = accepted == 1 && held.front().is_open();
  const transient::connection_budget& budget = acceptor.budget()->budget();
  const std::uint64_t live_while_held = budget.live();
  held.clear();  // closes the connection and gives its place back
  const std::uint64_t live_after = budget.live();
  std::printf("uring consumer: port %u, accepted %zu (open %d), places taken while held %llu, after close %llu\n",
              static_cast<unsigned>(port), accepted, static_cast<int>(open),
              static_cast<unsigned long long>(live_while_held), static_cast<unsigned long long>(live_after));
  return open && live_while_held == 1 && live_after == 0 ? 0 : 1;
}
