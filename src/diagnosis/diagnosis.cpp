// The diagnosis: which case an exhaustion is, and the text that says what to change.
#include <algorithm>
#include <cerrno>
#include <sstream>

#include "transient/diagnosis/diagnostics.hpp"
#include "transient/errors/classify.hpp"
#include "transient/errors/errors.hpp"

namespace transient {
namespace {

constexpr std::array<std::string_view, 6> case_names{
    "backpressure (the server's own connections fill the budget)",
    "likely descriptor leak (held outside the server's connections)",
    "budget above the descriptor limit",
    "system file table full",
    "kernel socket memory exhausted",
    "unknown",
};

std::string trigger_name(const std::error_code& ec) {
  const std::string_view name = errno_name(errno_of(ec));
  return name.empty() ? ec.message() : std::string(name);
}

void write_census(std::ostream& out, const fd_census& census) {
  out << "  descriptors: ";
  bool first = true;
  // Kinds by count, most first; kinds with none are left out.
  std::vector<std::pair<std::size_t, fd_kind>> kinds;
  for (std::size_t i = 0; i < fd_kind_count; ++i) {
    if (census.by_kind[i] > 0) {
      kinds.emplace_back(census.by_kind[i], static_cast<fd_kind>(i));
    }
  }
  std::ranges::stable_sort(kinds, std::greater<>{}, &std::pair<std::size_t, fd_kind>::first);
  for (const auto& [count, kind] : kinds) {
    out << (first ? "" : ", ") << count << ' ' << to_string(kind);
    first = false;
    if (kind == fd_kind::tcp_socket && !census.tcp_states.empty()) {
      out << " (";
      for (std::size_t i = 0; i < census.tcp_states.size(); ++i) {
        out << (i == 0 ? "" : ", ") << census.tcp_states[i].second << ' ' << census.tcp_states[i].first;
      }
      out << ')';
    }
  }
  out << (first ? "none" : "") << '\n';
  if (!census.repeated_targets.empty()) {
    out << "  repeated:    ";
    for (std::size_t i = 0; i < census.repeated_targets.size(); ++i) {
      out << (i == 0 ? "" : "; ") << census.repeated_targets[i].second << " x " << census.repeated_targets[i].first;
    }
    out << '\n';
  }
}

// The kind that dominates the descriptors that are not the server's connections.
std::string held_elsewhere(const fd_census& census) {
  std::ostringstream out;
  const fd_kind kind = census.dominant_kind();
  out << census.count(kind) << " of them " << to_string(kind);
  if (!census.repeated_targets.empty()) {
    out << ", " << census.repeated_targets.front().second << " x " << census.repeated_targets.front().first;
  }
  return out.str();
}

// Descriptors the process holds that are not the server's connections.
std::size_t held_outside(const diagnosis_context& context, const fd_census& census) noexcept {
  return census.total > context.live_connections ? census.total - context.live_connections : 0;
}

bool budget_above_limit(const diagnosis_context& context, const fd_limits& limits) noexcept {
  return context.budget > 0 && limits.soft > 0 && context.budget >= limits.soft;
}

void write_budget_advice(std::ostream& out, const diagnosis_context& context, const fd_limits& limits) {
  out << "max_connections (" << context.budget << ") is not below RLIMIT_NOFILE (" << limits.soft
      << "): lower it to the limit minus a headroom for logs and files, or raise the limit";
}

std::string advice(exhaustion_case what, const diagnosis_context& context, const diagnosis& d) {
  std::ostringstream out;
  switch (what) {
    case exhaustion_case::backpressure:
      out << "the server is at its connection budget: raise max_connections together with RLIMIT_NOFILE "
             "(LimitNOFILE= under systemd), add capacity, or shed load";
      break;
    case exhaustion_case::process_leak:
      out << held_outside(context, d.census) << " descriptors are held outside the server's connections ("
          << held_elsewhere(d.census)
          << "): find the code that opens them without closing them; raising RLIMIT_NOFILE only delays this";
      if (budget_above_limit(context, d.limits)) {
        out << "; then ";  // the leak first: fixing the budget alone would not have prevented this stall
        write_budget_advice(out, context, d.limits);
      }
      break;
    case exhaustion_case::budget_too_high: write_budget_advice(out, context, d.limits); break;
    case exhaustion_case::system_table:
      out << "the system file table is full";
      if (d.system.known) {
        out << " (" << d.system.allocated << " of " << d.system.maximum << " handles)";
      }
      out << ", possibly because of another process: raise fs.file-max (sysctl) or find the process "
             "that holds them; this process holds "
          << d.census.total;
      break;
    case exhaustion_case::kernel_memory:
      out << "the kernel is short of socket memory: read /proc/net/sockstat and net.ipv4.tcp_mem; reduce "
             "buffer sizes or connections";
      break;
    case exhaustion_case::unknown:
      out << "no descriptor or memory exhaustion could be established; the last error was "
          << trigger_name(context.trigger);
      break;
  }
  return out.str();
}

}  // namespace

std::string_view to_string(exhaustion_case c) noexcept {
  const auto index = static_cast<std::size_t>(c);
  return index < case_names.size() ? case_names[index] : "unknown";
}

exhaustion_case classify_exhaustion(const diagnosis_context& context, const fd_census& census,
                                    const fd_limits& limits) noexcept {
  const std::error_code& ec = context.trigger;
  if (ec == condition::system_fd_limit) {
    return exhaustion_case::system_table;
  }
  if (ec == condition::memory_exhausted) {
    return exhaustion_case::kernel_memory;
  }
  const bool process_full = ec == condition::process_fd_limit || (limits.soft > 0 && census.total >= limits.soft);
  if (!process_full) {
    return exhaustion_case::unknown;
  }
  // A budget at or above the limit explains the exhaustion only when the connections hold most
  // of the descriptors; when most are held elsewhere, the leak is the cause to name first.
  if (budget_above_limit(context, limits) && held_outside(context, census) * 2 <= census.total) {
    return exhaustion_case::budget_too_high;
  }
  if (context.budget > 0 && context.live_connections >= context.budget) {
    return exhaustion_case::backpressure;
  }
  return exhaustion_case::process_leak;
}

diagnosis diagnose(const diagnosis_context& context, const diagnosis_fds& fds) {
  diagnosis d;
  d.census = take_fd_census(fds);
  d.limits = current_fd_limits();
  d.system = read_file_table(fds);
  d.what = classify_exhaustion(context, d.census, d.limits);

  std::ostringstream out;
  if (context.stalled_for.count() > 0) {
    out << "stalled: accept failed with " << trigger_name(context.trigger) << " for "
        << static_cast<double>(context.stalled_for.count()) / 1000.0 << " s with no accept and no release\n";
  } else {
    out << "accept failed with " << trigger_name(context.trigger) << '\n';
  }
  out << "  case:        " << to_string(d.what);
  if (d.what == exhaustion_case::process_leak && budget_above_limit(context, d.limits)) {
    out << "; also " << to_string(exhaustion_case::budget_too_high);
  }
  out << '\n'
      << "  limits:      RLIMIT_NOFILE soft " << d.limits.soft << ", hard " << d.limits.hard << "; open "
      << d.census.total << '\n'
      << "  server:      " << context.live_connections << " live connections, budget " << context.budget << '\n';
  write_census(out, d.census);
  out << "  system:      ";
  if (d.system.known) {
    out << d.system.allocated << " file handles allocated of " << d.system.maximum << " (fs.file-max)\n";
  } else {
    out << "unknown (could not read /proc/sys/fs/file-nr)\n";
  }
  out << "  census:      " << d.census.method << '\n' << "  change:      " << advice(d.what, context, d);
  d.text = out.str();
  return d;
}

}  // namespace transient
