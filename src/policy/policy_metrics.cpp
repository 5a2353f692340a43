// policy_metrics: summing snapshots and rendering the Prometheus text format.
#include "transient/policy/events.hpp"

#include <algorithm>
#include <charconv>
#include <optional>

#include "transient/detail/throw_error.hpp"

namespace transient {

std::string_view to_string(shed_reason r) noexcept {
  switch (r) {
    case shed_reason::budget: return "budget";
    case shed_reason::peer_limit: return "peer_limit";
    case shed_reason::queue_wait: return "queue_wait";
  }
  return "unknown";
}

std::string_view to_string(pause_reason r) noexcept {
  switch (r) {
    case pause_reason::capacity: return "capacity";
    case pause_reason::backoff: return "backoff";
  }
  return "unknown";
}

void policy_metrics::record_queue_wait(std::chrono::milliseconds waited) noexcept {
  const auto* const bucket = std::lower_bound(queue_wait_bounds.begin(), queue_wait_bounds.end(), waited);
  ++queue_wait_buckets[static_cast<std::size_t>(bucket - queue_wait_bounds.begin())];
  queue_wait_sum += waited;
  ++queue_wait_count;
}

policy_metrics& policy_metrics::operator+=(const policy_metrics& other) noexcept {
  accepted += other.accepted;
  retried += other.retried;
  drains += other.drains;
  refusals_failed += other.refusals_failed;
  for (std::size_t i = 0; i < skipped.size(); ++i) {
    skipped[i] += other.skipped[i];
    failed[i] += other.failed[i];
  }
  for (std::size_t i = 0; i < shed.size(); ++i) {
    shed[i] += other.shed[i];
  }
  for (std::size_t i = 0; i < pauses.size(); ++i) {
    pauses[i] += other.pauses[i];
    paused[i] += other.paused[i];
  }
  for (std::size_t i = 0; i < queue_wait_buckets.size(); ++i) {
    queue_wait_buckets[i] += other.queue_wait_buckets[i];
  }
  queue_wait_sum += other.queue_wait_sum;
  queue_wait_count += other.queue_wait_count;
  queue_wait_measured = queue_wait_measured || other.queue_wait_measured;
  live = std::max(live, other.live);
  peak = std::max(peak, other.peak);
  max_connections = std::max(max_connections, other.max_connections);
  return *this;
}

namespace {

bool valid_prefix(std::string_view prefix) noexcept {
  if (prefix.empty()) {
    return false;
  }
  const auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':'; };
  if (!alpha(prefix.front())) {
    return false;
  }
  return std::all_of(prefix.begin(), prefix.end(), [&](char c) { return alpha(c) || (c >= '0' && c <= '9'); });
}

class writer {
 public:
  explicit writer(std::string_view prefix) : prefix_(prefix) {}

  void header(std::string_view name, std::string_view type, std::string_view help) {
    out_ += "# HELP ";
    name_line(name);
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    name_line(name);
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }

  void sample(std::string_view name, std::string_view label, std::string_view value, std::uint64_t number) {
    sample_start(name, label, value);
    char buffer[24];
    const auto result = std::to_chars(buffer, buffer + sizeof buffer, number);
    out_.append(buffer, result.ptr);
    out_ += '\n';
  }

  void seconds(std::string_view name, std::string_view label, std::string_view value, std::chrono::nanoseconds ns) {
    sample_start(name, label, value);
    append_seconds(ns);
    out_ += '\n';
  }

  void gauge(std::string_view name, double number) {
    sample_start(name, {}, {});
    char buffer[40];
    const auto result = std::to_chars(buffer, buffer + sizeof buffer, number);
    out_.append(buffer, result.ptr);
    out_ += '\n';
  }

  // A histogram bucket's line: NAME_bucket{le="SECONDS"} COUNT ("+Inf" for the last).
  void bucket(std::string_view name, std::optional<std::chrono::milliseconds> le, std::uint64_t count) {
    name_line(name);
    out_ += "_bucket{le=\"";
    if (le) {
      append_seconds(*le);
    } else {
      out_ += "+Inf";
    }
    out_ += "\"} ";
    char buffer[24];
    const auto result = std::to_chars(buffer, buffer + sizeof buffer, count);
    out_.append(buffer, result.ptr);
    out_ += '\n';
  }

  std::string take() { return std::move(out_); }

 private:
  void append_seconds(std::chrono::nanoseconds ns) {
    char buffer[40];
    const double secs = std::chrono::duration<double>(ns).count();
    const auto result = std::to_chars(buffer, buffer + sizeof buffer, secs);
    out_.append(buffer, result.ptr);
  }
  // Names without a prefix (the standard process_* ones) are written as they are.
  void name_line(std::string_view name) {
    if (!prefix_.empty()) {
      out_ += prefix_;
      out_ += '_';
    }
    out_ += name;
  }
  void sample_start(std::string_view name, std::string_view label, std::string_view value) {
    name_line(name);
    if (!label.empty()) {
      out_ += '{';
      out_ += label;
      out_ += "=\"";
      out_ += value;
      out_ += "\"}";
    }
    out_ += ' ';
  }

  std::string_view prefix_;
  std::string out_;
};

// Every condition of the fixed set, at 0 until it occurs, and any other that occurred.
template <std::size_t N>
void per_condition(writer& w, std::string_view name, std::string_view help, const policy_metrics::by_condition& counts,
                   const std::array<condition, N>& fixed) {
  w.header(name, "counter", help);
  for (const condition c : all_conditions) {
    const std::uint64_t n = counts[static_cast<std::size_t>(c)];
    if (n != 0 || std::ranges::find(fixed, c) != fixed.end()) {
      w.sample(name, "condition", to_string(c), n);
    }
  }
}

// The queue-wait histogram, by Prometheus's conventions: cumulative buckets, then _sum and _count.
void queue_wait_histogram(writer& w, const policy_metrics& m) {
  constexpr std::string_view name = "queue_wait_seconds";
  w.header(name, "histogram", "Time accepted connections waited in the accept queue.");
  std::uint64_t below = 0;
  for (std::size_t i = 0; i < queue_wait_bounds.size(); ++i) {
    below += m.queue_wait_buckets[i];
    w.bucket(name, queue_wait_bounds[i], below);
  }
  w.bucket(name, std::nullopt, m.queue_wait_count);
  w.seconds("queue_wait_seconds_sum", {}, {}, m.queue_wait_sum);
  w.sample("queue_wait_seconds_count", {}, {}, m.queue_wait_count);
}

}  // namespace

std::string to_prometheus(const policy_metrics& m, std::string_view prefix, std::error_code& ec) {
  if (!valid_prefix(prefix)) {
    ec = std::make_error_code(std::errc::invalid_argument);
    return {};
  }
  ec.clear();
  writer w(prefix);
  w.header("accepted_total", "counter", "Connections accepted and handed out with a permit.");
  w.sample("accepted_total", {}, {}, m.accepted);
  w.header("accept_retried_total", "counter", "Accepts retried at once after EINTR.");
  w.sample("accept_retried_total", {}, {}, m.retried);
  per_condition(w, "accept_skipped_total", "Pending connections that died before accept, skipped.", m.skipped,
                accept_skip_conditions);
  per_condition(w, "accept_failed_total", "Accept failures that paused or stopped the loop.", m.failed,
                accept_failure_conditions);
  w.header("shed_total", "counter", "Connections shed instead of served.");
  for (std::size_t i = 0; i < shed_reason_count; ++i) {
    w.sample("shed_total", "reason", to_string(static_cast<shed_reason>(i)), m.shed[i]);
  }
  w.header("pauses_total", "counter", "Times accepting paused.");
  for (std::size_t i = 0; i < pause_reason_count; ++i) {
    w.sample("pauses_total", "reason", to_string(static_cast<pause_reason>(i)), m.pauses[i]);
  }
  w.header("paused_seconds_total", "counter", "Time spent with accepting paused.");
  for (std::size_t i = 0; i < pause_reason_count; ++i) {
    w.seconds("paused_seconds_total", "reason", to_string(static_cast<pause_reason>(i)), m.paused[i]);
  }
  if (m.queue_wait_measured || m.queue_wait_count != 0) {
    queue_wait_histogram(w, m);
  }
  w.header("live_connections", "gauge", "Places taken in the connection budget.");
  w.sample("live_connections", {}, {}, m.live);
  w.header("peak_connections", "gauge", "Most connections open at once (accepts in flight not counted).");
  w.sample("peak_connections", {}, {}, m.peak);
  w.header("max_connections", "gauge", "Size of the connection budget.");
  w.sample("max_connections", {}, {}, m.max_connections);
  return w.take();
}

std::string to_prometheus(const policy_metrics& m, std::string_view prefix) {
  std::error_code ec;
  std::string text = to_prometheus(m, prefix, ec);
  detail::throw_if(ec, "to_prometheus: invalid metric name prefix");
  return text;
}

std::string state_to_prometheus(std::string_view state, std::string_view prefix, std::error_code& ec) {
  if (!valid_prefix(prefix) || std::ranges::find(server_states, state) == server_states.end()) {
    ec = std::make_error_code(std::errc::invalid_argument);
    return {};
  }
  ec.clear();
  writer w(prefix);
  w.header("state", "gauge", "1 for the server's state (as /healthz names it), 0 for each other state.");
  for (const std::string_view s : server_states) {
    w.sample("state", "state", s, s == state ? 1 : 0);
  }
  return w.take();
}

std::string state_to_prometheus(std::string_view state, std::string_view prefix) {
  std::error_code ec;
  std::string text = state_to_prometheus(state, prefix, ec);
  detail::throw_if(ec, "state_to_prometheus: unknown state or invalid metric name prefix");
  return text;
}

std::string to_prometheus(const process_metrics& m) {
  writer w({});
  if (m.open_fds) {
    w.header("process_open_fds", "gauge", "Number of open file descriptors.");
    w.sample("process_open_fds", {}, {}, *m.open_fds);
  }
  if (m.max_fds) {
    w.header("process_max_fds", "gauge", "Maximum number of open file descriptors (the soft RLIMIT_NOFILE).");
    w.sample("process_max_fds", {}, {}, *m.max_fds);
  }
  if (m.start_time_seconds) {
    w.header("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
    w.gauge("process_start_time_seconds", *m.start_time_seconds);
  }
  return w.take();
}

}  // namespace transient
