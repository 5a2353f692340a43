// One loop of the epoll server: it waits on epoll and passes each event and each timeout to
// its acceptors, which do what their policies decide (acceptor.cpp). Nothing about accepting
// is decided here.
#include <sys/epoll.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <limits>

#include "detail/server_parts.hpp"
#include "transient/detail/throw_error.hpp"

namespace transient {
namespace {

using clock = std::chrono::steady_clock;

constexpr int max_events = 64;
// How often a loop publishes its counters for metrics() and health().
constexpr auto snapshot_interval = std::chrono::milliseconds(100);

// Milliseconds until `until`, rounded up so the loop never wakes a little early and spins.
int timeout_until(clock::time_point now, clock::time_point until) {
  if (until <= now) {
    return 0;
  }
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(until - now).count();
  return static_cast<int>(std::min<std::int64_t>(ms, std::numeric_limits<int>::max()));
}

}  // namespace

void server::run_loop_guarded(loop& l) {
  try {
    run_loop(l);
  } catch (...) {
    // The acceptor that called the handler has stopped itself; stop the others of this loop.
    record_failure({stop_reason::other_error, std::make_error_code(std::errc::operation_canceled),
                    std::string(handler_threw_text())},
                   std::current_exception());
    const auto now = clock::now();
    for (acceptor& a : l.acceptors) {
      a.stop();
      try {
        a.on_time(now);  // takes the stop request
      } catch (...) {    // a stopping acceptor calls no handler
      }
    }
    publish(l, now, true);
  }
}

bool server::publish(loop& l, clock::time_point now, bool force) {
  if (!force && now - l.last_snapshot < snapshot_interval) {
    return false;
  }
  l.last_snapshot = now;
  policy_metrics metrics;
  policy_health worst;
  for (const acceptor& a : l.acceptors) {
    metrics += a.metrics();
    const policy_health h = a.health();
    if (detail::severity(h.state) > detail::severity(worst.state)) {
      worst = h;
    }
  }
  const std::lock_guard lock(l.snapshot_mutex);
  l.metrics = metrics;
  l.health = worst;
  return true;
}

void server::run_loop(loop& l) {
  std::array<epoll_event, max_events> events{};
  bool dirty = true;  // counters changed since the last snapshot
  while (!l.finished()) {
    auto now = clock::now();
    int timeout = -1;
    for (const acceptor& a : l.acceptors) {
      const int t = a.timeout_ms(now);
      timeout = t < 0 ? timeout : (timeout < 0 ? t : std::min(timeout, t));
    }
    if (dirty) {  // wake once more to publish the counters, even if nothing else happens
      const int publish_in = timeout_until(now, l.last_snapshot + snapshot_interval);
      timeout = timeout < 0 ? publish_in : std::min(timeout, publish_in);
    }
    const int n = options_.sys.epoll_wait(l.epoll.get(), events.data(), max_events, timeout);
    if (n < 0 && errno != EINTR) {
      const std::error_code ec = detail::last_error();
      record_failure({stop_reason_of(ec), ec, "epoll_wait failed: " + ec.message()});
    }
    now = clock::now();
    for (int i = 0; i < n; ++i) {
      const epoll_event& e = events[static_cast<std::size_t>(i)];
      const auto index = static_cast<std::size_t>(e.data.u64 / 2);
      if (index < l.acceptors.size()) {
        l.acceptors[index].handle(e, now);
      }
    }
    for (acceptor& a : l.acceptors) {
      a.on_time(now);
      if (a.done() && a.result().error) {
        record_failure(a.result());  // a failed listener (stall, dead listener) stops the server
      }
    }
    dirty = !publish(l, now, false) && (dirty || n > 0);
  }
  publish(l, clock::now(), true);
}

}  // namespace transient
