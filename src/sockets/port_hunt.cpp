// listen_in_range(): port hunting that stays correct when many processes hunt at once.
//
// The bug this prevents (the report): processes hunting upward from 9000 with one
// socket each, retrying bind on the same socket, ended up two to a port. docs/design.md (measured)
// explains every rule below:
// - Two SO_REUSEADDR sockets can both bind a port while neither listens; the loser learns it
//   only from listen() (EADDRINUSE), and its socket stays bound (re-binding it: EINVAL). So
//   EADDRINUSE at bind *or* listen means "next candidate", always with a fresh socket.
//   (16 concurrent hunters saw 106 EADDRINUSE from listen and 14 from bind.)
// - SO_REUSEPORT lets any same-user process join a port: two hunters could both "win" one
//   port. Refused here.
// - TIME_WAIT entries of outgoing connections fill ip_local_port_range and block even a
//   SO_REUSEADDR bind: a range overlapping it is warned about.
// - Starting at a random candidate spreads hunters out, so they rarely collide at all.
// - EACCES (a privileged port without CAP_NET_BIND_SERVICE) says nothing about who holds the
//   port and would come from every privileged port alike: it ends the hunt at once, saying why.
#include <algorithm>
#include <charconv>
#include <random>

#include "detail/proc_file.hpp"
#include "sockets/open_socket.hpp"
#include "sockets/verify_socket.hpp"
#include "transient/detail/throw_error.hpp"
#include "transient/errors/errors.hpp"
#include "transient/sockets/listener.hpp"

namespace transient {
namespace {

using steady = std::chrono::steady_clock;

// True for an answer that means "someone else has this port": try the next one.
bool taken(const std::error_code& ec) noexcept { return ec == std::errc::address_in_use; }

// net.ipv4.ip_unprivileged_port_start: the first port a process without CAP_NET_BIND_SERVICE
// may bind; 1024 (the kernel's default) if unreadable.
unsigned unprivileged_port_start() {
  std::error_code ec;
  const std::string text = detail::read_whole_file("/proc/sys/net/ipv4/ip_unprivileged_port_start", ec);
  unsigned port = 0;
  if (ec || std::from_chars(text.data(), text.data() + text.size(), port).ec != std::errc{}) {
    return 1024;
  }
  return port;
}

// The message of a hunt ended at `candidate` by `ec` at `stage`; for EACCES, what it means.
std::string stop_message(const endpoint& candidate, std::string_view stage, const std::error_code& ec) {
  std::string text = "port hunt on " + candidate.to_string() + ": " + std::string(stage) + ": " + ec.message();
  if (ec != std::errc::permission_denied) {
    return text;
  }
  const unsigned start = unprivileged_port_start();
  if (candidate.port() < start) {
    return text + ": ports below " + std::to_string(start) +
           " are privileged (net.ipv4.ip_unprivileged_port_start) and need CAP_NET_BIND_SERVICE; hunt from " +
           std::to_string(start) + " up, or give the process that capability";
  }
  return text + " (not a privileged port: a security policy refuses it)";
}

std::uint32_t random_offset(std::uint32_t count) {
  std::random_device device;
  return std::uniform_int_distribution<std::uint32_t>(0, count - 1)(device);
}

std::string range_text(std::uint16_t first, std::uint16_t last) {
  return std::to_string(first) + "-" + std::to_string(last);
}

// "9001 (bind: Address already in use), 9002 (listen: ...)", at most `shown` entries.
std::string attempts_text(const std::vector<port_attempt>& attempts) {
  constexpr std::size_t shown = 16;
  std::string text;
  for (std::size_t i = 0; i < attempts.size() && i < shown; ++i) {
    if (!text.empty()) {
      text += ", ";
    }
    const auto& a = attempts[i];
    text += std::to_string(a.port) + " (" + std::string(a.stage) + ": " + a.error.message() + ")";
  }
  if (attempts.size() > shown) {
    text += ", and " + std::to_string(attempts.size() - shown) + " more";
  }
  return text;
}

std::string ephemeral_warning(std::uint16_t first, std::uint16_t last) {
  const auto [low, high] = detail::ephemeral_port_range();
  if (last < low || first > high) {
    return {};
  }
  return "ports " + range_text(std::max(first, low), std::min(last, high)) +
         " of the hunt overlap ip_local_port_range (" + range_text(low, high) +
         "): outgoing connections' TIME_WAIT entries can hold them; hunt outside that range";
}

}  // namespace

listener listen_in_range(const endpoint& address, std::uint16_t first_port, std::uint16_t last_port,
                         const listen_options& options, listen_report& report) {
  const auto start = steady::now();
  report = listen_report{};
  const auto finish = [&](std::error_code ec, std::string message) {
    report.error = ec;
    report.message = std::move(message);
    report.elapsed = steady::now() - start;
    return listener{};
  };
  if (first_port == 0 || first_port > last_port) {
    return finish(error::invalid_port_range,
                  "invalid port range " + range_text(first_port, last_port) + ": expected 1 <= first <= last <= 65535");
  }
  if (options.reuse_port) {
    return finish(error::reuse_port_refused,
                  "listen_in_range refuses SO_REUSEPORT: two hunters could both take one port and share it");
  }
  report.warning = ephemeral_warning(first_port, last_port);

  const std::uint32_t count = static_cast<std::uint32_t>(last_port) - first_port + 1;
  const std::uint32_t offset = random_offset(count);
  const int backlog = detail::effective_backlog(options);
  for (std::uint32_t i = 0; i < count; ++i) {
    const auto port = static_cast<std::uint16_t>(first_port + (offset + i) % count);
    const endpoint candidate = address.with_port(port);
    std::string_view stage;
    std::error_code ec;
    unique_fd fd = detail::open_listening_socket(candidate, options, backlog, stage, ec);  // fresh each time
    if (ec) {
      report.attempts.push_back(port_attempt{port, stage, ec});
      if (!taken(ec)) {
        return finish(ec, stop_message(candidate, stage, ec));
      }
      ++(stage == "bind" ? report.bind_collisions : report.listen_collisions);
      continue;
    }
    if (options.verify) {
      report.verification = detail::verify_socket(fd.get(), candidate, false);
      if (report.verification.error == error::duplicate_listener) {
        // Another socket with SO_REUSEPORT shares the port (our own socket has none, so the
        // kernel can only have let us in beside a wildcard or specific listener): next one.
        report.attempts.push_back(port_attempt{port, "verify", report.verification.error});
        ++report.verify_collisions;
        continue;
      }
      if (report.verification.error) {
        return finish(report.verification.error,
                      "port hunt on " + candidate.to_string() + ": " + report.verification.message);
      }
    }
    report.attempts.push_back(port_attempt{port, "ok", {}});
    report.elapsed = steady::now() - start;
    return listener(std::move(fd), candidate, false);
  }
  return finish(error::port_range_exhausted, "every port of " + address.address_string() + " " +
                                                 range_text(first_port, last_port) + " is taken; tried " +
                                                 attempts_text(report.attempts));
}

listener listen_in_range(const endpoint& address, std::uint16_t first_port, std::uint16_t last_port,
                         const listen_options& options, std::error_code& ec) {
  listen_report report;
  listener result = listen_in_range(address, first_port, last_port, options, report);
  ec = report.error;
  return result;
}

listener listen_in_range(const endpoint& address, std::uint16_t first_port, std::uint16_t last_port,
                         const listen_options& options) {
  listen_report report;
  listener result = listen_in_range(address, first_port, last_port, options, report);
  detail::throw_said_once_if(report.error, report.message);
  return result;
}

}  // namespace transient
