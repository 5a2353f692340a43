// policy_events: event text, the stderr sink, and the episode (suppression) logic.
#include "transient/policy_events.hpp"

#include <unistd.h>

#include <cstdio>

namespace transient {

std::string_view to_string(policy_event_kind kind) noexcept {
  switch (kind) {
    case policy_event_kind::degraded: return "degraded";
    case policy_event_kind::still_degraded: return "still_degraded";
    case policy_event_kind::recovered: return "recovered";
    case policy_event_kind::stopped: return "stopped";
    case policy_event_kind::diagnosis: return "diagnosis";
  }
  return "unknown";
}

namespace {

std::string seconds_text(std::chrono::nanoseconds d) {
  char buffer[32];
  // Cannot fail or truncate: a double with one decimal fits in 32 characters.
  static_cast<void>(std::snprintf(buffer, sizeof buffer, "%.1f s", std::chrono::duration<double>(d).count()));
  return buffer;
}

std::string load_text(const policy_event& e) {
  std::string text = "live " + std::to_string(e.live) + "/" + std::to_string(e.max_connections);
  if (e.fd_limit != 0) {
    text += ", fd limit " + std::to_string(e.fd_limit);
  }
  return text;
}

std::string error_text(const policy_event& e) {
  std::string text(to_string(e.cause));
  if (e.error) {
    text += " (" + e.error.message() + ")";
  }
  return text;
}

}  // namespace

std::string format(const policy_event& e) {
  std::string line = "transient: accept ";
  switch (e.kind) {
    case policy_event_kind::degraded:
      line += "degraded: " + error_text(e) + "; " + load_text(e) + "; backing off";
      break;
    case policy_event_kind::still_degraded:
      line += "still degraded after " + seconds_text(e.duration) + ": " + error_text(e) + "; " +
              std::to_string(e.failures) + " failures since the last line; " + load_text(e);
      break;
    case policy_event_kind::recovered:
      line += "recovered after " + seconds_text(e.duration) + " (" + std::to_string(e.failures) + " failures); " +
              load_text(e);
      break;
    case policy_event_kind::stopped:
      if (e.error) {
        line += "stopped: " + std::string(to_string(e.cause)) + " (" + e.error.message() + "); " + load_text(e);
      } else {
        line += "stopped cleanly; " + load_text(e);
      }
      break;
    case policy_event_kind::diagnosis:
      line += "diagnosis: ";
      line += e.text;
      break;
  }
  return line;
}

void write_to_stderr(const policy_event& event) noexcept {
  try {
    std::string line = format(event);
    line += '\n';
    // One write(2), so lines from several loops do not interleave mid-line.
    [[maybe_unused]] const ssize_t written = ::write(STDERR_FILENO, line.data(), line.size());
  } catch (...) {  // out of memory while formatting: drop the line rather than fail the loop
  }
}

std::optional<policy_event> degradation_log::failure(std::chrono::steady_clock::time_point now, condition cause,
                                                     std::error_code error, const policy_event& base) noexcept {
  last_error_ = error;
  last_cause_ = cause;
  if (!active_) {
    active_ = true;
    since_ = now;
    last_line_ = now;
    failures_ = 1;
    suppressed_ = 0;
    policy_event e = base;
    e.kind = policy_event_kind::degraded;
    e.at = now;
    e.cause = cause;
    e.error = error;
    return e;
  }
  ++failures_;
  ++suppressed_;
  return tick(now, base);
}

std::optional<policy_event> degradation_log::tick(std::chrono::steady_clock::time_point now,
                                                  const policy_event& base) noexcept {
  if (!active_ || interval_ <= std::chrono::nanoseconds::zero() || now - last_line_ < interval_) {
    return std::nullopt;
  }
  last_line_ = now;
  policy_event e = base;
  e.kind = policy_event_kind::still_degraded;
  e.at = now;
  e.cause = last_cause_;
  e.error = last_error_;
  e.duration = now - since_;
  e.failures = suppressed_;
  suppressed_ = 0;
  return e;
}

std::optional<policy_event> degradation_log::recovered(std::chrono::steady_clock::time_point now,
                                                       const policy_event& base) noexcept {
  if (!active_) {
    return std::nullopt;
  }
  active_ = false;
  policy_event e = base;
  e.kind = policy_event_kind::recovered;
  e.at = now;
  e.cause = last_cause_;
  e.error = last_error_;
  e.duration = now - since_;
  e.failures = failures_;
  return e;
}

}  // namespace transient
