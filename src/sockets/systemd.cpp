// listeners_from_systemd(): socket activation (the protocol of sd_listen_fds(3)).
//
// systemd passes sockets as descriptors 3, 4, ... and describes them in the environment:
// LISTEN_PID (the process they are for: a child that inherited the environment must not take
// them), LISTEN_FDS (how many) and LISTEN_FDNAMES (colon-separated FileDescriptorName= values).
// The descriptors arrive without CLOEXEC; we set it at once so no child inherits them.
#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>

#include "sockets/verify_socket.hpp"
#include "transient/detail/throw_error.hpp"
#include "transient/errors/errors.hpp"
#include "transient/sockets/listener.hpp"

namespace transient {
namespace {

constexpr int first_passed_fd = 3;  // SD_LISTEN_FDS_START

std::optional<long> parse_number(const char* text) {
  if (text == nullptr) {
    return std::nullopt;
  }
  const std::string_view s(text);
  long value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (s.empty() || ec != std::errc{} || end != s.data() + s.size()) {
    return std::nullopt;
  }
  return value;
}

std::vector<std::string> split_names(std::string_view text) {
  std::vector<std::string> names;
  for (;;) {
    const auto colon = text.find(':');
    names.emplace_back(text.substr(0, colon));
    if (colon == std::string_view::npos) {
      return names;
    }
    text.remove_prefix(colon + 1);
  }
}

void unset_variables() noexcept {
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
}

std::error_code make_cloexec_nonblocking(int fd) noexcept {
  const int fd_flags = ::fcntl(fd, F_GETFD);
  if (fd_flags < 0 || ::fcntl(fd, F_SETFD, fd_flags | FD_CLOEXEC) != 0) {
    return detail::last_error();
  }
  const int status_flags = ::fcntl(fd, F_GETFL);
  if (status_flags < 0 || ::fcntl(fd, F_SETFL, status_flags | O_NONBLOCK) != 0) {
    return detail::last_error();
  }
  return {};
}

std::vector<systemd_listener> take_sockets(const systemd_options& options, listen_report& report) {
  const auto fail = [&](std::error_code ec, std::string message) {
    report.error = ec;
    report.message = "systemd socket activation: " + std::move(message);
    return std::vector<systemd_listener>{};
  };
  const char* pid_text = std::getenv("LISTEN_PID");
  const char* fds_text = std::getenv("LISTEN_FDS");
  if (pid_text == nullptr || fds_text == nullptr) {
    return fail(error::no_systemd_sockets, "LISTEN_PID or LISTEN_FDS is not set");
  }
  const auto pid = parse_number(pid_text);
  if (!pid || *pid <= 0) {
    return fail(std::make_error_code(std::errc::invalid_argument),
                "LISTEN_PID='" + std::string(pid_text) + "' is not a process id");
  }
  if (*pid != ::getpid()) {
    return fail(error::no_systemd_sockets, "LISTEN_PID=" + std::to_string(*pid) + " names another process (this is " +
                                               std::to_string(::getpid()) + ")");
  }
  const auto count = parse_number(fds_text);
  if (!count || *count < 0 || *count > 4096) {
    return fail(std::make_error_code(std::errc::invalid_argument),
                "LISTEN_FDS='" + std::string(fds_text) + "' is not a descriptor count");
  }
  if (*count == 0) {
    return fail(error::no_systemd_sockets, "LISTEN_FDS=0");
  }
  std::vector<std::string> names(static_cast<std::size_t>(*count), "unknown");
  if (const char* names_text = std::getenv("LISTEN_FDNAMES")) {
    auto given = split_names(names_text);
    if (given.size() != names.size()) {
      return fail(std::make_error_code(std::errc::invalid_argument),
                  "LISTEN_FDNAMES has " + std::to_string(given.size()) +
                      " names for LISTEN_FDS=" + std::to_string(*count) + " descriptors");
    }
    names = std::move(given);
  }

  // Take ownership of every passed descriptor first, so that on any failure below all of them
  // are closed rather than left open and unowned.
  std::vector<unique_fd> fds;
  for (int i = 0; i < *count; ++i) {
    fds.emplace_back(first_passed_fd + i);
  }
  std::vector<systemd_listener> result;
  for (std::size_t i = 0; i < fds.size(); ++i) {
    const int fd = fds[i].get();
    const std::string what = "descriptor " + std::to_string(fd) + " ('" + names[i] + "')";
    if (auto ec = make_cloexec_nonblocking(fd)) {
      return fail(ec, what + ": fcntl: " + ec.message());
    }
    std::error_code ec;
    listener l = listener::adopt(std::move(fds[i]), ec);
    if (ec) {
      return fail(ec, what + " is not an IPv4/IPv6 socket: " + ec.message());
    }
    if (options.verify) {
      const auto report_of_one = verify(l);
      if (report_of_one.error) {
        report.verification = report_of_one;
        return fail(report_of_one.error, what + ": " + report_of_one.message);
      }
    }
    result.push_back(systemd_listener{names[i], std::move(l)});
  }
  return result;
}

}  // namespace

std::vector<systemd_listener> listeners_from_systemd(const systemd_options& options, listen_report& report) {
  report = listen_report{};
  auto result = take_sockets(options, report);
  if (options.unset_environment) {
    unset_variables();
  }
  return result;
}

std::vector<systemd_listener> listeners_from_systemd(const systemd_options& options, std::error_code& ec) {
  listen_report report;
  auto result = listeners_from_systemd(options, report);
  ec = report.error;
  return result;
}

std::vector<systemd_listener> listeners_from_systemd(const systemd_options& options) {
  listen_report report;
  auto result = listeners_from_systemd(options, report);
  detail::throw_said_once_if(report.error, report.message);
  return result;
}

listener take_listener(std::vector<systemd_listener>& listeners, std::string_view name) noexcept {
  for (auto& entry : listeners) {
    if (entry.name == name && entry.socket.is_open()) {
      return std::move(entry.socket);
    }
  }
  return {};
}

}  // namespace transient
