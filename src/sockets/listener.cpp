// listener (the owner of a listening socket) and listen().
#include "transient/sockets/listener.hpp"

#include <sys/socket.h>

#include "sockets/open_socket.hpp"
#include "sockets/socket_owners.hpp"
#include "sockets/verify_socket.hpp"
#include "transient/detail/throw_error.hpp"

namespace transient {
namespace {

using steady = std::chrono::steady_clock;

bool reuse_port_is_set(int fd) noexcept {
  int value = 0;
  socklen_t length = sizeof value;
  return ::getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &value, &length) == 0 && value != 0;
}

// EADDRINUSE: who holds the address, as far as this process can see (who_listens). A holder
// that cannot be seen is named by what it may be, never left out.
std::string holders_text(const endpoint& where, std::vector<listen_entry>& holders) {
  std::error_code ec;
  for (listen_entry& entry : who_listens(where.port(), ec)) {
    if (addresses_overlap(entry.address, where)) {
      holders.push_back(std::move(entry));
    }
  }
  if (holders.empty()) {
    return "the holder cannot be seen from here: another network namespace or user, or a socket bound to port " +
           std::to_string(where.port()) + " but not listening";
  }
  std::string text;
  for (const listen_entry& entry : holders) {
    text += text.empty() ? "held by " : "; and by ";
    if (entry.owners.empty()) {
      text += "another user (uid " + std::to_string(entry.uid) + "), whose processes cannot be read from here";
    } else {
      text += detail::describe_owners(entry);
    }
    if (entry.address != where) {
      text += " on " + entry.address.to_string();
    }
  }
  return text;
}

}  // namespace

listener listener::adopt(unique_fd fd, std::error_code& ec) {
  ec.clear();
  const endpoint local = detail::local_endpoint_of(fd.get(), ec);
  if (ec) {
    return {};
  }
  const bool reuse_port = reuse_port_is_set(fd.get());
  return listener(std::move(fd), local, reuse_port);
}

std::error_code listener::shutdown_read() const noexcept {
  if (::shutdown(fd_.get(), SHUT_RD) != 0) {
    return detail::last_error();
  }
  return {};
}

unique_fd listener::release() noexcept {
  local_ = endpoint{};
  reuse_port_ = false;
  return std::move(fd_);
}

listener listen(const endpoint& where, const listen_options& options, listen_report& report) {
  const auto start = steady::now();
  report = listen_report{};
  std::string_view stage;
  unique_fd fd = detail::open_listening_socket(where, options, detail::effective_backlog(options), stage, report.error);
  if (report.error) {
    report.message = "listen on " + where.to_string() + ": " + std::string(stage) + ": " + report.error.message();
    if (report.error == std::errc::address_in_use) {
      report.message += "; " + holders_text(where, report.holders);
    }
    report.elapsed = steady::now() - start;
    return {};
  }
  endpoint local = detail::local_endpoint_of(fd.get(), report.error);
  if (report.error) {
    report.message = "listen on " + where.to_string() + ": getsockname: " + report.error.message();
    report.elapsed = steady::now() - start;
    return {};
  }
  if (options.verify) {
    report.verification = detail::verify_socket(fd.get(), where, options.reuse_port);
    if (report.verification.error) {
      report.error = report.verification.error;
      report.message = "listen on " + where.to_string() + ": " + report.verification.message;
      report.elapsed = steady::now() - start;
      return {};
    }
  }
  report.elapsed = steady::now() - start;
  return listener(std::move(fd), local, options.reuse_port);
}

listener listen(const endpoint& where, const listen_options& options, std::error_code& ec) {
  listen_report report;
  listener result = listen(where, options, report);
  ec = report.error;
  return result;
}

listener listen(const endpoint& where, const listen_options& options) {
  listen_report report;
  listener result = listen(where, options, report);
  detail::throw_said_once_if(report.error, report.message);
  return result;
}

}  // namespace transient
