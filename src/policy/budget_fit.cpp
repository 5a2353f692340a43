// budget_fit: the budget against RLIMIT_NOFILE and the descriptors already open.
#include "transient/policy/budget.hpp"

#include <sys/resource.h>

#include <cerrno>

#include "detail/proc_file.hpp"
#include "transient/detail/throw_error.hpp"
#include "transient/diagnosis/diagnostics.hpp"

namespace transient {

budget_fit check_budget_fit(std::uint64_t max_connections) {
  budget_fit fit;
  fit.max_connections = max_connections;
  std::error_code ec;
  fit.fd_limit = fd_soft_limit(ec);
  if (ec || fit.fd_limit >= connection_budget::max_limit) {
    fit.fd_limit = ec ? 0 : fit.fd_limit;
    fit.fits = connection_budget::max_limit;  // no limit to speak of (or none known)
    return fit;
  }
  fit.open = take_fd_census().total;
  fit.fits = fit.fd_limit > fit.open ? fit.fd_limit - fit.open : 0;
  if (max_connections > fit.fits) {
    fit.warning = "the connection budget of " + std::to_string(max_connections) +
                  " is more than the descriptors left: RLIMIT_NOFILE is " + std::to_string(fit.fd_limit) + " and " +
                  std::to_string(fit.open) + " are open, so at most " + std::to_string(fit.fits) +
                  " connections fit; descriptors will run out first, and the stall watchdog may stop a server whose "
                  "clients are legitimate. Use a budget of " +
                  std::to_string(fit.fits) + (max_connections_for(fit.fd_limit) > 0 ? " (0: the automatic one)" : "") +
                  " or raise the limit to " + std::to_string(max_connections + fit.open) + " (ulimit -n)";
  }
  return fit;
}

budget_fit warn_if_budget_does_not_fit(std::uint64_t max_connections, const policy_event_sink& sink) noexcept {
  try {
    budget_fit fit = check_budget_fit(max_connections);
    if (!fit) {
      policy_event e;
      e.kind = policy_event_kind::warning;
      e.at = std::chrono::steady_clock::now();
      e.max_connections = max_connections;
      e.fd_limit = fit.fd_limit;
      e.text = fit.warning;
      if (sink) {
        sink(e);
      } else {
        write_to_stderr(e);
      }
    }
    return fit;
  } catch (...) {  // out of memory, or a failing sink: the warning is advice, never a failure
    return {};
  }
}

fd_limit_raise raise_fd_limit(std::error_code& ec) noexcept {
  ec.clear();
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    ec = std::error_code(errno, std::system_category());
    return {};
  }
  const rlim_t target = limit.rlim_max != RLIM_INFINITY ? limit.rlim_max : detail::kernel_nr_open();
  fd_limit_raise result{limit.rlim_cur, limit.rlim_cur, limit.rlim_max};
  if (target <= limit.rlim_cur) {
    return result;
  }
  limit.rlim_cur = target;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    ec = std::error_code(errno, std::system_category());
    return result;
  }
  result.after = target;
  return result;
}

fd_limit_raise raise_fd_limit() {
  std::error_code ec;
  const fd_limit_raise result = raise_fd_limit(ec);
  detail::throw_if(ec, "raise_fd_limit: cannot raise RLIMIT_NOFILE");
  return result;
}

}  // namespace transient
