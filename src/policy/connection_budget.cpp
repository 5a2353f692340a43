// connection_budget: the waiting protocol and the default size from RLIMIT_NOFILE.
#include "transient/policy/budget.hpp"

#include <sys/resource.h>

#include <algorithm>

#include "transient/detail/throw_error.hpp"

namespace transient {

namespace {

// The soft limit for an automatic budget whose caller gave no fd_limit.
std::uint64_t limit_for(std::uint64_t max_connections, std::uint64_t fd_limit) noexcept {
  if (max_connections != 0 || fd_limit != 0) {
    return fd_limit;
  }
  std::error_code ignored;  // default_max_connections() reports the failure
  return fd_soft_limit(ignored);
}

}  // namespace

connection_budget::connection_budget(std::uint64_t max_connections, std::uint64_t fd_limit)
    : max_(max_connections != 0 ? max_connections : default_max_connections()),
      fd_limit_(limit_for(max_connections, fd_limit)) {
  if (max_connections > max_limit) {
    detail::throw_if(std::make_error_code(std::errc::invalid_argument),
                     "connection_budget: max_connections must be at most 2^32-1 (0: automatic)");
  }
}

bool connection_budget::acquire_or_wait(permit& out) noexcept {
  std::uint64_t word = state_.load(std::memory_order_relaxed);
  for (;;) {
    const bool room = live_of(word) < max_;
    const std::uint64_t next = room ? word + 1 : word + waiter_one;
    if (state_.compare_exchange_weak(word, next, std::memory_order_acq_rel, std::memory_order_relaxed)) {
      if (room) {
        count_reservation(out);
      }
      return room;
    }
  }
}

bool connection_budget::wait_for_release(std::uint16_t seen) noexcept {
  std::uint64_t word = state_.load(std::memory_order_relaxed);
  for (;;) {
    if (generation_of(word) != seen) {
      return false;  // a descriptor was freed after the failed accept started: retry at once
    }
    if (state_.compare_exchange_weak(word, word + waiter_one, std::memory_order_acq_rel, std::memory_order_relaxed)) {
      return true;
    }
  }
}

bool connection_budget::resume_if_room(permit& out) noexcept {
  std::uint64_t word = state_.load(std::memory_order_relaxed);
  for (;;) {
    if (live_of(word) >= max_) {
      return false;
    }
    const std::uint64_t next = word + 1 - waiter_one;
    if (state_.compare_exchange_weak(word, next, std::memory_order_acq_rel, std::memory_order_relaxed)) {
      count_reservation(out);
      return true;
    }
  }
}

std::uint64_t max_connections_for(std::uint64_t soft_limit) noexcept {
  const std::uint64_t limit = std::min(soft_limit, connection_budget::max_limit);
  const std::uint64_t headroom = std::max<std::uint64_t>(32, (limit + 19) / 20);  // max(32, 5 % rounded up)
  return limit > headroom ? limit - headroom : 0;
}

std::uint64_t fd_soft_limit(std::error_code& ec) noexcept {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    ec = detail::last_error();
    return 0;
  }
  ec.clear();
  if (limit.rlim_cur == RLIM_INFINITY) {
    return connection_budget::max_limit;
  }
  return std::min<std::uint64_t>(limit.rlim_cur, connection_budget::max_limit);
}

std::uint64_t default_max_connections(std::error_code& ec) noexcept {
  const std::uint64_t soft = fd_soft_limit(ec);
  if (ec) {
    return 0;
  }
  const std::uint64_t result = max_connections_for(soft);
  if (result == 0) {
    ec = std::make_error_code(std::errc::too_many_files_open);
  }
  return result;
}

std::uint64_t default_max_connections() {
  std::error_code ec;
  const std::uint64_t result = default_max_connections(ec);
  detail::throw_if(ec, "default_max_connections: RLIMIT_NOFILE leaves no room for connections after the headroom");
  return result;
}

}  // namespace transient
