// listeners_from_systemd(): socket activation (the protocol of sd_listen_fds(3)).
//
// systemd passes sockets as descriptors 3, 4, ... and describes them in the environment:
// LISTEN_PID (the process they are for: a child that inherited the environment must not take
// them), LISTEN_FDS (how many) and LISTEN_FDNAMES (colon-separated FileDescriptorName= values).
// The descriptors arrive without CLOEXEC; we set it at once so no child inherits them.
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <string>
#include <variant>
#include <vector>

#include "sockets/adopt_listener.hpp"
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

// Why socket activation failed: the code and the message for listen_report.
struct refusal {
  std::error_code ec;
  std::string message;
};

std::error_code invalid() { return std::make_error_code(std::errc::invalid_argument); }

// The number of descriptors passed to this process, from LISTEN_PID and LISTEN_FDS.
std::variant<long, refusal> passed_count() {
  const char* pid_text = std::getenv("LISTEN_PID");
  const char* fds_text = std::getenv("LISTEN_FDS");
  if (pid_text == nullptr || fds_text == nullptr) {
    return refusal{error::no_systemd_sockets, "LISTEN_PID or LISTEN_FDS is not set"};
  }
  const auto pid = parse_number(pid_text);
  if (!pid || *pid <= 0) {
    return refusal{invalid(), "LISTEN_PID='" + std::string(pid_text) + "' is not a process id"};
  }
  if (*pid != ::getpid()) {
    return refusal{
        error::no_systemd_sockets,
        "LISTEN_PID=" + std::to_string(*pid) + " names another process (this is " + std::to_string(::getpid()) + ")"};
  }
  const auto count = parse_number(fds_text);
  if (!count || *count < 0 || *count > 4096) {
    return refusal{invalid(), "LISTEN_FDS='" + std::string(fds_text) + "' is not a descriptor count"};
  }
  if (*count == 0) {
    return refusal{error::no_systemd_sockets, "LISTEN_FDS=0"};
  }
  return *count;
}

// The names of the `count` passed descriptors, from LISTEN_FDNAMES ("unknown" without it).
std::variant<std::vector<std::string>, refusal> passed_names(long count) {
  std::vector<std::string> names(static_cast<std::size_t>(count), "unknown");
  const char* names_text = std::getenv("LISTEN_FDNAMES");
  if (names_text == nullptr) {
    return names;
  }
  auto given = split_names(names_text);
  if (given.size() != names.size()) {
    return refusal{invalid(), "LISTEN_FDNAMES has " + std::to_string(given.size()) +
                                  " names for LISTEN_FDS=" + std::to_string(count) + " descriptors"};
  }
  return given;
}

// One passed descriptor as a listener: CLOEXEC and non-blocking, an IPv4/IPv6 socket, and
// verified if `options` say so (the verification's report goes to `report`).
std::variant<listener, refusal> adopt_passed(unique_fd fd, const std::string& name, const systemd_options& options,
                                             listen_report& report) {
  const std::string what = "descriptor " + std::to_string(fd.get()) + " ('" + name + "')";
  auto adopted = detail::adopt_listener(std::move(fd), options.verify);
  if (adopted.error) {
    if (adopted.verification.error) {
      report.verification = std::move(adopted.verification);
    }
    return refusal{adopted.error, what + adopted.message};
  }
  return std::move(adopted.socket);
}

// The passed descriptors, each owned at once, so that on any failure all of them are closed
// rather than left open and unowned.
std::vector<unique_fd> own_passed(long count) {
  std::vector<unique_fd> fds;
  for (int i = 0; i < count; ++i) {
    fds.emplace_back(first_passed_fd + i);
  }
  return fds;
}

std::vector<named_listener> refuse(listen_report& report, refusal r) {
  report.error = r.ec;
  report.message = "systemd socket activation: " + std::move(r.message);
  return {};
}

std::vector<named_listener> take_sockets(const systemd_options& options, listen_report& report) {
  const auto count = passed_count();
  if (const auto* r = std::get_if<refusal>(&count)) {
    return refuse(report, *r);
  }
  auto names = passed_names(std::get<long>(count));
  if (auto* r = std::get_if<refusal>(&names)) {
    return refuse(report, std::move(*r));
  }
  std::vector<unique_fd> fds = own_passed(std::get<long>(count));
  std::vector<named_listener> result;
  for (std::size_t i = 0; i < fds.size(); ++i) {
    const std::string& name = std::get<0>(names)[i];
    auto adopted = adopt_passed(std::move(fds[i]), name, options, report);
    if (auto* r = std::get_if<refusal>(&adopted)) {
      return refuse(report, std::move(*r));
    }
    result.push_back(named_listener{name, std::move(std::get<listener>(adopted))});
  }
  return result;
}

}  // namespace

std::vector<named_listener> listeners_from_systemd(const systemd_options& options, listen_report& report) {
  report = listen_report{};
  auto result = take_sockets(options, report);
  if (options.unset_environment) {
    unset_variables();
  }
  return result;
}

std::vector<named_listener> listeners_from_systemd(const systemd_options& options, std::error_code& ec) {
  listen_report report;
  auto result = listeners_from_systemd(options, report);
  ec = report.error;
  return result;
}

std::vector<named_listener> listeners_from_systemd(const systemd_options& options) {
  listen_report report;
  auto result = listeners_from_systemd(options, report);
  detail::throw_said_once_if(report.error, report.message);
  return result;
}

listener take_listener(std::vector<named_listener>& listeners, std::string_view name) noexcept {
  for (auto& entry : listeners) {
    if (entry.name == name && entry.socket.is_open()) {
      return std::move(entry.socket);
    }
  }
  return {};
}

}  // namespace transient
