// The process figures of the standard Prometheus names: descriptors open, their limit, and
// the start time (see events.hpp).
#include <unistd.h>

#include <charconv>
#include <mutex>

#include "detail/proc_file.hpp"
#include "transient/detail/throw_error.hpp"
#include "transient/diagnosis/diagnostics.hpp"
#include "transient/policy/events.hpp"

namespace transient {
namespace {

// The number after the `n`th run of spaces in `text`.
std::optional<std::uint64_t> field_after(std::string_view text, int n) {
  std::size_t at = 0;
  for (int i = 0; i < n; ++i) {
    at = text.find_first_not_of(' ', text.find(' ', at));
  }
  std::uint64_t value = 0;
  if (at == std::string_view::npos ||
      std::from_chars(text.data() + at, text.data() + text.size(), value).ec != std::errc{}) {
    return std::nullopt;
  }
  return value;
}

// starttime, in clock ticks since boot: the 22nd field of /proc/self/stat, the 20th after the
// command name (which may hold spaces and parentheses, so it is found by its last ')').
std::optional<std::uint64_t> start_ticks(std::error_code& ec) {
  const std::string stat = detail::read_whole_file("/proc/self/stat", ec);
  const std::size_t close = stat.rfind(')');
  if (ec || close == std::string::npos) {
    return std::nullopt;
  }
  return field_after(std::string_view(stat).substr(close + 1), 20);
}

// The boot time, in seconds since the Unix epoch: /proc/stat's "btime" line.
std::optional<std::uint64_t> boot_time(std::error_code& ec) {
  const std::string stat = detail::read_whole_file("/proc/stat", ec);
  const std::size_t line = stat.find("\nbtime ");
  if (ec || line == std::string::npos) {
    return std::nullopt;
  }
  return field_after(std::string_view(stat).substr(line + 1), 1);
}

std::optional<double> read_start_time(std::error_code& ec) {
  const std::optional<std::uint64_t> ticks = start_ticks(ec);
  const std::optional<std::uint64_t> boot = ec ? std::nullopt : boot_time(ec);
  if (!ec && (!ticks || !boot)) {
    ec = std::make_error_code(std::errc::bad_message);
  }
  if (ec) {
    return std::nullopt;
  }
  return static_cast<double>(*boot) + static_cast<double>(*ticks) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// The start time, read once per process (a forked child reads its own) and kept: later
// readings may find no descriptor free to open /proc with.
std::optional<double> start_time(std::error_code& ec) {
  static std::mutex mutex;
  static pid_t read_by = 0;
  static double start = 0;
  const std::lock_guard lock(mutex);
  if (read_by != ::getpid()) {
    const std::optional<double> read = read_start_time(ec);
    if (!read) {
      return std::nullopt;
    }
    read_by = ::getpid();
    start = *read;
  }
  return start;
}

}  // namespace

process_metrics read_process_metrics(const diagnosis_fds& fds, std::error_code& ec) {
  ec.clear();
  process_metrics m;
  m.open_fds = count_open_fds(fds);
  m.max_fds = current_fd_limits().soft;
  m.start_time_seconds = start_time(ec);
  return m;
}

process_metrics read_process_metrics(const diagnosis_fds& fds) {
  std::error_code ec;
  process_metrics m = read_process_metrics(fds, ec);
  detail::throw_if(ec, "read_process_metrics: cannot read the start time from /proc/self/stat and /proc/stat");
  return m;
}

}  // namespace transient
