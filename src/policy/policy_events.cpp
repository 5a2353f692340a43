// policy_events: event text, the stderr sink, and the episode (suppression) logic.
#include "transient/policy/events.hpp"

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
    case policy_event_kind::warning: return "warning";
    case policy_event_kind::stale_shed: return "stale_shed";
    case policy_event_kind::stale_shed_ended: return "stale_shed_ended";
  }
  return "unknown";
}

namespace {

// Seconds with one decimal; milliseconds when that would read "0.0 s" (a recovery at a
// descriptor limit takes a fraction of a millisecond, and "0.0 s" says nothing).
std::string duration_text(std::chrono::nanoseconds d) {
  char buffer[32];
  const double seconds = std::chrono::duration<double>(d).count();
  const double ms = seconds * 1000.0;
  // Cannot fail or truncate: a double with one decimal fits in 32 characters.
  if (seconds >= 0.05) {
    static_cast<void>(std::snprintf(buffer, sizeof buffer, "%.1f s", seconds));
  } else if (ms >= 9.95) {
    static_cast<void>(std::snprintf(buffer, sizeof buffer, "%.0f ms", ms));
  } else {
    static_cast<void>(std::snprintf(buffer, sizeof buffer, "%.1f ms", ms));
  }
  return buffer;
}

std::string count_text(std::uint64_t n, std::string_view one, std::string_view many) {
  return std::to_string(n) + " " + std::string(n == 1 ? one : many);
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

// "97 failures, 96 flaps" (the flaps only when there were some).
std::string failures_text(const policy_event& e) {
  std::string text = count_text(e.failures, "failure", "failures");
  if (e.flaps != 0) {
    text += ", " + count_text(e.flaps, "flap", "flaps");
  }
  return text;
}

}  // namespace

std::string format(const policy_event& e) {
  std::string line = "transient: ";
  if (!e.source.empty()) {
    line += e.source;
    line += ": ";
  }
  switch (e.kind) {
    case policy_event_kind::degraded:
      line += "accept degraded: " + error_text(e) + "; " + load_text(e) + "; backing off";
      break;
    case policy_event_kind::still_degraded:
      line += "accept still degraded after " + duration_text(e.duration) + ": " + error_text(e) + "; " +
              failures_text(e) + " since the last line; " + load_text(e);
      break;
    case policy_event_kind::recovered:
      line += "accept recovered after " + duration_text(e.duration) + " (" + failures_text(e) + "); " + load_text(e);
      break;
    case policy_event_kind::stopped:
      if (e.error) {
        line += "accept stopped: " + std::string(to_string(e.cause)) + " (" + e.error.message() + "); " + load_text(e);
      } else if (e.failures != 0) {  // the stop ends an episode that had not recovered
        line += "accept stopped cleanly while degraded for " + duration_text(e.duration) + " (" + failures_text(e) +
                "); " + load_text(e);
      } else {
        line += "accept stopped cleanly; " + load_text(e);
      }
      break;
    case policy_event_kind::diagnosis:
      line += "accept diagnosis: ";
      line += e.text;
      break;
    case policy_event_kind::warning:
      line += "warning: ";
      line += e.text;
      break;
    case policy_event_kind::stale_shed:
      line += "shedding stale connections: one waited " + duration_text(e.queue_wait) +
              " in the accept queue, above max_queue_wait " + duration_text(e.max_queue_wait) + "; " + load_text(e);
      break;
    case policy_event_kind::stale_shed_ended:
      line += "stale shedding ended after " + duration_text(e.duration) + ": " +
              count_text(e.shed, "connection", "connections") + " shed for waiting over max_queue_wait " +
              duration_text(e.max_queue_wait) + "; " + load_text(e);
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
  if (phase_ == phase::none) {
    phase_ = phase::failing;
    since_ = now;
    last_line_ = now;
    failures_ = 1;
    flaps_ = 0;
    suppressed_ = 0;
    suppressed_flaps_ = 0;
    policy_event e = base;
    e.kind = policy_event_kind::degraded;
    e.at = now;
    e.cause = cause;
    e.error = error;
    return e;
  }
  if (phase_ == phase::healthy) {  // accepting had worked again, and fails once more
    phase_ = phase::failing;
    ++flaps_;
    ++suppressed_flaps_;
  }
  ++failures_;
  ++suppressed_;
  return tick(now, base);
}

std::optional<policy_event> degradation_log::succeeded(std::chrono::steady_clock::time_point now,
                                                       const policy_event& base) noexcept {
  if (phase_ != phase::failing) {
    return std::nullopt;  // no episode, or its quiet period is already running
  }
  phase_ = phase::healthy;
  healthy_since_ = now;
  return tick(now, base);
}

std::optional<policy_event> degradation_log::tick(std::chrono::steady_clock::time_point now,
                                                  const policy_event& base) noexcept {
  if (phase_ == phase::healthy && now - healthy_since_ >= quiet_) {
    return end(now, base);
  }
  if (phase_ == phase::none || suppressed_ == 0 || interval_ <= std::chrono::nanoseconds::zero() ||
      now - last_line_ < interval_) {
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
  e.flaps = suppressed_flaps_;
  suppressed_ = 0;
  suppressed_flaps_ = 0;
  return e;
}

std::optional<policy_event> degradation_log::stopping(std::chrono::steady_clock::time_point now,
                                                      const policy_event& base) noexcept {
  if (phase_ != phase::healthy) {
    return std::nullopt;
  }
  return end(now, base);
}

std::optional<policy_event> degradation_log::end(std::chrono::steady_clock::time_point now,
                                                 const policy_event& base) noexcept {
  phase_ = phase::none;
  policy_event e = base;
  e.kind = policy_event_kind::recovered;
  e.at = now;
  e.cause = last_cause_;
  e.error = last_error_;
  e.duration = healthy_since_ - since_;  // until accepting became healthy for good
  e.failures = failures_;
  e.flaps = flaps_;
  return e;
}

}  // namespace transient
