// The driver kit: what every accept driver does the same way (driver_kit.hpp).
#include "transient/detail/driver_kit.hpp"

#include <fcntl.h>
#include <sys/socket.h>

#include <algorithm>
#include <functional>
#include <mutex>
#include <utility>

#include "sockets/queue_wait.hpp"
#include "transient/detail/throw_error.hpp"
#include "transient/errors/classify.hpp"
#include "transient/testing/syscalls.hpp"

namespace transient {

std::string_view to_string(stop_reason r) noexcept {
  switch (r) {
    case stop_reason::clean: return "clean";
    case stop_reason::listener_dead: return "listener_dead";
    case stop_reason::stalled: return "stalled";
    case stop_reason::programming_error: return "programming_error";
    case stop_reason::other_error: return "other_error";
  }
  return "unknown";
}

stop_reason stop_reason_of(const std::error_code& ec) noexcept {
  if (!ec) {
    return stop_reason::clean;
  }
  if (ec == condition::stalled) {
    return stop_reason::stalled;
  }
  if (ec == condition::not_listening) {
    return stop_reason::listener_dead;
  }
  if (ec == condition::programming_error || ec == condition::not_supported) {
    return stop_reason::programming_error;
  }
  return stop_reason::other_error;
}

bool spare_fd::reopen() noexcept {
  fd_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!fd_ && detail::last_error() != condition::fd_exhausted) {
    wanted_ = false;  // no /dev/null (a chroot): asking again before every accept would not help
  }
  return held();
}

bool shed_as(shed_mode mode, int fd, const std::function<void()>& refuse) {
  return shed_as(mode, fd, refuse, syscalls{});
}

bool shed_as(shed_mode mode, int fd, const std::function<void()>& refuse, const syscalls& sys) {
  if (mode == shed_mode::reset) {
    // SO_LINGER {on, 0 s}: close() sends a reset instead of a FIN.
    const linger abortive{1, 0};
    sys.setsockopt(fd, SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive);
  } else if (mode == shed_mode::respond && refuse) {
    return write_refusal(refuse);
  }
  return true;
}

bool shed(unique_fd fd, const endpoint& peer, shed_mode mode, const refusal_writer& refuse) {
  return shed(std::move(fd), peer, mode, refuse, syscalls{});
}

bool shed(unique_fd fd, const endpoint& peer, shed_mode mode, const refusal_writer& refuse, const syscalls& sys) {
  const int n = fd.get();
  const auto write = [&] { refuse(n, peer); };
  // std::ref: the std::function holds a reference, which fits in it without an allocation.
  const bool refused = shed_as(mode, n, refuse ? std::function<void()>(std::ref(write)) : nullptr, sys);
  sys.close(fd.release());
  return refused;
}

std::chrono::milliseconds queue_wait(const accept_policy& policy, accept_policy::time_point now, int fd,
                                     const syscalls& sys) noexcept {
  const std::chrono::milliseconds bound = policy.max_queue_wait();
  if (bound.count() <= 0) {
    return std::chrono::milliseconds::zero();
  }
  const auto known = policy.queue_wait_bound(now);
  if (known <= std::min(queue_wait_floor, bound)) {
    return std::chrono::ceil<std::chrono::milliseconds>(known);
  }
  std::error_code unknown;  // a failed reading is 0: never shed on it
  return detail::queue_wait_through(sys.getsockopt, fd, unknown);
}

std::chrono::milliseconds queue_wait(const accept_policy& policy, accept_policy::time_point now, int fd) noexcept {
  return queue_wait(policy, now, fd, syscalls{});
}

void check_driver_options(std::string_view driver, const accept_policy_config& policy, bool has_refuse) {
  if (policy.shed == shed_mode::respond && !has_refuse) {
    throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                            std::string(driver) + ": shed_mode::respond needs a refusal writer (refuse)");
  }
  if (policy.max_queue_wait.count() > 0 && policy.stale_shed == shed_mode::respond && !has_refuse) {
    throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                            std::string(driver) + ": stale_shed respond needs a refusal writer (refuse)");
  }
  detail::throw_if(validate(policy), std::string(driver) + ": invalid accept policy configuration");
}

accept_policy_config with_default_sink(accept_policy_config config) {
  if (!config.sink) {
    config.sink = &write_to_stderr;
  }
  return config;
}

std::string_view handler_threw_text() noexcept { return "the connection handler threw"; }

failure_context failure_context_of(std::string where, std::string listener_state,
                                   const std::error_code& last_accept_error, const connection_budget& budget,
                                   std::chrono::milliseconds stall_timeout, int listener_fd) {
  failure_context context;
  context.where = std::move(where);
  context.listener_state = std::move(listener_state);
  context.last_accept_error = last_accept_error;
  context.live = budget.live();
  context.max_connections = budget.max_connections();
  context.stall_timeout = stall_timeout;
  if (listener_fd >= 0) {
    std::error_code ec;
    const listen_queue queue = queue_of(listener_fd, ec);
    if (!ec) {
      context.queue = queue;
    }
  }
  return context;
}

namespace {

// "412 clients were waiting in the accept queue (limit 4096)", or "" if the queue is unknown.
std::string waiting_text(const failure_context& context) {
  if (!context.queue) {
    return {};
  }
  const std::uint32_t n = context.queue->length;
  return std::to_string(n) + (n == 1 ? " client was" : " clients were") + " waiting in the accept queue (limit " +
         std::to_string(context.queue->limit) + ")";
}

}  // namespace

std::string failure_text(const std::error_code& ec, const failure_context& context, const diagnosis_fds& fds) {
  if (ec == condition::stalled) {
    // One census at a time in the process: loops that stall together (they share the
    // descriptor table) may share one diagnosis_fds, whose directory descriptor is re-read from
    // its start by each census.
    static std::mutex census_mutex;
    const std::lock_guard lock(census_mutex);
    std::string text =
        diagnose({context.last_accept_error, context.live, context.max_connections, context.stall_timeout}, fds).text;
    if (context.queue) {
      text += "\n  queue:       " + waiting_text(context);
    }
    return text;
  }
  if (ec == condition::not_listening) {
    return "listener " + context.where + " stopped listening" +
           (context.listener_state.empty() ? std::string() : ": " + context.listener_state);
  }
  std::string text = "accept on " + context.where + " failed: " + ec.message() + " (" +
                     std::string(classify(operation::accept, ec).advice) + ")";
  if (context.queue) {
    text += "; " + waiting_text(context);
  }
  return text;
}

stop_info stop_info_of(accept_policy& policy, const decision& d, const failure_context& context,
                       const diagnosis_fds& fds) {
  if (d.next != step::fail) {
    return {};
  }
  std::string text = failure_text(d.error, context, fds);
  policy.attach_diagnosis(text);
  return {stop_reason_of(d.error), d.error, std::move(text)};
}

}  // namespace transient
